# SPDX-License-Identifier: GPL-2.0-or-later
"""A thin wrapper over the ``ostree`` command line.

Everything goes through a ``CommandRunner`` as argv lists (never a shell), so the same
code drives a repo on this host or inside a Koji buildroot (paths pass through
``runner.inner_path``). A failing ostree command raises ``OSTreeError`` whose message
carries ostree's own ``error: ...`` line.

Commit metadata is read with ``ostree show --raw`` (the whole commit variant, printed as
GVariant text, already converted from OSTree's big-endian canonical form) and parsed by
``parse_gvariant_text``; metadata is written with ``--add-metadata=KEY=GVARIANT-TEXT``
built by ``gvariant_text`` (both in gvariant.py). Integers in commit metadata are stored
big-endian, as rpm-ostree does (rpmostree-composeutil.cxx,
``rpmostree_composeutil_finalize_metadata`` byteswaps the metadata dict), so ``ostree show``
prints them right.

Typical use::

    repo = OSTreeRepo(path).init("bare-user")
    stats = repo.commit(tree, "example/x86_64/host", metadata={"version": "1.0"})
    info = repo.show(stats.commit)      # CommitInfo: parent, timestamp, metadata, ...
    repo.fsck()
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koji_hostimage.errors import OSTreeError
from koji_hostimage.runner import CommandResult, CommandRunner, HostRunner

from .gvariant import gvariant_text, parse_gvariant_text

log = logging.getLogger(__name__)

REPO_MODES = ("bare", "bare-user", "bare-user-only", "archive", "archive-z2")
_CHECKSUM_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class CommitInfo:
    """One commit object, decoded (``ostree show --raw``)."""

    checksum: str
    parent: str | None
    subject: str
    body: str
    timestamp: int  # seconds since the epoch, UTC
    metadata: dict[str, Any]
    root_tree: str  # dirtree checksum of /
    root_meta: str  # dirmeta checksum of /

    @property
    def version(self) -> str | None:
        value = self.metadata.get("version")
        return value if isinstance(value, str) else None

    @property
    def content_checksum(self) -> str:
        """``ostree_commit_get_content_checksum``: sha256 over the root dirtree + dirmeta.

        rpm-ostree writes this as ``ostree-content-checksum`` in compose.json; it is the
        same for two commits of identical trees, whatever their metadata.
        """
        digest = hashlib.sha256(bytes.fromhex(self.root_tree) + bytes.fromhex(self.root_meta))
        return digest.hexdigest()


@dataclass
class CommitStats:
    """What ``ostree commit --table-output`` reports."""

    commit: str
    metadata_total: int = 0
    metadata_written: int = 0
    content_total: int = 0
    content_written: int = 0
    content_bytes_written: int = 0


@dataclass
class LsEntry:
    """One line of ``ostree ls``: type is ``d``, ``-`` (file) or ``l`` (symlink)."""

    type: str
    mode: int
    uid: int
    gid: int
    size: int
    path: str
    target: str | None = None  # symlink target
    checksums: list[str] = field(default_factory=list)


class OSTreeRepo:
    """An OSTree repository at ``path``, driven through ``ostree --repo=PATH``."""

    def __init__(self, path: Path, runner: CommandRunner | None = None):
        self.path = Path(path)
        self.runner: CommandRunner = runner or HostRunner()

    def __repr__(self) -> str:
        return f"OSTreeRepo({str(self.path)!r})"

    # -- plumbing ---------------------------------------------------------------------

    def _inner(self, path: Path) -> str:
        return self.runner.inner_path(Path(path))

    def run(self, *args: str, what: str = "", log_path: Path | None = None) -> str:
        """Run ``ostree SUBCOMMAND --repo=PATH ARGS...``; return the output or raise."""
        subcommand, *rest = args
        argv = ["ostree", subcommand, f"--repo={self._inner(self.path)}", *rest]
        return _checked(self.runner.run(argv, log_path=log_path), what or f"ostree {subcommand}")

    # -- repository -------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.path / "config").is_file() and (self.path / "objects").is_dir()

    def init(self, mode: str = "bare-user", exist_ok: bool = True) -> OSTreeRepo:
        """Create the repo (``ostree init --mode=MODE``); an existing repo is kept."""
        if mode not in REPO_MODES:
            raise ValueError(f"ostree repo mode: expected one of {REPO_MODES}, got {mode!r}")
        if self.exists():
            if not exist_ok:
                raise OSTreeError(["ostree", "init"], 1, f"error: {self.path} already exists")
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        self.run("init", f"--mode={mode}")
        return self

    def mode(self) -> str:
        """The repo's ``core.mode`` (read from its config file)."""
        return self.config_get("core.mode")

    def config_get(self, key: str) -> str:
        return self.run("config", "get", key).strip()

    # -- refs and commits -------------------------------------------------------------

    def rev_parse(self, rev: str, allow_missing: bool = False) -> str | None:
        """The commit checksum ``rev`` (a ref or checksum) names; None if missing and allowed."""
        argv = ["ostree", "rev-parse", f"--repo={self._inner(self.path)}", rev]
        result = self.runner.run(argv)
        if result.returncode != 0:
            if allow_missing and ("not found" in result.output or "No such" in result.output):
                return None
            _checked(result, "ostree rev-parse")
        checksum = _last_line(result.output)
        if not _CHECKSUM_RE.match(checksum):
            raise OSTreeError(argv, 0, result.output, what="ostree rev-parse (unexpected output)")
        return checksum

    def refs(self, prefix: str | None = None) -> list[str]:
        """Local refs (full names), those starting with ``prefix`` when given."""
        names = sorted(line.strip() for line in self.run("refs").splitlines() if line.strip())
        return [name for name in names if not prefix or name.startswith(prefix)]

    def set_ref(self, ref: str, rev: str) -> None:
        """Point ``ref`` at ``rev``, creating or moving it."""
        self.run("refs", "--force", f"--create={ref}", rev)

    def delete_ref(self, ref: str) -> None:
        self.run("refs", "--delete", ref)

    def show(self, rev: str) -> CommitInfo:
        """Decode commit ``rev``: parent, subject, body, timestamp, metadata, root tree."""
        output = self.run("show", "--raw", rev)
        checksum = _first_word_after(output, "commit ") or self.rev_parse(rev) or rev
        raw = next((line for line in output.splitlines() if line.startswith("(")), None)
        if raw is None:
            raise OSTreeError(["ostree", "show", "--raw", rev], 0, output,
                              what="ostree show (no commit variant in output)")
        value = parse_gvariant_text(raw)
        metadata, parent, _related, subject, body, timestamp, root_tree, root_meta = value
        return CommitInfo(
            checksum=checksum,
            parent=_hex(parent) or None,
            subject=subject,
            body=body,
            timestamp=int(timestamp),
            metadata=dict(metadata),
            root_tree=_hex(root_tree),
            root_meta=_hex(root_meta),
        )

    def metadata(self, rev: str) -> dict[str, Any]:
        """All commit metadata of ``rev`` as Python values (strings, lists, ...)."""
        return self.show(rev).metadata

    def metadata_key(self, rev: str, key: str) -> Any | None:
        """One metadata value (``ostree show --print-metadata-key``); None if absent."""
        argv = ["ostree", "show", f"--repo={self._inner(self.path)}",
                f"--print-metadata-key={key}", rev]
        result = self.runner.run(argv)
        if result.returncode != 0:
            if "No such metadata key" in result.output:
                return None
            _checked(result, "ostree show")
        return parse_gvariant_text(_last_line(result.output))

    def log(self, rev: str, limit: int | None = None) -> list[CommitInfo]:
        """``rev`` and its ancestors present in this repo, newest first."""
        commits: list[CommitInfo] = []
        current: str | None = rev
        while current and (limit is None or len(commits) < limit):
            if commits and not self.has_commit(current):
                break  # history truncated here (pulled with --depth=0)
            info = self.show(current)
            commits.append(info)
            current = info.parent
        return commits

    def has_commit(self, checksum: str) -> bool:
        if not _CHECKSUM_RE.match(checksum):
            return self.rev_parse(checksum, allow_missing=True) is not None
        return (self.path / "objects" / checksum[:2] / f"{checksum[2:]}.commit").is_file()

    def commit(
        self,
        tree: Path,
        branch: str | None,
        *,
        subject: str = "",
        body: str = "",
        metadata: Mapping[str, Any] | None = None,
        parent: str | None = None,
        timestamp: int | None = None,
        bootable: bool = False,
        log_path: Path | None = None,
    ) -> CommitStats:
        """``ostree commit`` the directory ``tree``; ``branch`` None makes an orphan.

        ``metadata`` values are Python values encoded as GVariant text (str -> s, bool ->
        b, int -> x, list of str -> as, dict -> a{sv}, ...). ``parent`` None lets ostree
        use the branch's current commit; pass ``"none"`` for no parent.
        """
        args = ["commit", "--table-output", f"--tree=dir={self._inner(tree)}"]
        args.append(f"--branch={branch}" if branch else "--orphan")
        if subject:
            args.append(f"--subject={subject}")
        if body:
            args.append(f"--body={body}")
        for key, value in (metadata or {}).items():
            args.append(f"--add-metadata={key}={gvariant_text(value, big_endian=True)}")
        if parent:
            args.append(f"--parent={parent}")
        if timestamp is not None:
            args.append(f"--timestamp=@{int(timestamp)}")
        if bootable:
            args.append("--bootable")
        output = self.run(*args, log_path=log_path)
        return _parse_commit_table(output)

    # -- verification and transfer -----------------------------------------------------

    def fsck(self, quiet: bool = False) -> str:
        """``ostree fsck``; raises OSTreeError (with ostree's findings) on corruption."""
        return self.run("fsck", *(["--quiet"] if quiet else []))

    def pull_local(self, source: Path | OSTreeRepo, refs: Sequence[str] = (),
                   depth: int = 0) -> None:
        """``ostree pull-local SOURCE [REFS]``: copy commits (and their objects) in."""
        source_path = source.path if isinstance(source, OSTreeRepo) else Path(source)
        self.run("pull-local", f"--depth={depth}", self._inner(source_path), *refs)

    def gpg_sign(self, commit: str, key: str, gpg_homedir: Path | None = None) -> None:
        """``ostree gpg-sign COMMIT KEY``: add a detached signature to ``commit``."""
        args = [f"--gpg-homedir={self._inner(gpg_homedir)}"] if gpg_homedir else []
        self.run("gpg-sign", *args, commit, key)

    def summary_update(
        self,
        gpg_key: str | None = None,
        gpg_homedir: Path | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Regenerate the summary file (lists refs and static deltas); sign if asked."""
        args = ["summary", "--update"]
        for key, value in (metadata or {}).items():
            args.append(f"--add-metadata={key}={gvariant_text(value)}")
        if gpg_key:
            args.append(f"--gpg-sign={gpg_key}")
            if gpg_homedir:
                args.append(f"--gpg-homedir={self._inner(gpg_homedir)}")
        self.run(*args)

    # -- trees ------------------------------------------------------------------------

    def checkout(self, rev: str, dest: Path, subpath: str | None = None,
                 user_mode: bool = True) -> None:
        """Check ``rev`` (or its ``subpath``) out into ``dest`` (which must not exist)."""
        args = ["checkout"]
        if user_mode:
            args.append("--user-mode")
        if subpath:
            args.append(f"--subpath={subpath}")
        self.run(*args, rev, self._inner(dest))

    def ls(self, rev: str, path: str = "/", recursive: bool = False) -> list[LsEntry]:
        """List ``path`` in ``rev`` (``ostree ls -C``), recursively if asked."""
        args = ["ls", "-C"] + (["-R"] if recursive else []) + [rev, path]
        return [_parse_ls_line(line) for line in self.run(*args).splitlines() if line.strip()]

    def cat(self, rev: str, path: str) -> str:
        """The text of file ``path`` in ``rev``."""
        return self.run("cat", rev, path)

    # -- static deltas ----------------------------------------------------------------

    def static_delta_generate(self, to_rev: str, from_rev: str | None = None) -> str:
        """Generate the delta ``from_rev`` -> ``to_rev`` (None: from scratch); its name."""
        self.run("static-delta", "generate", f"--to={to_rev}",
                 f"--from={from_rev}" if from_rev else "--empty")
        to_commit = self._checksum(to_rev)
        return f"{self._checksum(from_rev)}-{to_commit}" if from_rev else to_commit

    def _checksum(self, rev: str) -> str:
        """``rev`` itself when it already is a checksum, else what it names."""
        return rev if _CHECKSUM_RE.match(rev) else str(self.rev_parse(rev))

    def static_delta_list(self) -> list[str]:
        """Delta names: ``TO`` (from scratch) or ``FROM-TO`` (commit checksums)."""
        lines = self.run("static-delta", "list").splitlines()
        return sorted(
            line.strip() for line in lines
            if line.strip() and not line.startswith("(No static deltas)")
        )


# -- helpers --------------------------------------------------------------------------


def _checked(result: CommandResult, what: str) -> str:
    if result.returncode != 0:
        raise OSTreeError(result.argv, result.returncode, result.output, what=what)
    return result.output


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _first_word_after(text: str, prefix: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(prefix):
            word = line[len(prefix):].strip()
            if _CHECKSUM_RE.match(word):
                return word
    return None


def _hex(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return bytes(value or []).hex()


_TABLE_KEYS = {
    "Metadata Total": "metadata_total",
    "Metadata Written": "metadata_written",
    "Content Total": "content_total",
    "Content Written": "content_written",
    "Content Bytes Written": "content_bytes_written",
}


def _parse_commit_table(output: str) -> CommitStats:
    fields: dict[str, int] = {}
    commit = None
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Commit":
            commit = value
        elif key in _TABLE_KEYS and value.isdigit():
            fields[_TABLE_KEYS[key]] = int(value)
    if not commit or not _CHECKSUM_RE.match(commit):
        raise OSTreeError(["ostree", "commit"], 0, output, what="ostree commit (no checksum)")
    return CommitStats(commit=commit, **fields)


_LS_RE = re.compile(
    r"^(?P<type>[-dl])(?P<mode>[0-7]+)\s+(?P<uid>\d+)\s+(?P<gid>\d+)\s+(?P<size>\d+)\s+"
    r"(?P<sums>(?:[0-9a-f]{64}\s+)*)(?P<path>/.*?)(?: -> (?P<target>.*))?$"
)


def _parse_ls_line(line: str) -> LsEntry:
    match = _LS_RE.match(line)
    if not match:
        raise OSTreeError(["ostree", "ls"], 0, line, what="ostree ls (unexpected line)")
    return LsEntry(
        type=match["type"],
        mode=int(match["mode"], 8),
        uid=int(match["uid"]),
        gid=int(match["gid"]),
        size=int(match["size"]),
        path=match["path"],
        target=match["target"],
        checksums=match["sums"].split(),
    )
