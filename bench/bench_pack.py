# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark: packing the OCI content layer (tar + sha256) vs `tar | openssl dgst -sha256`.

Issue 15: our packing, digest included, must reach at least 1.0x the throughput of the
two-process pipeline ``tar -cf - -C REPO . | openssl dgst -sha256 -r`` (``BASELINE``)
measured in the same run.

Why OpenSSL and not ``sha256sum``: the true floor of packing is reading every file once
and hashing the stream. OpenSSL (like Python's hashlib, which uses it) hashes at about
1.7 GB/s with the CPU's SHA extensions, so ``tar | openssl`` is close to that floor;
coreutils ``sha256sum`` does about 250 MB/s here and makes a slow baseline. It is kept
as an extra row (``tar | sha256sum``), with a plain ``tarfile`` + ``hashlib`` loop for
scale, and ``tar | tee FILE | openssl`` shows the baseline doing what ours must also
do: write the tar to a file.

    python3 bench/bench_pack.py [--repo REPO] [--objects N] [--rounds 5]

Without ``--repo`` it makes (once, cached under /tmp/bench-cache) an archive-mode OSTree
repo by ``ostree commit`` of generated text files (documentation-like: words from a
vocabulary, sizes from a few hundred bytes to ~200 KB; see bench/benchrepo.py);
the default of 50,000 objects is the size issue 15 was measured at.

Ours is ``pack_tree`` as the OCI writer calls it: with worker processes reading the files
when the tree is big and the machine has more than one CPU (koji_hostimage/image/
tarworkers.py); the row ``... one process`` is the same code without workers, for scale.

Every variant packs the same directory (the repo) and yields a sha256. Ours and
``tarfile`` write their tar to a file in a scratch directory (ours must land in a file);
the pipelines' tar stream is read by the hashing process and dropped. The previous
round's output file is deleted before the clock starts (freeing its page cache is not
packing work). ``--rounds`` rounds, variants interleaved per round (the order rotated),
after one warm-up pass so all variants read from the page cache. The machine's load
average is printed with the results: other work on the machine skews the ratios.
Throughput is repo file bytes per second; the ratio is ours / BASELINE.

The verdict is the median over the rounds of each round's ratio (both measured in the
same round); the ratio of the best rounds is printed beside it. On the shared VM this
was written on, one variant's time for the same tree moves by 10-30% between rounds
(the VM hands memory back to its host), so the ratio of two best-of-N times mostly says
which variant had the luckiest round. Exit status 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchrepo import CACHE, build_repo, cached_build  # noqa: E402

from koji_hostimage.image.tarwriter import pack_tree  # noqa: E402

TARGET_RATIO = 1.0
BASELINE = "tar | openssl dgst -sha256"
OURS = "koji_hostimage.image.tarwriter"
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


def _pipeline(repo: Path, hasher: list[str]) -> str:
    """`tar -cf - -C REPO . | HASHER`: two processes, one pipe; the hex digest."""
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(repo), "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    sha = subprocess.run(hasher, stdin=tar.stdout, capture_output=True, check=True)
    tar.stdout.close()
    if tar.wait() != 0:
        raise RuntimeError("tar failed")
    return sha.stdout.split()[0].decode()


def pipeline_tar_openssl(repo: Path, scratch: Path) -> str:
    """(a) BASELINE: `tar -cf - -C REPO . | openssl dgst -sha256 -r`."""
    return _pipeline(repo, ["openssl", "dgst", "-sha256", "-r"])


def pipeline_tar_tee_openssl(repo: Path, scratch: Path) -> str:
    """(a'') for scale, the baseline doing what ours must also do, the tar landing in a
    file: `tar -cf - -C REPO . | tee FILE | openssl dgst -sha256 -r`."""
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(repo), "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    tee = subprocess.Popen(["tee", str(_fresh(scratch / "tee.tar"))], stdin=tar.stdout,
                           stdout=subprocess.PIPE)
    tar.stdout.close()
    assert tee.stdout is not None
    sha = subprocess.run(["openssl", "dgst", "-sha256", "-r"], stdin=tee.stdout,
                         capture_output=True, check=True)
    tee.stdout.close()
    if tar.wait() != 0 or tee.wait() != 0:
        raise RuntimeError("tar | tee failed")
    return sha.stdout.split()[0].decode()


def pipeline_tar_sha256sum(repo: Path, scratch: Path) -> str:
    """(a') the old, slower baseline: `tar -cf - -C REPO . | sha256sum`."""
    return _pipeline(repo, ["sha256sum"])


def ours(repo: Path, scratch: Path) -> str:
    """(b) koji_hostimage.image.tarwriter.pack_tree, as the OCI writer calls it."""
    with open(_fresh(scratch / "ours.tar"), "wb") as out:
        return pack_tree(repo, out, MTIME, readable=True).sha256


def ours_one_process(repo: Path, scratch: Path) -> str:
    """(b') the same without worker processes (what small trees get)."""
    with open(_fresh(scratch / "ours1.tar"), "wb") as out:
        return pack_tree(repo, out, MTIME, readable=True, workers=1).sha256


def _fresh(path: Path) -> Path:
    """``path`` with the previous round's file removed (outside the timed work)."""
    path.unlink(missing_ok=True)
    return path


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

    with open(_fresh(scratch / "tarfile.tar"), "wb") as out:
        sink = _HashingFile(out)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dirpath, dirnames, filenames in os.walk(repo):
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    path = os.path.join(dirpath, name)
                    arcname = os.path.relpath(path, repo)
                    tar.add(path, arcname=arcname, recursive=False, filter=normalise)
        return sink.hash.hexdigest()


def timed_rounds(
    rounds: int, variants: dict[str, Callable[[Path, Path], str]], repo: Path, scratch: Path
) -> dict[str, list[float]]:
    """Seconds per round for each variant (after one untimed warm-up pass)."""
    for function in variants.values():  # warm-up: page cache, imports
        function(repo, scratch)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_number in range(rounds):
        # Rotate who goes first: a variant can inherit work from the one before it (the
        # previous output's freed blocks, writeback), and that should not always hit the
        # same variant.
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            function = variants[name]
            for old in scratch.iterdir():
                old.unlink()
            started = time.perf_counter()
            function(repo, scratch)
            times[name].append(time.perf_counter() - started)
    return times


def paired_median_ratio(baseline: list[float], ours: list[float]) -> float:
    """Throughput ratio ours / baseline: the median over the rounds of
    baseline[i] / ours[i] (seconds, both measured in round i)."""
    return statistics.median(b / o for b, o in zip(baseline, ours, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="an existing repo (default: generated)")
    parser.add_argument("--objects", type=int, default=50000, help="generated repo size")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    repo = args.repo or make_repo(CACHE, args.objects)
    files, data_bytes = tree_bytes(repo)
    print(f"repo {repo}: {count_objects(repo)} objects, {files} files, "
          f"{data_bytes / 1e6:.1f} MB")
    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    try:
        # Sanity: ours is a correct tar of the repo and its digest is that of its bytes.
        digest = ours(repo, scratch)
        data = (scratch / "ours.tar").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, "digest does not match the bytes"
        with tarfile.open(scratch / "ours.tar") as check:
            assert sum(1 for m in check if m.isfile()) == files, "file count differs"
        del data

        times = timed_rounds(
            args.rounds,
            {
                BASELINE: pipeline_tar_openssl,
                OURS: ours,
                OURS + ", one process": ours_one_process,
                "tar | tee FILE | openssl dgst -sha256": pipeline_tar_tee_openssl,
                "tar | sha256sum": pipeline_tar_sha256sum,
                "tarfile + hashlib": plain_tarfile,
            },
            repo,
            scratch,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    best = {name: min(seconds) for name, seconds in times.items()}
    baseline = best[BASELINE]
    print(f"{args.rounds} rounds ({os.cpu_count()} CPUs, load average {load_before:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after); best round, and the median of the "
          f"rounds' ratios to {BASELINE}:")
    for name, seconds in best.items():
        median = paired_median_ratio(times[BASELINE], times[name])
        print(f"  {name:45} {seconds:6.3f} s  {data_bytes / seconds / 1e6:7.1f} MB/s  "
              f"best {baseline / seconds:5.2f}x  median {median:5.2f}x")
    ratio = paired_median_ratio(times[BASELINE], times[OURS])
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"ratio ours / ({BASELINE}) throughput, median of the rounds: {ratio:.2f}x "
          f"(best rounds: {baseline / best[OURS]:.2f}x; target >= {TARGET_RATIO}x): "
          f"{verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
