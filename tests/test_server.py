# SPDX-License-Identifier: GPL-2.0-or-later
"""The static OSTree web server: real ostree repos, real HTTP on 127.0.0.1, real pulls.

No stand-ins: the repos are made with the ostree CLI and pulled with the ostree CLI; the
OCI archive is a minimal OCI layout written here with tarfile (deliberately not with the
project's oci.py, so these tests check the server against the OCI layout itself).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from koji_hostimage.errors import ArchiveError
from koji_hostimage.serve.http import request_relpath
from koji_hostimage.serve.server import HostImageServer
from koji_hostimage.serve.sources import ArchiveTree, DirectoryTree

REF = "hostimage/test/x86_64"
SECRET = b"TOP-SECRET-outside-the-repo\n"
IO_TIMEOUT = 30  # seconds; bounds every socket read and subprocess in this file
PULL_TIMEOUT = 120

pytestmark = pytest.mark.skipif(shutil.which("ostree") is None, reason="ostree CLI not installed")


def ostree(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["ostree", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=PULL_TIMEOUT,
        cwd=cwd,
    )
    assert result.returncode == 0, f"ostree {args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _write_tree(root: Path, version: int) -> None:
    """A small OS-like tree: text files, a larger binary-ish file, a symlink."""
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/share/doc/pkg").mkdir(parents=True, exist_ok=True)
    for i in range(40):
        (root / f"usr/share/doc/pkg/file{i:02d}.txt").write_text(f"doc {i} v{version}\n" * (i + 1))
    (root / "usr/bin/tool").write_bytes(hashlib.sha256(b"seed").digest() * 4096)
    (root / "usr/bin/version").write_text(f"{version}\n")
    link = root / "usr/bin/tool-link"
    if not link.is_symlink():
        link.symlink_to("tool")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An archive-mode repo with two commits of REF, a static delta between them, and a
    summary; beside it a secret file that must never be served."""
    base = tmp_path_factory.mktemp("serve-src")
    repo = base / "repo"
    ostree("init", "--mode=archive", f"--repo={repo}")
    tree = base / "tree"
    commits = []
    for version in (1, 2):
        _write_tree(tree, version)
        out = ostree(
            "commit", f"--repo={repo}", f"--branch={REF}", f"--tree=dir={tree}",
            f"--subject=v{version}", f"--add-metadata-string=version={version}",
        )  # fmt: skip
        commits.append(out.strip())
    ostree(
        "static-delta", "generate", f"--repo={repo}", f"--from={commits[0]}", f"--to={commits[1]}"
    )
    ostree("summary", "-u", f"--repo={repo}")
    (base / "secret.txt").write_bytes(SECRET)
    # Symlinks planted in the served tree: three escape, one stays inside.
    (repo / "leak").symlink_to(base / "secret.txt")
    (repo / "leak-rel").symlink_to("../secret.txt")
    (repo / "objects" / "leakdir").symlink_to(base)
    (repo / "config-link").symlink_to("config")
    return {"base": base, "repo": repo, "commits": commits}


def _tar_bytes(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def make_oci_archive(path: Path, layer: bytes, layer_media_type: str | None = None) -> Path:
    """Write a minimal OCI image layout tar: oci-layout, index.json, config, manifest and
    one layer blob (plus a small base layer before it, which the server must skip)."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}"

    base_layer = _tar_bytes(lambda tar: _add_bytes(tar, "srv/repo/config", b"base layer\n"))
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": blob(base_layer),
                    "size": len(base_layer),
                },
                {
                    "mediaType": layer_media_type or "application/vnd.oci.image.layer.v1.tar",
                    "digest": blob(layer),
                    "size": len(layer),
                },
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": blob(manifest),
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": "1"},
                }
            ],
        }
    ).encode()

    def add(tar: tarfile.TarFile) -> None:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(tar, "index.json", index)
        for digest, data in sorted(blobs.items()):
            _add_bytes(tar, f"blobs/sha256/{digest}", data)

    path.write_bytes(_tar_bytes(add))
    return path


def _content_layer(repo: Path) -> bytes:
    def add(tar: tarfile.TarFile) -> None:
        _add_bytes(tar, "srv/secret.txt", SECRET)
        tar.add(repo, arcname="srv/repo", filter=_drop_planted_links)
        _add_symlink(tar, "srv/repo/leak", "/srv/secret.txt")
        _add_symlink(tar, "srv/repo/leak-rel", "../secret.txt")
        _add_symlink(tar, "srv/repo/objects/leakdir", "../..")
        _add_symlink(tar, "srv/repo/config-link", "config")
        _add_bytes(tar, "srv/hostimage.json", b"{}")

    return _tar_bytes(add)


def _drop_planted_links(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # The layer gets its own escaping links (added by name), pointing within the layer.
    return None if info.issym() else info


@pytest.fixture(scope="module")
def archive(source: dict) -> Path:
    return make_oci_archive(source["base"] / "image.oci.tar", _content_layer(source["repo"]))


@pytest.fixture(scope="module", params=["directory", "archive"])
def server(
    request: pytest.FixtureRequest, source: dict, archive: Path
) -> Iterator[HostImageServer]:
    tree = DirectoryTree(source["repo"]) if request.param == "directory" else ArchiveTree(archive)
    with tree, HostImageServer(tree, "127.0.0.1", 0) as srv:
        yield srv


def client_repo(tmp_path: Path, url: str, name: str = "client", mode: str = "archive") -> Path:
    repo = tmp_path / name
    ostree("init", f"--mode={mode}", f"--repo={repo}")
    ostree("remote", "add", f"--repo={repo}", "--no-gpg-verify", "origin", url)
    return repo


def raw_request(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes (requests here ask it to)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        for _ in range(10_000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get(
    server: HostImageServer,
    path: str,
    method: str = "GET",
    headers: dict | None = None,
    client_address: str | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on a connection of its own (from ``client_address`` when given: any
    127.x.y.z address reaches the loopback)."""
    source = (client_address, 0) if client_address else None
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=IO_TIMEOUT, source_address=source
    )
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


# -- ostree pull through the server -------------------------------------------------------


def test_pull_gets_commit_and_fsck_passes(server: HostImageServer, source: dict, tmp_path):
    repo = client_repo(tmp_path, server.url)
    before = server.stats().requests
    ostree("pull", f"--repo={repo}", "origin", REF)
    assert ostree("rev-parse", f"--repo={repo}", f"origin:{REF}").strip() == source["commits"][1]
    ostree("fsck", f"--repo={repo}")
    assert ostree("cat", f"--repo={repo}", source["commits"][1], "/usr/bin/version") == "2\n"
    assert server.stats().requests > before + 5


def test_update_through_static_delta(server: HostImageServer, source: dict, tmp_path):
    """v1 first, then v2: the summary lists the v1->v2 delta, which ostree fetches (into a
    bare-user repo, as a node would: ostree skips deltas when pulling into archive repos)."""
    repo = client_repo(tmp_path, server.url, mode="bare-user")
    v1, v2 = source["commits"]
    ostree("pull", f"--repo={repo}", "origin", f"{REF}@{v1}")
    assert ostree("rev-parse", f"--repo={repo}", f"origin:{REF}").strip() == v1
    out = ostree("pull", f"--repo={repo}", "origin", REF)
    assert "delta parts" in out, out
    assert ostree("rev-parse", f"--repo={repo}", f"origin:{REF}").strip() == v2
    ostree("fsck", f"--repo={repo}")


def test_eight_clients_pull_at_once(server: HostImageServer, source: dict, tmp_path):
    repos = [client_repo(tmp_path, server.url, f"c{i}") for i in range(8)]
    procs = [
        subprocess.Popen(
            ["ostree", "pull", f"--repo={repo}", "origin", REF],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for repo in repos
    ]
    outputs = [proc.communicate(timeout=PULL_TIMEOUT)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output.decode(errors="replace")
    for repo in repos:
        assert (
            ostree("rev-parse", f"--repo={repo}", f"origin:{REF}").strip() == source["commits"][1]
        )
    ostree("fsck", f"--repo={repos[-1]}")
    response, body = get(server, "/config")
    assert response.status == 200 and b"[core]" in body


# -- HTTP behaviour -----------------------------------------------------------------------


TRAVERSALS = [
    "/../secret.txt",
    "/objects/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2e%2e/secret.txt",
    "/objects/%2e%2e/%2e%2e/secret.txt",
    "/..%2Fsecret.txt",
    "/%2Fetc%2Fpasswd",
    "//etc/passwd",
    "/etc/passwd",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/config%00",
    "/leak",
    "/leak-rel",
    "/objects/leakdir/secret.txt",
    "http://127.0.0.1/../secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_refused(server: HostImageServer, target: str):
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    response = raw_request(server.port, request)
    assert status_of(response) in (400, 403, 404), response[:200]
    assert SECRET not in response
    assert b"root:" not in response


def test_symlink_inside_root_is_served(server: HostImageServer, source: dict):
    response, body = get(server, "/config-link")
    assert response.status == 200
    assert body == (source["repo"] / "config").read_bytes()


def test_directories_are_not_listed(server: HostImageServer):
    for path in ("/", "/objects", "/objects/", "/refs/heads"):
        response, _ = get(server, path)
        assert response.status == 404, path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_get_405_with_allow(server: HostImageServer, method: str):
    response, _ = get(server, "/config", method=method)
    assert response.status == 405
    assert {m.strip() for m in response.getheader("Allow").split(",")} == {"GET", "HEAD"}


def test_post_with_body_does_not_desync_the_connection(server: HostImageServer):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=IO_TIMEOUT)
    try:
        conn.request("POST", "/config", body=b"GET /config HTTP/1.1\r\n\r\n")
        response = conn.getresponse()
        response.read()
        assert response.status == 405
        conn.request("GET", "/config")
        follow = conn.getresponse()
        assert follow.status == 200 and b"[core]" in follow.read()
    finally:
        conn.close()


def test_head_sends_headers_without_body(server: HostImageServer, source: dict):
    size = (source["repo"] / "summary").stat().st_size
    with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(
            b"HEAD /summary HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        for _ in range(1000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_response, _, rest = data.partition(b"\r\n\r\n")
    assert head_response.startswith(b"HTTP/1.1 200")
    assert f"Content-Length: {size}".encode() in head_response
    # Had HEAD sent a body, the next bytes would be summary bytes, not the GET response.
    assert rest.startswith(b"HTTP/1.1 200")
    assert rest.endswith((source["repo"] / "config").read_bytes())


def test_range_requests(server: HostImageServer, source: dict):
    data = (source["repo"] / "summary").read_bytes()
    size = len(data)
    response, body = get(server, "/summary", headers={"Range": "bytes=0-9"})
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes 0-9/{size}"
    assert body == data[:10]
    response, body = get(server, "/summary", headers={"Range": "bytes=5-"})
    assert response.status == 206 and body == data[5:]
    response, body = get(server, "/summary", headers={"Range": "bytes=-7"})
    assert response.status == 206 and body == data[-7:]
    response, body = get(server, "/summary", headers={"Range": f"bytes=3-{size * 2}"})
    assert response.status == 206 and body == data[3:]
    response, body = get(server, "/summary", headers={"Range": f"bytes={size}-"})
    assert response.status == 416
    assert response.getheader("Content-Range") == f"bytes */{size}"
    response, body = get(server, "/summary", headers={"Range": "bytes=0-1,4-5"})
    assert response.status == 200 and body == data


def test_cache_headers(server: HostImageServer, source: dict):
    repo = source["repo"]
    commit = source["commits"][1]
    delta_file = next(p for p in (repo / "deltas").rglob("*") if p.is_file())
    immutable = [
        f"/objects/{commit[:2]}/{commit[2:]}.commit",
        "/" + delta_file.relative_to(repo).as_posix(),
    ]
    changing = ["/summary", "/config", f"/refs/heads/{REF}"]
    for path in immutable:
        response, body = get(server, path)
        assert response.status == 200, path
        assert response.getheader("Cache-Control") == "public, max-age=31536000, immutable"
        assert int(response.getheader("Content-Length")) == len(body)
    for path in changing:
        response, body = get(server, path)
        assert response.status == 200, path
        assert response.getheader("Cache-Control") == "no-cache"
        assert body == (repo / path.lstrip("/")).read_bytes()


def test_keep_alive_reuses_one_connection(server: HostImageServer, source: dict):
    before = server.stats().connections
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=IO_TIMEOUT)
    try:
        for path in ("/config", "/summary", "/nonexistent", "/config"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status in (200, 404)
    finally:
        conn.close()
    assert server.stats().connections == before + 1


def test_pipelined_requests_and_large_bodies(tmp_path: Path):
    """Requests sent back to back on one connection are answered in order, including
    bodies far larger than the socket buffer (the server resumes them as it drains)."""
    big = os.urandom(8 << 20)
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "small").write_bytes(b"small\n")
    requests = (
        b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /big HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999\r\nConnection: close\r\n\r\n"
    )
    with DirectoryTree(tmp_path) as tree, HostImageServer(tree, "127.0.0.1", 0) as server:
        data = raw_request(server.port, requests)
    responses = []
    for _ in range(3):
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        responses.append((head.split(b" ", 2)[1], data[:length]))
        data = data[length:]
    assert responses == [(b"200", big), (b"200", b"small\n"), (b"206", big[1000:2000])]
    assert data == b""


def test_malformed_requests(server: HostImageServer):
    assert status_of(raw_request(server.port, b"garbage\r\n\r\n")) == 400
    assert status_of(raw_request(server.port, b"GET /config HTTP/2.0\r\n\r\n")) == 505
    huge = b"GET /config HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert status_of(raw_request(server.port, huge)) == 431
    response, _ = get(server, "/config")  # still serving
    assert response.status == 200


def test_request_relpath():
    assert request_relpath("/objects/ab/cd.filez") == "objects/ab/cd.filez"
    assert request_relpath("/refs/heads/a%2Db?x=1") == "refs/heads/a-b"
    for bad in ("objects", "/", "/a//b", "/a/./b", "/%2e", "/a%2fb", "/a%00", "/a\x01", "/%ff"):
        assert request_relpath(bad) is None, bad


# -- lifecycle and the command ------------------------------------------------------------


def test_stop_closes_idle_connections_and_listener(source: dict):
    with DirectoryTree(source["repo"]) as tree:
        server = HostImageServer(tree, "127.0.0.1", 0).start()
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT)
        idle.sendall(b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        server.stop()
        assert idle.recv(65536) == b""  # the server closed the kept-alive connection
        idle.close()
        assert not server._thread.is_alive()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT).close()


def test_one_log_line_per_request(source: dict, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="koji_hostimage.serve.access")
    # From a client address of its own: the module's server (another test's) also logs
    # to this logger, and its timer may flush while this test runs.
    client = "127.0.0.77"
    with DirectoryTree(source["repo"]) as tree, HostImageServer(tree, "127.0.0.1", 0) as server:
        get(server, "/config", client_address=client)
        get(server, "/config", method="HEAD", client_address=client)
        get(server, "/missing", client_address=client)
        get(server, "/config", method="DELETE", client_address=client)
    size = (source["repo"] / "config").stat().st_size
    text = "\n".join(
        r.getMessage() for r in caplog.records if r.name == "koji_hostimage.serve.access"
    )
    lines = [line for line in text.splitlines() if line.startswith(client + " ")]
    assert lines == [
        f"{client} GET /config 200 {size}",
        f"{client} HEAD /config 200 0",
        f"{client} GET /missing 404 0",
        f"{client} DELETE /config 405 0",
    ]


def test_connection_cap_queues_extra_clients(source: dict):
    """With one connection slot, a second client waits in the backlog until the first leaves."""
    with (
        DirectoryTree(source["repo"]) as tree,
        HostImageServer(tree, "127.0.0.1", 0, max_connections=1) as server,
    ):
        first = socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT)
        first.sendall(b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first.recv(65536).startswith(b"HTTP/1.1 200")
        second = socket.create_connection(("127.0.0.1", server.port), timeout=0.5)
        second.sendall(b"GET /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with pytest.raises(TimeoutError):
            second.recv(65536)  # not served while the only slot is taken
        first.close()
        second.settimeout(IO_TIMEOUT)
        assert second.recv(65536).startswith(b"HTTP/1.1 200")
        second.close()


def test_idle_keep_alive_connections_time_out(source: dict):
    with (
        DirectoryTree(source["repo"]) as tree,
        HostImageServer(tree, "127.0.0.1", 0, idle_timeout=0.3) as server,
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            assert sock.recv(65536) == b""  # closed by the server, not by our timeout
        assert server.stats().requests == 1


def test_serve_command_logs_url_and_requests(archive: Path, tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "koji_hostimage.commands.main", "serve", str(archive),
         "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    try:
        first = proc.stderr.readline()
        pattern = rf"serving {re.escape(str(archive))} on http://127\.0\.0\.1:(\d+)/\n"
        match = re.fullmatch(pattern, first)
        assert match, first
        port = int(match.group(1))
        reader.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
        conn.request("GET", "/config")
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 200 and b"[core]" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=IO_TIMEOUT)
        reader.join(IO_TIMEOUT)
    assert returncode == 0
    assert f"GET /config 200 {len(body)}" in "".join(lines)


def test_serve_command_rejects_non_oci_file(tmp_path: Path):
    bogus = tmp_path / "notes.tar"
    bogus.write_text("just text\n" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "koji_hostimage.commands.main", "serve", str(bogus), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 1
    assert str(bogus) in result.stderr and "not an OCI archive" in result.stderr


# -- archive errors and layouts (tar parsing itself: tests/test_oci.py) -------------------


def test_gzip_layer_is_refused_with_a_clear_error(source: dict, tmp_path: Path):
    layer = gzip.compress(_content_layer(source["repo"]), mtime=0)
    path = make_oci_archive(
        tmp_path / "gz.oci.tar", layer, "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    with pytest.raises(ArchiveError, match="uncompressed content layer") as err:
        ArchiveTree(path)
    assert str(path) in str(err.value)
    # Same when the media type lies: the bytes are checked too.
    path = make_oci_archive(tmp_path / "gz2.oci.tar", layer)
    with pytest.raises(ArchiveError, match="uncompressed content layer"):
        ArchiveTree(path)


def test_tar_without_oci_layout_is_refused(tmp_path: Path):
    path = tmp_path / "plain.tar"
    path.write_bytes(_tar_bytes(lambda tar: _add_bytes(tar, "srv/repo/config", b"x")))
    with pytest.raises(ArchiveError, match="not an OCI archive") as err:
        ArchiveTree(path)
    assert str(path) in str(err.value)


def test_layer_without_repo_is_refused(tmp_path: Path):
    layer = _tar_bytes(lambda tar: _add_bytes(tar, "etc/hostname", b"x\n"))
    path = make_oci_archive(tmp_path / "norepo.oci.tar", layer)
    with pytest.raises(ArchiveError, match="srv/repo"):
        ArchiveTree(path)


def test_archive_tree_serves_hardlinks_and_skips_base_layer(source: dict, tmp_path: Path):
    config = (source["repo"] / "config").read_bytes()

    def add(tar: tarfile.TarFile) -> None:
        _add_bytes(tar, "srv/repo/config", config)
        info = tarfile.TarInfo("srv/repo/config-hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "srv/repo/config"
        tar.addfile(info)

    path = make_oci_archive(tmp_path / "hard.oci.tar", _tar_bytes(add))
    with ArchiveTree(path) as tree:
        for name in ("config", "config-hard"):
            resource = tree.lookup(name)
            assert resource is not None
            assert os.pread(resource.fd, resource.size, resource.offset) == config
        assert tree.lookup("missing") is None


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_archive_tree_serves_what_tarfile_extracts(tmp_path: Path, fmt: int):
    """Every tar flavour's long names, hard links (also from and to long names, and to a
    file outside the prefix) and a member replaced by a later one of the same name are
    served as tarfile reads them."""
    deep = "srv/repo/objects/" + "d" * 60 + "/" + "e" * 60  # > 100 chars with the file
    members = [
        ("srv/repo/config", b"[core]\nmode=archive\n"),
        (f"{deep}/file.filez", os.urandom(3000)),
        ("srv/repo/empty", b""),
        ("srv/repo/summary", b"old summary"),
        ("srv/repo/summary", b"new summary, written later"),
        ("srv/other", b"outside the prefix"),
    ]

    def add(tar: tarfile.TarFile) -> None:
        for name, data in members:
            _add_bytes(tar, name, data)
        links = [(f"{deep}/hard", "srv/repo/config"), ("srv/repo/hard-out", "srv/other")]
        if fmt != tarfile.USTAR_FORMAT:  # ustar has no room for a link name this long
            links.append(("srv/repo/hard", f"{deep}/file.filez"))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        add(tar)
    layer = buffer.getvalue()
    path = make_oci_archive(tmp_path / "flavour.oci.tar", layer)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        expected = {
            info.name.removeprefix("srv/repo/"): tar.extractfile(info).read()
            for info in tar.getmembers()
            if info.name.startswith("srv/repo/")
        }
    assert expected["summary"] == b"new summary, written later"
    with ArchiveTree(path) as tree:
        assert len(tree) == len(expected)
        for name, data in expected.items():
            resource = tree.lookup(name)
            assert resource is not None, name
            assert (resource.size, os.pread(resource.fd, resource.size, resource.offset)) == (
                len(data),
                data,
            ), name
        assert tree.lookup("other") is None
