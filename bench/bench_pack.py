# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark: packing the OCI content layer (tar + sha256) vs `tar -cf - REPO | sha256sum`.

DESIGN section 9: our packing, digest included, must reach at least 0.8x the throughput
of the two-process pipeline ``tar -cf - REPO | sha256sum`` measured in the same run.
For scale it also times a plain ``tarfile`` + ``hashlib`` loop.

    python3 bench/bench_pack.py [--repo REPO] [--objects N] [--rounds 3]

Without ``--repo`` it makes (once, cached under /tmp/bench-cache) an archive-mode OSTree
repo by ``ostree commit`` of generated text files (documentation-like: words from a
vocabulary, sizes from a few hundred bytes to ~200 KB; see bench/benchrepo.py).

Every variant packs the same directory (the repo), writes its tar to a file in a scratch
directory (ours must land in a file; the baseline's pipe is read by sha256sum and dropped)
and yields a sha256. Best of ``--rounds`` each, variants interleaved per round, after one
warm-up pass so all variants read from the page cache. Throughput is repo file bytes per
second; the ratio is ours / baseline. Exit status 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchrepo import CACHE, build_repo, cached_build  # noqa: E402

from koji_hostimage.image.tarwriter import plan_tree, write_tar  # noqa: E402

TARGET_RATIO = 0.8
REF = "bench/x86_64"
MTIME = 1767225600


def count_objects(repo: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(repo / "objects"))


def tree_bytes(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                files += 1
                size += os.lstat(path).st_size
    return files, size


def make_repo(cache: Path, objects: int) -> Path:
    """The cached bench repo of ``objects`` generated files (built once)."""
    final = cache / f"pack-bench-{objects}"
    return cached_build(final, lambda work: build_repo(work / "repo", objects, REF, work)) / "repo"


def pipeline_tar_sha256sum(repo: Path, scratch: Path) -> str:
    """(a) the baseline: `tar -cf - -C REPO . | sha256sum`, two processes, one pipe."""
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(repo), "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    sha = subprocess.run(["sha256sum"], stdin=tar.stdout, capture_output=True, check=True)
    tar.stdout.close()
    if tar.wait() != 0:
        raise RuntimeError("tar failed")
    return sha.stdout.split()[0].decode()


def ours(repo: Path, scratch: Path) -> str:
    """(b) koji_hostimage.image.tarwriter: plan (walk + headers), then write + hash."""
    with open(scratch / "ours.tar", "wb") as out:
        plan = plan_tree(repo, MTIME)
        return write_tar(plan, out)


class _HashingFile:
    def __init__(self, out):
        self.out = out
        self.hash = hashlib.sha256()

    def write(self, data):
        self.hash.update(data)
        return self.out.write(data)

    def tell(self):
        return self.out.tell()


def plain_tarfile(repo: Path, scratch: Path) -> str:
    """(c) for scale: tarfile + hashlib, sorted and reproducible like ours."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with open(scratch / "tarfile.tar", "wb") as out:
        sink = _HashingFile(out)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dirpath, dirnames, filenames in os.walk(repo):
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    path = os.path.join(dirpath, name)
                    arcname = os.path.relpath(path, repo)
                    tar.add(path, arcname=arcname, recursive=False, filter=normalise)
        return sink.hash.hexdigest()


def best_of(
    rounds: int, variants: dict[str, Callable[[Path, Path], str]], repo: Path, scratch: Path
) -> dict[str, float]:
    for function in variants.values():  # warm-up: page cache, imports
        function(repo, scratch)
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, function in variants.items():
            started = time.perf_counter()
            function(repo, scratch)
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="an existing repo (default: generated)")
    parser.add_argument("--objects", type=int, default=30000, help="generated repo size")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    repo = args.repo or make_repo(CACHE, args.objects)
    files, data_bytes = tree_bytes(repo)
    print(f"repo {repo}: {count_objects(repo)} objects, {files} files, "
          f"{data_bytes / 1e6:.1f} MB")
    scratch = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    try:
        # Sanity: ours is a correct tar of the repo and its digest is that of its bytes.
        digest = ours(repo, scratch)
        data = (scratch / "ours.tar").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, "digest does not match the bytes"
        with tarfile.open(scratch / "ours.tar") as check:
            assert sum(1 for m in check if m.isfile()) == files, "file count differs"
        del data

        times = best_of(
            args.rounds,
            {
                "tar | sha256sum": pipeline_tar_sha256sum,
                "koji_hostimage.image.tarwriter": ours,
                "tarfile + hashlib": plain_tarfile,
            },
            repo,
            scratch,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    baseline = times["tar | sha256sum"]
    print(f"best of {args.rounds} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}):")
    for name, seconds in times.items():
        print(f"  {name:26} {seconds:6.3f} s  {data_bytes / seconds / 1e6:7.1f} MB/s  "
              f"{baseline / seconds:5.2f}x")
    ratio = baseline / times["koji_hostimage.image.tarwriter"]
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"ratio ours / (tar | sha256sum) throughput: {ratio:.2f}x "
          f"(target >= {TARGET_RATIO}x): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
