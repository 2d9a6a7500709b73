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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from koji_hostimage.errors import TreefileError
from koji_hostimage.fsutil import write_atomic

from .load import Treefile, confine, variables

_DNF_VAR_RE = re.compile(r"\$(?:\{(basearch|releasever)\}|(basearch|releasever)\b)")


@dataclass
class RepoSource:
    """One RPM repository the compose reads from."""

    name: str
    baseurl: str
    origin: str = ""  # where it was defined: a .repo file, or "extra repo" (Koji/pungi)


def resolve_repos(treefile: Treefile, extra_repos: Sequence[str] = ()) -> list[RepoSource]:
    """The treefile's ``repos`` (from ``*.repo`` files beside it) plus ``extra_repos``.

    ``extra_repos`` are baseurls or local paths as Koji and pungi pass them; they become
    ``extra-1``, ``extra-2``, ... in the order given.
    """
    defined = _read_repo_files(treefile) if treefile.repos else {}
    sources: list[RepoSource] = []
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
    for index, location in enumerate(extra_repos, start=1):
        if not location or any(ch.isspace() for ch in location):
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
    defined: dict[str, RepoSource] = {}
    for repo_file in sorted(treefile.directory.glob("*.repo")):
        confine(treefile.source_root, treefile.path, "repos", repo_file.name, repo_file)
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        try:
            parser.read_string(repo_file.read_text(encoding="utf-8"), source=str(repo_file))
        except (configparser.Error, OSError, UnicodeDecodeError) as exc:
            raise TreefileError(repo_file, None, "a yum .repo (ini) file", str(exc)) from None
        for repo_id in parser.sections():
            if repo_id in defined:
                raise TreefileError(
                    repo_file,
                    repo_id,
                    "repo ids defined once",
                    f"also defined in {defined[repo_id].origin}",
                )
            baseurl = parser.get(repo_id, "baseurl", fallback="").split()
            if not baseurl:
                raise TreefileError(repo_file, f"{repo_id}.baseurl", "a baseurl", "nothing")
            # dnf takes the first of several baseurls first; so do we.
            url = _DNF_VAR_RE.sub(
                lambda m: substitutions.get(m.group(1) or m.group(2), m.group(0)), baseurl[0]
            )
            defined[repo_id] = RepoSource(name=repo_id, baseurl=url, origin=str(repo_file))
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
    """Write a yum .repo file naming ``repos`` (gpgcheck=0) for an engine to use.

    ``inner_path`` maps local repo paths to what the engine sees (a buildroot's runner).
    """
    lines: list[str] = []
    for repo in repos:
        baseurl = repo.baseurl
        local = _local_path(baseurl)
        if local is not None and inner_path is not None:
            baseurl = Path(inner_path(local)).as_uri()
        lines += [
            f"[{repo.name}]",
            f"name={repo.name}",
            f"baseurl={baseurl}",
            "enabled=1",
            "gpgcheck=0",
            "",
        ]
    write_atomic(Path(dest), "\n".join(lines).encode("utf-8"))


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
