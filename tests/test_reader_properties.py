# SPDX-License-Identifier: GPL-2.0-or-later
"""Property-based tests (hypothesis) for what reads untrusted bytes: the tar header
scanner, the OCI archive reader, and the HTTP request parser of the server.

Whatever the input, the answer is a result or the project's own error (ArchiveError for
archives, BadRequest for request heads), never another exception, within a time bound
(hypothesis' per-example deadline) and without memory growing with claimed sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import socket
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koji_hostimage.errors import ArchiveError
from koji_hostimage.image import tarreader
from koji_hostimage.image.oci_reader import OciArchive
from koji_hostimage.serve.http import (
    BadRequest,
    find_head_end,
    parse_head,
    parse_range,
    request_relpath,
)
from koji_hostimage.serve.server import HostImageServer
from koji_hostimage.serve.sources import DirectoryTree

SETTINGS = settings(max_examples=300, deadline=2000,
                    suppress_health_check=[HealthCheck.too_slow])


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


LAYER = _tar([("srv/repo/config", b"[core]\nmode=archive-z2\n"),
              ("srv/hostimage.json", b'{"arch": "x86_64"}'),
              ("srv/repo/objects/ab/" + "c" * 120 + ".filez", os.urandom(700))])


def _archive(index: object = None, manifest: object = None, config: object = None,
             layer: bytes = LAYER) -> bytes:
    """An OCI archive with the given JSON documents (defaults: valid ones); every blob is
    named by its true digest, so the reader gets past the digest checks."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(layer)}
    if config is None:
        config = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"a": "b"}}}
    config_desc = blob(json.dumps(config).encode())
    if manifest is None:
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               **config_desc},
                    "layers": [layer_desc]}
    manifest_desc = blob(json.dumps(manifest).encode())
    if index is None:
        index = {"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_desc}]}
    members = [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
               ("index.json", json.dumps(index).encode())]
    members += [(f"blobs/sha256/{d}", data) for d, data in sorted(blobs.items())]
    return _tar(members)


GOOD = _archive()


def _read_everything(data: bytes) -> None:
    """Everything a trusting reader does with an archive; ArchiveError is the only way
    to fail."""
    with tempfile.NamedTemporaryFile(suffix=".oci.tar") as fh:
        fh.write(data)
        fh.flush()
        try:
            with OciArchive(Path(fh.name), architecture="amd64") as image:
                image.verify()
                assert isinstance(image.labels, dict)
                assert image.architecture is None or isinstance(image.architecture, str)
                _ = image.ref_name
                for member in image.iter_content_members():
                    assert member.size >= 0 and (member.offset is None or member.offset >= 0)
                image.read_content_file("srv/hostimage.json")
                with tempfile.TemporaryDirectory() as out:
                    image.extract_content(Path(out) / "x")
        except ArchiveError as exc:
            assert str(exc).startswith(fh.name) or fh.name in str(exc), exc


def test_the_unmutated_archive_reads():
    _read_everything(GOOD)


@SETTINGS
@given(st.binary(max_size=4096))
def test_scan_tar_on_arbitrary_bytes(data: bytes):
    try:
        for header in tarreader.scan_tar(data, 0, len(data), "x.tar"):
            assert 0 <= header.offset and header.offset + header.size <= len(data)
    except ArchiveError as exc:
        assert str(exc).startswith("x.tar: ")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)),
                min_size=1, max_size=8))
def test_archives_with_bytes_overwritten(changes: list[tuple[int, int]]):
    data = bytearray(GOOD)
    for at, value in changes:
        data[at] = value
    _read_everything(bytes(data))


@SETTINGS
@given(st.integers(0, len(GOOD)), st.binary(max_size=600))
def test_archives_cut_or_spliced(at: int, insert: bytes):
    _read_everything(GOOD[:at] + insert + GOOD[at + len(insert):])
    _read_everything(GOOD[:at])


def _header_with(field: slice, value: bytes) -> bytes:
    """GOOD with one field of its first header replaced, checksum fixed (so the scanner
    believes it): sizes, base-256 numbers, type flags, names."""
    data = bytearray(GOOD)
    data[field] = value.ljust(field.stop - field.start, b"\0")[: field.stop - field.start]
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:512])
    return bytes(data)


@SETTINGS
@given(st.sampled_from([slice(124, 136), slice(136, 148), slice(156, 157), slice(0, 100),
                        slice(100, 108), slice(345, 500)]),
       st.one_of(st.binary(max_size=12),
                 st.integers(-(1 << 80), 1 << 80).map(
                     lambda n: b"\x80" + n.to_bytes(11, "big", signed=True)[-11:]),
                 st.sampled_from([b"x", b"g", b"L", b"K", b"S", b"5", b"1", b"2"])))
def test_archives_with_lying_headers(field: slice, value: bytes):
    _read_everything(_header_with(field, value))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats()
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["manifests", "layers", "config", "digest", "size",
                                       "mediaType", "platform", "architecture", "Labels",
                                       "annotations", "schemaVersion", "x"]),
                      children, max_size=5),
    max_leaves=20,
)


@SETTINGS
@given(st.sampled_from(["index", "manifest", "config"]), JSON)
def test_archives_with_arbitrary_json_documents(which: str, document: object):
    _read_everything(_archive(**{which: document}))


def test_deeply_nested_json_is_an_archive_error():
    with tempfile.NamedTemporaryFile(suffix=".oci.tar") as fh:
        data = _tar([("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                     ("index.json", b"[" * 200_000 + b"]" * 200_000)])
        fh.write(data)
        fh.flush()
        with pytest.raises(ArchiveError, match="index.json: not valid JSON"):
            OciArchive(Path(fh.name))


def test_claimed_sizes_do_not_allocate():
    """A member claiming 2**80 bytes costs nothing: refused from its header alone."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    huge = _header_with(slice(124, 136), b"\x80" + (1 << 80).to_bytes(11, "big"))
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        list(tarreader.scan_tar(huge, 0, len(huge), "huge.tar"))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 16 * 1024


# -- the HTTP request parser ---------------------------------------------------------------

HEAD_BYTES = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([b"GET", b"HEAD", b" ", b"/config", b"HTTP/1.1", b"HTTP/1.0",
                              b"\r\n", b"\n", b"\r", b":", b"Range", b"Content-Length",
                              b"bytes=1-2", b"-1", b"abc", b"Connection", b"close",
                              b"\x00", b"\t", b"%2e%2e", b"Transfer-Encoding"]),
             max_size=40).map(b"".join),
)


@SETTINGS
@given(HEAD_BYTES)
def test_parse_head_gives_a_request_or_bad_request(head: bytes):
    try:
        request = parse_head(head)
    except BadRequest as exc:
        assert exc.status in (400, 505)
        return
    assert request.method and request.version.startswith(b"HTTP/1.")
    assert isinstance(request.close, bool) and isinstance(request.has_body, bool)
    if request.range is not None:
        parse_range(request.range, 1000)
    request_relpath(request.target)


@SETTINGS
@given(st.binary(max_size=300))
def test_find_head_end_is_consistent(buf: bytes):
    end, rest = find_head_end(buf)
    if end < 0:
        assert rest == -1 and b"\n\n" not in buf and b"\n\r\n" not in buf
    else:
        assert buf[end:rest] in (b"\n\n", b"\n\r\n") and end < rest <= len(buf)


@SETTINGS
@given(st.text(max_size=200))
def test_request_relpath_never_escapes(target: str):
    relpath = request_relpath(target)
    if relpath is not None:
        parts = relpath.split("/")
        assert "" not in parts and "." not in parts and ".." not in parts
        assert all(part.isprintable() and "\\" not in part for part in parts)


@SETTINGS
@given(st.binary(max_size=40), st.integers(0, 1 << 40))
def test_parse_range_on_arbitrary_values(spec: bytes, size: int):
    wanted = parse_range(spec, size)
    if wanted not in (None, False):
        start, end = wanted
        assert 0 <= start <= end < size


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("prop-repo")
    (root / "config").write_bytes(b"[core]\nmode=archive-z2\n")
    with DirectoryTree(root) as tree, HostImageServer(tree, "127.0.0.1", 0,
                                                     head_timeout=2.0) as server:
        yield server


@settings(max_examples=150, deadline=8000, suppress_health_check=list(HealthCheck))
@given(HEAD_BYTES)
def test_server_answers_or_closes_for_any_head(live_server: HostImageServer, head: bytes):
    """Any head followed by an empty line: a status line comes back or the server closes
    the connection, within the head deadline; the server keeps serving."""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=6) as sock:
        sock.sendall(head + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    assert data == b"" or data.startswith(b"HTTP/1.1 "), data[:80]
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=6) as sock:
        sock.sendall(b"GET /config HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
