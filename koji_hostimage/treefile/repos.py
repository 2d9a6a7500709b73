# SPDX-License-Identifier: GPL-2.0-or-later
"""A treefile's RPM repositories: resolve them, write them as a .repo file, checksum them.

The rpm-md repos named in ``repos`` are looked up in ``*.repo`` files in the top-level
treefile's directory: rpm-ostree's ``install_packages`` (rpmostree-compose-builtins.cxx)
calls ``dnf_context_set_repo_dir`` with the treefile's directory. Koji and pungi add
extra repos (baseurls or local paths) after those. Like every file a treefile names, the
``.repo`` files must resolve inside the treefile's source root (``load.confine``): a
``.repo`` symlink pointing elsewhere on the builder is refused before it is read.
"""

from __future__ import annotations

import configparser
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from koji_hostimage.errors import TreefileError
from koji_hostimage.fsutil import write_atomic

from .load import Treefile, confine, variables

_DNF_VAR_RE = re.compile(r"\$(?:\{(basearch|releasever)\}|(basearch|releasever)\b)")


@dataclass
class RepoSource:
    """One RPM repository the compose reads from, as its .repo section defines it."""

    name: str
    baseurl: str = ""  # the first baseurl, dnf variables expanded ("" for metalink/mirrorlist)
    origin: str = ""  # where it was defined: a .repo file, or "extra repo" (Koji/pungi)
    # The section's options as written (dnf expands $basearch/$releasever itself): baseurl
    # (all of them), metalink, mirrorlist, gpgcheck, gpgkey, repo_gpgcheck, ... Empty for
    # repos made from a bare URL: written as baseurl=, gpgcheck=0.
    options: dict[str, str] = field(default_factory=dict)
    expanded: dict[str, str] = field(default_factory=dict)  # options, dnf variables expanded


def resolve_repos(treefile: Treefile, extra_repos: Sequence[str] = ()) -> list[RepoSource]:
    """The treefile's ``repos`` (from ``*.repo`` files beside it) plus ``extra_repos``.

    With no ``repos`` key, every enabled repo of those files is used, as rpm-ostree does
    (rpmostree-core.cxx ``rpmostree_context_prepare``: "if we're missing "repos" then
    default to all enabled repos"); listed repos are enabled even with ``enabled=0``
    (``enable_repos``). ``extra_repos`` are baseurls or local paths as Koji and pungi pass
    them; they become ``extra-1``, ``extra-2``, ... in the order given.
    """
    defined = _read_repo_files(treefile)
    sources: list[RepoSource] = []
    if "repos" not in treefile.data:
        sources = [repo for repo in defined.values()
                   if repo.expanded.get("enabled", "1").strip().lower() not in
                   ("0", "false", "no", "off")]
    for repo_id in treefile.repos:
        if repo_id not in defined:
            known = ", ".join(sorted(defined)) or "none"
            raise TreefileError(
                treefile.path,
                "repos",
                f"repo ids defined in a *.repo file in {treefile.directory} (defined: {known})",
                repr(repo_id),
            )
        sources.append(defined[repo_id])
    for source in sources:
        if not (source.baseurl or source.expanded.get("metalink")
                or source.expanded.get("mirrorlist")):
            raise TreefileError(source.origin, f"{source.name}",
                                "a baseurl, metalink or mirrorlist", "none of them")
    for index, location in enumerate(extra_repos, start=1):
        if not location or any(ch.isspace() for ch in location) or "\0" in location:
            # It ends up on a baseurl= line of a .repo file: no room for whitespace.
            raise TreefileError(
                treefile.path, "extra repos", "a URL or path without whitespace", repr(location)
            )
        sources.append(
            RepoSource(name=f"extra-{index}", baseurl=_as_url(location), origin="extra repo")
        )
    return sources


def _read_repo_files(treefile: Treefile) -> dict[str, RepoSource]:
    substitutions = variables(treefile.basearch, treefile.data)

    def expand(value: str) -> str:
        return _DNF_VAR_RE.sub(
            lambda m: substitutions.get(m.group(1) or m.group(2), m.group(0)), value)

    defined: dict[str, RepoSource] = {}
    for repo_file in sorted(treefile.directory.glob("*.repo")):
        confine(treefile.source_root, treefile.path, "repos", repo_file.name, repo_file)
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        try:
            parser.read_string(repo_file.read_text(encoding="utf-8"), source=str(repo_file))
        except (configparser.Error, OSError, UnicodeDecodeError) as exc:
            raise TreefileError(repo_file, None, "a yum .repo (ini) file",
                                " ".join(str(exc).split())) from None
        for repo_id in parser.sections():
            if repo_id in defined:
                raise TreefileError(
                    repo_file,
                    repo_id,
                    "repo ids defined once",
                    f"also defined in {defined[repo_id].origin}",
                )
            options = {key: " ".join(value.split()) if key == "baseurl" else value.strip()
                       for key, value in parser.items(repo_id) if key not in parser.defaults()}
            expanded = {key: expand(value) for key, value in options.items()}
            # dnf reads baseurl as a list (whitespace or comma separated) and tries the
            # first first; its checksum stands for the repo.
            urls = expanded.get("baseurl", "").replace(",", " ").split()
            defined[repo_id] = RepoSource(name=repo_id, baseurl=urls[0] if urls else "",
                                          origin=str(repo_file), options=options,
                                          expanded=expanded)
    return defined


def _as_url(location: str) -> str:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location):
        return location
    return Path(location).absolute().as_uri()


def _local_path(baseurl: str) -> Path | None:
    if baseurl.startswith("file://"):
        return Path(unquote(urlparse(baseurl).path))
    if "://" not in baseurl:
        return Path(baseurl)
    return None


def write_repo_file(
    repos: Sequence[RepoSource], dest: Path, inner_path: Callable[[Path], str] | None = None
) -> None:
    """Write a yum .repo file naming ``repos`` for an engine to use.

    Repos from .repo files keep their options as written (baseurl list, metalink,
    mirrorlist, gpgcheck, gpgkey, repo_gpgcheck ...), with ``enabled=1``; repos given as a
    bare URL get ``baseurl=`` and ``gpgcheck=0``. ``inner_path`` maps local baseurl
    paths to what the engine sees (a buildroot's runner).
    """
    lines: list[str] = []
    for repo in repos:
        options = dict(repo.options) or {"baseurl": repo.baseurl, "gpgcheck": "0"}
        options.setdefault("name", repo.name)
        options["enabled"] = "1"
        if "baseurl" in options:
            expanded = (repo.expanded.get("baseurl") or options["baseurl"]).split()
            raw = options["baseurl"].split()
            options["baseurl"] = " ".join(
                _inner_url(full, inner_path) if _local_path(full) is not None else url
                for url, full in zip(raw, expanded, strict=False))
        lines.append(f"[{repo.name}]")
        order = ["name", "baseurl", "metalink", "mirrorlist", "enabled"]
        for key in [k for k in order if k in options] + [k for k in options if k not in order]:
            lines.append(f"{key}={options[key]}")
        lines.append("")
    write_atomic(Path(dest), "\n".join(lines).encode("utf-8"))


def _inner_url(url: str, inner_path: Callable[[Path], str] | None) -> str:
    local = _local_path(url)
    if local is None:
        return url
    return Path(inner_path(local) if inner_path else local.absolute()).as_uri()


def repo_metadata_checksum(baseurl: str) -> str:
    """sha256 of the repo's ``repodata/repomd.xml`` (local path, file:// or http(s) URL)."""
    local = _local_path(baseurl)
    if local is not None:
        repomd = local / "repodata" / "repomd.xml"
        try:
            return hashlib.sha256(repomd.read_bytes()).hexdigest()
        except OSError as exc:
            raise TreefileError(
                baseurl,
                "repodata/repomd.xml",
                "a readable rpm-md repository",
                f"{repomd}: {exc.strerror}",
            ) from None
    import requests  # only needed for remote repos

    url = baseurl.rstrip("/") + "/repodata/repomd.xml"
    try:
        response = requests.get(url, timeout=60)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise TreefileError(
            baseurl, "repodata/repomd.xml", "a reachable rpm-md repository", f"{url}: {exc}"
        ) from None
    return hashlib.sha256(response.content).hexdigest()


def repo_checksum(repo: RepoSource) -> str:
    """What stands for ``repo``'s content in the input hash.

    - a baseurl: the sha256 of its ``repodata/repomd.xml`` (the first baseurl, as dnf
      tries it first);
    - a metalink only: the metalink names repomd.xml's current checksums (``<file
      name="repomd.xml">``, the ones dnf checks the downloaded file against), so the
      metalink is fetched (or read, for file://) and its repomd.xml hashes are used;
    - a mirrorlist only: the repomd.xml of the first mirror it lists.

    Nothing is fetched beyond that document; an unreachable one is an error, as for a
    baseurl (a compose could not use the repo either).
    """
    if repo.baseurl:
        return repo_metadata_checksum(repo.baseurl)
    metalink = repo.expanded.get("metalink", "")
    if metalink:
        return _metalink_repomd_hash(metalink)
    mirrorlist = repo.expanded.get("mirrorlist", "")
    text = _fetch(mirrorlist, "mirrorlist").decode("utf-8", "replace")
    mirrors = [line.strip() for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    if not mirrors:
        raise TreefileError(mirrorlist, "mirrorlist", "at least one mirror URL", "none")
    return repo_metadata_checksum(mirrors[0])


def _fetch(url: str, what: str) -> bytes:
    local = _local_path(url)
    if local is not None:
        try:
            return local.read_bytes()
        except OSError as exc:
            raise TreefileError(url, what, f"a readable {what}", exc.strerror or str(exc)
                                ) from None
    import requests  # only needed for remote repos

    try:
        response = requests.get(url, timeout=60)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise TreefileError(url, what, f"a reachable {what}", str(exc)) from None
    return response.content


def _metalink_repomd_hash(url: str) -> str:
    import xml.etree.ElementTree as ET  # noqa: N817, S405 - a metalink we asked for

    try:
        root = ET.fromstring(_fetch(url, "metalink"))  # noqa: S314
    except ET.ParseError as exc:
        raise TreefileError(url, "metalink", "a metalink XML document", str(exc)) from None
    hashes = []
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "file" and element.get("name") == "repomd.xml":
            for child in element.iter():
                if child.tag.rsplit("}", 1)[-1] == "hash" and child.text:
                    hashes.append(f"{child.get('type', '')}:{child.text.strip()}")
    if not hashes:
        raise TreefileError(url, "metalink", "a metalink naming repomd.xml's checksum",
                            "no <file name=\"repomd.xml\"> hash")
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
