# SPDX-License-Identifier: GPL-2.0-or-later
"""A fast tar header reader, and the tar format's basics (blocks, padding).

``scan_tar`` is the fast reader matching ``tarwriter``, the project's only tar header
parser: it walks the headers of a tar held in memory or an mmap (ours, GNU tar's,
Python's) and gives the absolute offset of each member's data, so files of an uncompressed
layer can be read (and served by ``koji-hostimage serve``) straight out of the archive.

``BLOCK``, ``ZEROS`` and ``padded`` are shared with ``tarwriter``, which imports them from
here: the reading side never imports the writing side.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from koji_hostimage.errors import ArchiveError

BLOCK = 512
ZEROS = bytes(BLOCK)


def padded(size: int) -> int:
    """``size`` rounded up to whole 512-byte blocks."""
    return (size + BLOCK - 1) & ~(BLOCK - 1)


@dataclass(frozen=True)
class TarHeader:
    """One member found by ``scan_tar``, with the absolute offset of its data."""

    name: str  # as stored (PAX / GNU long names applied), not normalised
    typeflag: bytes
    mode: int
    size: int  # data size (0 for links, directories and other non-file members)
    mtime: int
    linkname: str
    offset: int  # absolute offset of the first data byte in ``data``

    @property
    def kind(self) -> str:
        return _KINDS.get(self.typeflag, "other")


_KINDS = {
    b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"5": "dir"
}
# Type flags whose size field does not describe data blocks (same rule as tarfile).
_NO_DATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))


def _number(field: bytes, label: str, where: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for values beyond octal fields
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] & 0x40 else value
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise ArchiveError(f"{label}: bad number {field!r} in the tar header at {where}") from None


def _signed_sum(header: bytes) -> int:
    """The header checksum as some old writers computed it: a sum of signed chars."""
    high = sum(1 for byte in header[:148] + header[156:] if byte > 127)
    return sum(header[:148]) + 256 + sum(header[156:]) - 256 * high


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(payload: bytes, label: str, where: int) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(payload) and payload[pos:pos + 1] != b"\0":
        space = payload.find(b" ", pos)
        try:
            length = int(payload[pos:space])
        except ValueError:
            raise ArchiveError(f"{label}: bad PAX header at {where}") from None
        if length <= space - pos:
            raise ArchiveError(f"{label}: bad PAX header at {where}")
        record = payload[space + 1 : pos + length - 1]  # without the trailing newline
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode(
            "utf-8", "surrogateescape"
        )
        pos += length
    return records


def _pax_number(value: str, key: str, label: str, where: int) -> int:
    """A PAX ``size`` (a decimal count) or ``mtime`` (decimal seconds, maybe fractional)."""
    whole = value.partition(".")[0] if key == "mtime" else value
    sign = -1 if key == "mtime" and whole.startswith("-") else 1
    digits = whole[1:] if sign < 0 else whole
    if not digits.isdigit() or not digits.isascii() or len(digits) > 30:
        raise ArchiveError(f"{label}: PAX header at byte {where}: {key}: expected a "
                           f"decimal number, got {value[:40]!r}")
    return sign * int(digits)


def scan_tar(data: Any, start: int, end: int, label: str) -> Iterator[TarHeader]:
    """Yield the members of the tar held in ``data[start:end]`` (e.g. an mmap).

    About ten times faster than iterating ``tarfile`` (no TarInfo objects, no reads: the
    headers are sliced from the map), with the same ``offset_data``. Understands ustar,
    PAX ``x``/``g`` (path, linkpath, size, mtime), GNU ``L``/``K`` long names and the
    signed checksums of old writers. ArchiveError (starting with ``label``) for bad
    checksums, GNU sparse members, members running past ``end`` or a missing
    end-of-archive block.
    """
    pos = start
    global_pax: dict[str, str] = {}
    local_pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    while True:
        if pos + BLOCK > end:
            raise ArchiveError(
                f"{label}: truncated: the tar ends at byte {end - start} without its "
                "end-of-archive block"
            )
        header = bytes(data[pos : pos + BLOCK])
        if header == ZEROS:
            return
        stored = _number(header[148:156], label, pos)
        # The checksum counts its own field as eight spaces (8 * 0x20 = 256).
        if stored != sum(header) - sum(header[148:156]) + 256 and stored != _signed_sum(
            header
        ):
            raise ArchiveError(f"{label}: not a tar header at byte {pos - start} (bad checksum)")
        typeflag = header[156:157]
        size = _number(header[124:136], label, pos)
        if size < 0:
            raise ArchiveError(f"{label}: negative size {size} in the tar header at byte "
                               f"{pos - start}")
        data_at = pos + BLOCK
        if typeflag in (b"x", b"g", b"L", b"K"):
            if data_at + size > end:
                raise ArchiveError(f"{label}: truncated: extended header at byte {pos - start}")
            payload = bytes(data[data_at : data_at + size])
            if typeflag == b"x":
                local_pax.update(_pax_records(payload, label, pos - start))
            elif typeflag == b"g":
                global_pax.update(_pax_records(payload, label, pos - start))
            elif typeflag == b"L":
                long_name = _text(payload)
            else:
                long_link = _text(payload)
            pos = data_at + padded(size)
            continue
        if typeflag == b"S":  # extension blocks and holes we would serve as garbage
            raise ArchiveError(
                f"{label}: GNU sparse member at byte {pos - start} is not supported"
            )
        pax = {**global_pax, **local_pax} if global_pax else local_pax
        if "path" in pax:
            name = pax["path"]
        elif long_name is not None:
            name = long_name
        else:
            name = _text(header[0:100])
            # Only POSIX ustar ("ustar\0" magic) has a name prefix there; old GNU
            # headers ("ustar  ") keep access and change times in the same bytes.
            if header[257:263] == b"ustar\0" and header[345]:
                name = _text(header[345:500]) + "/" + name
        linkname = pax.get("linkpath", long_link if long_link is not None
                           else _text(header[157:257]))
        if "size" in pax:
            size = _pax_number(pax["size"], "size", label, pos - start)
        mtime = (_pax_number(pax["mtime"], "mtime", label, pos - start) if "mtime" in pax
                 else _number(header[136:148], label, pos))
        local_pax = {}
        long_name = long_link = None
        data_size = 0 if typeflag in _NO_DATA else size
        if data_at + data_size > end:
            raise ArchiveError(
                f"{label}: truncated or corrupt: {name} (header at byte {pos - start}) claims "
                f"{data_size} bytes, which needs {data_at + data_size - start} bytes of tar; "
                f"there are {end - start}"
            )
        yield TarHeader(
            name=name,
            typeflag=typeflag,
            mode=_number(header[100:108], label, pos) & 0o7777,
            size=data_size,
            mtime=mtime,
            linkname=linkname,
            offset=data_at,
        )
        pos = data_at + padded(data_size)


def normalize_member_name(name: str) -> str:
    """Tar member name without a leading "./" or "/" and without a trailing "/"."""
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")
