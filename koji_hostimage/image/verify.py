# SPDX-License-Identifier: GPL-2.0-or-later
"""Checking an OCI archive's blobs against their digests, streamed from the file.

An archive's content is trusted (served to nodes, shown by ``inspect``, made the base of
a static delta by ``build --previous``) only once every blob on the path index.json ->
manifest -> config and layers hashes to the digest that names it. The JSON blobs are
small and checked when read (``OciArchive.read_blob``); the layers can be gigabytes, so
they are hashed here in fixed-size chunks read with ``pread`` into one reused buffer:
memory stays at one chunk whatever the size, and the cost is one sequential read of the
layer plus sha256 (about 0.1-0.2 s per 100 MB on current x86_64 hardware; see the
``verify_seconds`` a caller can log).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from koji_hostimage.errors import ArchiveError

CHUNK = 1 << 20


def hash_range(
    fd: int,
    offset: int,
    size: int,
    label: str,
    sink: Callable[[memoryview], object] | None = None,
) -> str:
    """The ``sha256:...`` digest of ``size`` bytes of ``fd`` from ``offset``, read in
    chunks; each chunk is also given to ``sink`` (e.g. a file's ``write``). ArchiveError
    starting with ``label`` when the file ends early."""
    hasher = hashlib.sha256()
    buffer = bytearray(min(CHUNK, max(size, 1)))
    view = memoryview(buffer)
    done = 0
    while done < size:
        want = min(len(buffer), size - done)
        got = os.preadv(fd, [view[:want]], offset + done)
        if got <= 0:
            raise ArchiveError(
                f"{label}: truncated: {size} bytes expected at byte {offset}, the file ends "
                f"at byte {offset + done}"
            )
        hasher.update(view[:got])
        if sink is not None:
            sink(view[:got])
        done += got
    return "sha256:" + hasher.hexdigest()


def mismatch(path: Path, what: str, digest: str, actual: str, offset: int, size: int
             ) -> ArchiveError:
    """The one-line error for a blob whose bytes do not hash to the digest naming it."""
    return ArchiveError(
        f"{path}: {what} blob {digest} does not match its digest: expected {digest}, got "
        f"{actual} ({size} bytes at byte {offset})"
    )


def check_range(path: Path, what: str, digest: str, fd: int, offset: int, size: int,
                sink: Callable[[memoryview], object] | None = None) -> None:
    """Raise :func:`mismatch` unless the bytes at ``offset`` hash to ``digest``."""
    if not digest.startswith("sha256:"):
        raise ArchiveError(f"{path}: {what} blob {digest}: expected a sha256: digest")
    actual = hash_range(fd, offset, size, f"{path}: {what} blob {digest}", sink)
    if actual != digest:
        raise mismatch(path, what, digest, actual, offset, size)
