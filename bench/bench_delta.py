#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Bytes on the wire for an update between consecutive builds (DESIGN section 9).

Target: an update from v1 to v2 transfers at most 1.2x the compressed size (gzip -6) of
the files that changed, median over the pulls (issue 15 keeps it there; DESIGN section
9 allows 1.5x).

For each scenario: build example content v1 and v2 (v2 upgrades greeter and
host-release and a ``payload`` package of a few MB), build host image v1, then v2 with a
static delta from v1 (the export drops a delta larger than the changed objects); serve
v2's archive with HostImageServer behind a counting TCP proxy; then nodes holding v1
(bare-user repos, `pull-local` from v1's repo) pull v2: "default pull" (`ostree pull`,
which takes the delta when the summary lists one) and "objects only"
(``--disable-static-deltas``). Counted: every byte the proxy carried from the server to
the client (HTTP headers included) and the requests the server answered, over PULLS
fresh nodes per mode (median, min, max: see PULLS for why it varies). Baseline,
measured in the same run: the gzip -6 size of every regular file of v2 that is new or
differs from v1 (``ostree diff``).

    python3 bench/bench_delta.py [--scenario edited|rewritten|both] [--size-mb N]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from koji_hostimage.compose.base import host_arch  # noqa: E402
from koji_hostimage.example.content import UPDATE_OVERRIDES, ExtraPackage, build_example_content
from koji_hostimage.example.roundtrip import extract_repo  # noqa: E402
from koji_hostimage.pipeline import BuildRequest, build_host_image  # noqa: E402
from koji_hostimage.serve.server import HostImageServer  # noqa: E402
from koji_hostimage.serve.sources import ArchiveTree  # noqa: E402

TARGET = 1.2  # issue 15; DESIGN section 9 allows 1.5
# ostree 2022.7 races when it takes a delta: the commit from the superblock is scanned
# while the delta part is still being applied, so some changed objects are fetched loose
# as well (cf. ostreedev/ostree#2053, #2680). Each node pull is repeated; median reported.
PULLS = 5
REF_REMOTE = "origin"
WORDS = ("host image ostree commit delta layer archive repo summary kernel module "
         "service unit config package release version update node pull serve").split()


class CountingProxy:
    """TCP proxy on 127.0.0.1 (random port) that counts the bytes in each direction."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = 0  # server -> client
        self.up = 0  # client -> server
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self.running = True
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            for src, dst, down in ((upstream, client, True), (client, upstream, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, down), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if down:
                        self.down += len(data)
                    else:
                        self.up += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def reset(self) -> None:
        with self.lock:
            self.down = self.up = 0

    def close(self) -> None:
        self.running = False
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self.threads:
            thread.join(5)
        self.acceptor.join(5)


def ostree(*args: str) -> str:
    return subprocess.run(["ostree", *args], check=True, capture_output=True,
                          text=True).stdout


def text_payload(rng: random.Random, size: int) -> list[str]:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        line += f" {rng.randint(0, 10**9)}\n"
        lines.append(line)
        total += len(line)
    return lines


def payloads(scenario: str, size_mb: float) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """File contents of the payload package in v1 and v2."""
    rng = random.Random(42)
    size = int(size_mb * 1_000_000)
    text = text_payload(rng, size)
    blob = rng.randbytes(size // 4)  # incompressible, like compressed data in a package
    if scenario == "edited":
        # an ordinary upgrade: some lines edited, a few small patches in the binary
        text2 = list(text)
        for index in rng.sample(range(len(text2)), len(text2) // 50):
            text2[index] = f"changed {rng.randint(0, 10**9)} {text2[index]}"
        blob2 = bytearray(blob)
        for _ in range(20):
            at = rng.randrange(len(blob2) - 64)
            blob2[at:at + 64] = rng.randbytes(64)
        text2_bytes, blob2_bytes = "".join(text2).encode(), bytes(blob2)
    else:
        # everything in the package replaced: the worst case for a delta
        text2_bytes = "".join(text_payload(rng, size)).encode()
        blob2_bytes = rng.randbytes(size // 4)
    v1 = {"/usr/share/payload/data.txt": "".join(text).encode(),
          "/usr/lib/payload/blob.bin": blob}
    v2 = {"/usr/share/payload/data.txt": text2_bytes, "/usr/lib/payload/blob.bin": blob2_bytes}
    return v1, v2


@dataclass
class PullCount:
    wire_bytes: int
    requests: int


def pull(server: HostImageServer, proxy: CountingProxy, root: Path, v1_repo: Path, ref: str,
         use_delta: bool, attempt: int) -> PullCount:
    """One node holding v1 pulls v2; returns what went over the wire."""
    repo = root / f"client-{'delta' if use_delta else 'objects'}-{attempt}"
    repo.mkdir()
    ostree("init", f"--repo={repo}", "--mode=bare-user")
    ostree("remote", "add", f"--repo={repo}", "--no-gpg-verify", REF_REMOTE,
           f"http://127.0.0.1:{proxy.port}/")
    ostree("pull-local", f"--repo={repo}", f"--remote={REF_REMOTE}", str(v1_repo), ref)
    before = server.stats().requests
    proxy.reset()
    flags = [] if use_delta else ["--disable-static-deltas"]
    ostree("pull", f"--repo={repo}", *flags, REF_REMOTE, ref)
    return PullCount(proxy.down, server.stats().requests - before)


def changed_files_gzip(repo: Path, old: str, new: str, root: Path) -> tuple[int, int, int]:
    """(files, raw bytes, gzip -6 bytes) of the regular files of ``new`` that are new or
    differ from ``old``."""
    checkout = root / "v2-checkout"
    ostree("checkout", f"--repo={repo}", "--user-mode", new, str(checkout))
    count = raw = packed = 0
    for line in ostree("diff", f"--repo={repo}", old, new).splitlines():
        kind, _, path = line.partition(" ")
        target = checkout / path.strip().lstrip("/")
        if kind not in ("M", "A") or target.is_symlink() or not target.is_file():
            continue
        data = target.read_bytes()
        count += 1
        raw += len(data)
        packed += len(gzip.compress(data, compresslevel=6))
    return count, raw, packed


def run_scenario(scenario: str, size_mb: float, root: Path) -> bool:
    files_v1, files_v2 = payloads(scenario, size_mb)
    content_v1 = build_example_content(
        root / "content-v1", extra_specs=[ExtraPackage("payload", "1", files=files_v1)])
    content_v2 = build_example_content(
        root / "content-v2", version_overrides=UPDATE_OVERRIDES,
        extra_specs=[ExtraPackage("payload", "2", files=files_v2)])
    arch = host_arch()
    v1 = build_host_image(BuildRequest(content_v1.treefile, root / "out-v1", arch,
                                       version="1", engine="dnf"))
    assert v1.archive is not None and v1.manifest is not None
    v2 = build_host_image(BuildRequest(content_v2.treefile, root / "out-v2", arch,
                                       version="2", engine="dnf", previous=[v1.archive]))
    assert v2.archive is not None and v2.manifest is not None
    v1_repo = extract_repo(v1.archive, root / "v1-repo")
    ref = v2.manifest.ref
    with ArchiveTree(v2.archive) as tree, HostImageServer(tree, port=0) as server:
        proxy = CountingProxy(server.port)
        try:
            counts = {
                use_delta: [pull(server, proxy, root, v1_repo, ref, use_delta, attempt)
                            for attempt in range(PULLS)]
                for use_delta in (True, False)
            }
        finally:
            proxy.close()
    files, raw, baseline = changed_files_gzip(root / "client-delta-0", v1.manifest.commit,
                                              v2.manifest.commit, root)
    shipped = [d.bytes for d in v2.manifest.deltas]
    delta_note = (f"static delta in the archive {shipped[0]} bytes" if shipped else
                  "no static delta shipped (it was larger than the changed objects)")
    print(f"\nscenario {scenario}: {files} files changed, {raw} bytes, "
          f"gzip -6 {baseline} bytes (baseline); {delta_note}")
    ok = True
    for use_delta, label in ((True, "default pull"), (False, "objects only")):
        wire = sorted(c.wire_bytes for c in counts[use_delta])
        requests = sorted(c.requests for c in counts[use_delta])
        median = statistics.median(wire)
        ratio = median / baseline
        verdict = "PASS" if ratio <= TARGET else "FAIL"
        if use_delta:
            ok = verdict == "PASS"
        print(f"  {label:<18} median {int(median):>9} bytes on the wire "
              f"(min {wire[0]}, max {wire[-1]}; {requests[0]}-{requests[-1]} requests, "
              f"{PULLS} pulls): {ratio:.2f}x baseline (min {wire[0] / baseline:.2f}x, "
              f"max {wire[-1] / baseline:.2f}x) -> {verdict} (target <= {TARGET}x)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("edited", "rewritten", "both"), default="both")
    parser.add_argument("--size-mb", type=float, default=2.0,
                        help="size of the payload's text file [2]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    scenarios = ("edited", "rewritten") if args.scenario == "both" else (args.scenario,)
    ok = True
    for scenario in scenarios:
        with tempfile.TemporaryDirectory(prefix=f"bench-delta-{scenario}-") as tmp:
            ok = run_scenario(scenario, args.size_mb, Path(tmp)) and ok
    print("\noverall (default pull):", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
