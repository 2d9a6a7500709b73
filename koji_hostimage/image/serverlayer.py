# SPDX-License-Identifier: GPL-2.0-or-later
"""The server layer: a statically linked busybox whose ``httpd`` serves ``/srv/repo``.

An image built without a base image gets this one small layer under its content layer,
so that any stock runtime (podman, Docker, Kubernetes) runs it and serves the repo on
port 8080 (docs/serving.md says why busybox and what it costs)::

    bin/busybox      the static binary, mode 0755
    etc/passwd       root and nobody (65534), so tools that look users up find them
    etc/group        root and nogroup (65534)

The layer is an uncompressed tar whose bytes depend only on the binary: fixed order,
mtime 0, uid/gid 0, fixed modes. The same busybox gives the same layer digest in every
build, so a registry stores it once for all images. The binary must be a static ELF
executable for the image's architecture (it runs with nothing else in the image); both
are checked from its ELF headers, nothing is executed.

Where the binary comes from: Debian's ``busybox-static`` installs ``/bin/busybox``
(``/usr/bin/busybox`` on merged-/usr systems), Fedora's ``busybox`` installs
``/usr/sbin/busybox``; both are static. ``find_busybox`` looks there unless given a path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from koji_hostimage.errors import ArchiveError

from .tarheaders import DIRTYPE, END_OF_ARCHIVE, REGTYPE, encode_header
from .tarreader import padded

log = logging.getLogger(__name__)

# Where distributions install a static busybox, in the order they are tried.
BUSYBOX_PATHS = (Path("/usr/bin/busybox"), Path("/bin/busybox"), Path("/usr/sbin/busybox"),
                 Path("/sbin/busybox"))
SERVER_PORT = 8080
# nobody:nogroup. The content layer is world-readable (oci_writer makes it so), so the
# server needs no privileges at all; numeric, so runtimes need no /etc/passwd lookup and
# Kubernetes' runAsNonRoot can verify it.
SERVER_USER = "65534:65534"
SERVER_WORKDIR = "/srv/repo"
SERVER_CMD = ["/bin/busybox", "httpd", "-f", "-v", "-p", str(SERVER_PORT), "-h", SERVER_WORKDIR]
SERVER_ENV = ["PATH=/bin"]
# httpd is PID 1 in the container and installs no SIGTERM handler, so the kernel drops
# SIGTERM and `podman stop` would wait 10 s. Nothing is lost by killing a static server.
SERVER_STOP_SIGNAL = "SIGKILL"
LAYER_MTIME = 0  # not the build's time: the layer must not change between builds

_PASSWD = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"

# ELF e_machine (and byte order) of each Koji arch.
_ELF_MACHINE = {"x86_64": (62, "<"), "aarch64": (183, "<"), "ppc64le": (21, "<"),
                "s390x": (22, ">")}
_PT_INTERP = 3
_VERSION_RE = re.compile(rb"BusyBox v[0-9][0-9A-Za-z.+:~ ()_-]{0,80}")


@dataclass
class ServerLayer:
    """The server layer of one image: the tar's bytes and what the config needs."""

    data: bytes  # the uncompressed layer tar
    digest: str  # sha256:... of ``data`` (also its diff_id: it is not compressed)
    busybox: Path  # where the binary was read from
    busybox_digest: str  # sha256:... of the binary
    busybox_version: str  # "BusyBox v1.35.0 (Debian ...)" from the binary, or "unknown"

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def created_by(self) -> str:
        """The layer's history entry: what serves, and exactly which binary."""
        return (f"koji-hostimage: server layer: {self.busybox_version} "
                f"({self.busybox_digest}) httpd serving {SERVER_WORKDIR} on {SERVER_PORT}")


def find_busybox(path: Path | str | None = None, what: str = "busybox") -> Path:
    """The static busybox to put in the server layer: ``path`` if given, else the first
    of BUSYBOX_PATHS that exists. ArchiveError naming ``what`` (the option or config key
    that chose it) when there is none."""
    if path is not None and str(path) != "":
        candidate = Path(path)
        if not candidate.is_file():
            raise ArchiveError(f"{what}: {candidate}: not found: expected a statically "
                               "linked busybox (Debian: busybox-static; Fedora: busybox)")
        return candidate
    for candidate in BUSYBOX_PATHS:
        if candidate.is_file():
            return candidate
    raise ArchiveError(
        f"{what}: no static busybox found (looked for {', '.join(map(str, BUSYBOX_PATHS))}):"
        " install busybox-static (Debian) or busybox (Fedora), give its path, or build "
        "an image that cannot serve on purpose (--no-server; kojid: server = none)"
    )


def check_static_elf(path: Path, koji_arch: str) -> None:
    """``path`` is an ELF executable for ``koji_arch`` with no program interpreter
    (statically linked): it must run alone in the image. Reads only the ELF headers."""
    expected = _ELF_MACHINE.get(koji_arch)
    if expected is None:
        raise ArchiveError(f"{path}: no server binary is known for arch {koji_arch!r}")
    machine, order = expected
    try:
        with open(path, "rb") as fh:
            ident = fh.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2:
                raise ArchiveError(f"{path}: expected a 64-bit ELF executable "
                                   "(a static busybox), got something else")
            got_order = "<" if ident[5] == 1 else ">"
            (e_machine,) = struct.unpack_from(order + "H", ident, 18)
            if got_order != order or e_machine != machine:
                raise ArchiveError(
                    f"{path}: ELF machine {e_machine} ({'little' if got_order == '<' else 'big'}"
                    f"-endian): expected a busybox for {koji_arch} (machine {machine})"
                )
            phoff, = struct.unpack_from(order + "Q", ident, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", ident, 54)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read: {exc.strerror}") from exc
    for number in range(phnum):
        (p_type,) = struct.unpack_from(order + "I", table, number * phentsize)
        if p_type == _PT_INTERP:
            raise ArchiveError(
                f"{path}: dynamically linked (it has a program interpreter): expected a "
                "statically linked busybox (Debian: busybox-static), the image has no libc"
            )


def build_server_layer(busybox: Path, koji_arch: str) -> ServerLayer:
    """The server layer tar for ``busybox`` (checked with ``check_static_elf``)."""
    busybox = Path(busybox)
    check_static_elf(busybox, koji_arch)
    try:
        binary = busybox.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"{busybox}: cannot read: {exc.strerror}") from exc
    found = _VERSION_RE.search(binary)
    version = found.group(0).decode("ascii").strip() if found else "unknown"
    parts = [encode_header(b"bin/", DIRTYPE, 0o755, 0, LAYER_MTIME),
             _file(b"bin/busybox", binary, 0o755),
             encode_header(b"etc/", DIRTYPE, 0o755, 0, LAYER_MTIME),
             _file(b"etc/group", _GROUP, 0o644),
             _file(b"etc/passwd", _PASSWD, 0o644),
             END_OF_ARCHIVE]
    data = b"".join(parts)
    layer = ServerLayer(data=data, digest="sha256:" + hashlib.sha256(data).hexdigest(),
                        busybox=busybox,
                        busybox_digest="sha256:" + hashlib.sha256(binary).hexdigest(),
                        busybox_version=version)
    log.info("server layer %s: %s from %s (%d bytes)", layer.digest, version,
             os.fspath(busybox), layer.size)
    return layer


def _file(name: bytes, data: bytes, mode: int) -> bytes:
    header = encode_header(name, REGTYPE, mode, len(data), LAYER_MTIME)
    return header + data + bytes(padded(len(data)) - len(data))
