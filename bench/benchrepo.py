# SPDX-License-Identifier: GPL-2.0-or-later
"""The generated OSTree repo the benchmarks share, built once and kept in a cache.

Documentation-like text files (compressible, each one unique, sizes from a few hundred
bytes to ~200 KB), committed with ``ostree commit`` to an archive-mode repo.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CACHE = Path("/tmp/bench-cache")


def _words(rng: random.Random, count: int) -> bytes:
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 11))) for _ in range(4000)
    ]
    lines = []
    for _ in range(count // 10):
        lines.append(" ".join(rng.choice(vocabulary) for _ in range(10)))
    return ("\n".join(lines) + "\n").encode()


def generate_tree(root: Path, files: int, seed: int = 42) -> int:
    """Write ``files`` documentation-like files under ``root``/usr/share/doc; returns the
    total bytes written."""
    rng = random.Random(seed)
    corpus = _words(rng, 600_000)  # ~4 MB of text to slice files from
    total = 0
    per_dir = 100
    for i in range(files):
        directory = root / "usr/share/doc" / f"pkg{i // per_dir:04d}"
        if i % per_dir == 0:
            directory.mkdir(parents=True, exist_ok=True)
        roll = rng.random()
        if roll < 0.70:
            size = rng.randint(200, 8_000)
        elif roll < 0.95:
            size = rng.randint(8_000, 40_000)
        else:
            size = rng.randint(40_000, 200_000)
        start = rng.randint(0, len(corpus) - size - 1)
        data = b"file %d\n" % i + corpus[start : start + size]
        (directory / f"file{i:06d}.txt").write_bytes(data)
        total += len(data)
    return total


def build_repo(repo: Path, files: int, ref: str, work: Path) -> None:
    """An archive-mode repo at ``repo`` with one commit of ``files`` generated files on
    ``ref`` (each file is one object; directories add dirtree and dirmeta objects)."""
    tree = work / "tree"
    generate_tree(tree, files)
    subprocess.run(["ostree", "init", "--mode=archive", f"--repo={repo}"], check=True)
    subprocess.run(
        ["ostree", "commit", f"--repo={repo}", f"--branch={ref}", f"--tree=dir={tree}",
         "--owner-uid=0", "--owner-gid=0", "--timestamp=2026-01-01T00:00:00Z",
         "--subject=bench", "--add-metadata-string=version=1"],
        check=True, stdout=subprocess.DEVNULL,
    )
    subprocess.run(["ostree", "summary", "-u", f"--repo={repo}"], check=True)
    shutil.rmtree(tree)


def cached_build(final: Path, build: Callable[[Path], None]) -> Path:
    """``final`` as made by ``build(work)`` in a scratch directory beside it, built only
    when missing. The scratch directory is renamed to ``final`` when ``build`` returns:
    whole or not at all, so an interrupted build is redone next time."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    work.chmod(0o755)  # nginx workers run as an unprivileged user and must read the repo
    try:
        print(f"building {final} (once) ...", flush=True)
        started = time.monotonic()
        build(work)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
        print(f"  built in {time.monotonic() - started:.1f} s", flush=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final
