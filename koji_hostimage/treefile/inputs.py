# SPDX-License-Identifier: GPL-2.0-or-later
"""Compose inputs: the input hash of a treefile and its repos, and the flat copy for rpm-ostree.

``input_hash`` decides whether a compose can be skipped (the previous commit's
``rpmostree.inputhash`` equals it); ``flatten_for_rpm_ostree`` writes exactly what was
hashed for rpm-ostree to read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from koji_hostimage.errors import TreefileError
from koji_hostimage.fsutil import write_atomic

from .conditions import RESERVED_VARIABLES
from .load import CHECK_FILE_KEYS, FINALIZE_D, Treefile, relative_to
from .repos import RepoSource, repo_checksum, write_repo_file


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def input_hash(treefile: Treefile, repos: Sequence[RepoSource]) -> str:
    """sha256 over the resolved treefile, every file read and each repo (its repomd.xml
    checksum, see ``repos.repo_checksum``, and its definition: gpgcheck and the like).

    File paths enter relative to the top-level treefile's directory, so two checkouts of
    the same sources in different places hash the same.
    """
    hasher = hashlib.sha256()
    hasher.update(b"treefile\0" + canonical_json(treefile.data) + b"\0")
    for path in treefile.files:
        content = path.read_bytes()
        name = relative_to(path, treefile.directory).encode()
        hasher.update(b"file\0" + name + b"\0" + str(len(content)).encode() + b"\0" + content)
    for repo in sorted(repos, key=lambda r: r.name):
        try:
            checksum = repo_checksum(repo)
        except TreefileError as exc:
            raise TreefileError(
                treefile.path,
                "repos",
                f"repo {repo.name!r} ({repo.origin or 'given'}) to be a readable rpm-md repo",
                exc.got,
            ) from None
        hasher.update(b"repo\0" + repo.name.encode() + b"\0" + checksum.encode() + b"\0"
                      + canonical_json(repo.options) + b"\0")
    return hasher.hexdigest()


FLAT_TREEFILE_NAME = "treefile.json"
FLAT_REPO_FILE_NAME = "koji-hostimage.repo"


def flatten_for_rpm_ostree(
    treefile: Treefile,
    repos: Sequence[RepoSource],
    dest_dir: Path,
    inner_path: Callable[[Path], str] | None = None,
) -> Path:
    """Write one resolved JSON treefile and one .repo file (all ``repos``) into ``dest_dir``.

    rpm-ostree then sees exactly what we hashed, including the extra repos Koji or pungi
    gave: ``repos`` lists every repo id, and the repo file sits beside the treefile, where
    rpm-ostree looks. External files (postprocess script, add-files, check-passwd and
    check-groups files, finalize.d scripts) are copied in: rpm-ostree joins their names
    onto this directory.
    Returns the treefile's path.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for stale in dest_dir.glob("*.repo"):
        stale.unlink()
    data = json.loads(json.dumps(treefile.data))
    data["repos"] = [repo.name for repo in repos]
    # Includes, arch-includes and conditional-includes are merged already and variables
    # expanded; rpm-ostree refuses basearch/releasever among ``variables`` (reserved).
    user_vars = {k: v for k, v in data.pop("variables", {}).items()
                 if k not in RESERVED_VARIABLES}
    if user_vars:
        data["variables"] = user_vars
    finalize = treefile.externals.get(FINALIZE_D, {})
    stale = dest_dir / FINALIZE_D
    if stale.is_dir():
        shutil.rmtree(stale)
    if finalize:
        # rpm-ostree finds finalize.d/ beside the treefile (treefile_parse).
        stale.mkdir()
        for name, source in finalize.items():
            shutil.copy2(source, stale / name)  # keeps the executable bit
    script = treefile.postprocess_script
    if script is not None:
        shutil.copy2(script, dest_dir / "postprocess-script")  # keeps the executable bit
        data["postprocess-script"] = "postprocess-script"
    sources = treefile.externals.get("add-files", [])
    if sources:
        files_dir = dest_dir / "add-files"
        files_dir.mkdir(exist_ok=True)
        for index, src in enumerate(sources):
            name = f"{index}-{src.name}"
            shutil.copy2(src, files_dir / name)
            data["add-files"][index][0] = f"add-files/{name}"
    for key in CHECK_FILE_KEYS:
        source = treefile.externals.get(key)
        if source is not None:
            shutil.copy2(source, dest_dir / key)
            data[key] = {**data[key], "filename": key}
    write_repo_file(repos, dest_dir / FLAT_REPO_FILE_NAME, inner_path=inner_path)
    target = dest_dir / FLAT_TREEFILE_NAME
    write_atomic(target, json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    return target
