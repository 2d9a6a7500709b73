# SPDX-License-Identifier: GPL-2.0-or-later
"""Tar headers for :mod:`koji_hostimage.image.tarwriter`: POSIX ustar blocks, a PAX
extended header only when a value does not fit ustar (long or non-ASCII names, long
link targets, sizes of 8 GiB or more), and the per-(type, mode, mtime) templates the
writer's hot loop fills in."""

from __future__ import annotations

import functools
import struct

from .tarreader import BLOCK, ZEROS, padded

END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
REGTYPE = b"0"
SYMTYPE = b"2"
DIRTYPE = b"5"
PAXTYPE = b"x"

MAX_OCTAL_SIZE = 0o77777777777  # 11 octal digits: the largest size ustar can hold
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12s")
NUL_PAD = b"\0" * 100


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _split_ustar_name(name: bytes) -> tuple[bytes, bytes] | None:
    """Return (prefix, name) fitting the ustar fields, or None when it cannot fit."""
    if len(name) <= 100:
        return b"", name
    # Split at the last slash that leaves a prefix of at most 155 bytes: that gives the
    # shortest possible name part, which must fit 100 bytes. A trailing slash
    # (directories) stays in the name part.
    cut = name.rfind(b"/", 0, min(len(name) - 1, 156))
    if cut > 0 and len(name) - cut - 1 <= 100:
        return name[:cut], name[cut + 1 :]
    return None


def _pax_record(keyword: bytes, value: bytes) -> bytes:
    """One ``"LEN KEY=VALUE\\n"`` record; LEN counts its own digits."""
    body = b" " + keyword + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def ustar_header(
    name: bytes,
    typeflag: bytes,
    mode: int,
    size: int,
    mtime: int,
    linkname: bytes = b"",
    prefix: bytes = b"",
) -> bytes:
    """One 512-byte ustar header block (uid/gid 0, no user or group names)."""
    size_field = _octal(size, 12)
    # The checksum is the byte sum of the header with its own field as spaces. Only the
    # name, size, link and prefix vary between the files of one tar, so the rest is
    # summed once per (type, mode, mtime) and cached: summing 512 bytes per header was
    # a tenth of the packing time.
    fixed = _fixed_sum(typeflag, mode, mtime)
    checksum = fixed + sum(name) + sum(size_field) + sum(linkname) + sum(prefix)
    return _USTAR.pack(
        name,
        _octal(mode, 8),
        b"0000000\0",
        b"0000000\0",
        size_field,
        _octal(mtime, 12),
        b"%06o\0 " % checksum,
        typeflag,
        linkname,
        b"ustar\0",
        b"00",
        b"",
        b"",
        b"0000000\0",
        b"0000000\0",
        prefix,
        b"",
    )


@functools.lru_cache(maxsize=256)
def _fixed_sum(typeflag: bytes, mode: int, mtime: int) -> int:
    """Byte sum of a header with empty name, link and prefix, no size field, checksum
    field as spaces."""
    return sum(
        _USTAR.pack(
            b"", _octal(mode, 8), b"0000000\0", b"0000000\0", b"", _octal(mtime, 12),
            b"        ", typeflag, b"", b"ustar\0", b"00", b"", b"", b"0000000\0",
            b"0000000\0", b"", b"",
        )
    )


@functools.lru_cache(maxsize=256)
def header_template(typeflag: bytes, mode: int, mtime: int) -> tuple[bytes, bytes, bytes, int]:
    """The constant parts of a header with no link or prefix: the bytes between the
    name and the size field, between the size and the checksum, after the checksum,
    and the fixed part of the checksum. Same bytes as ``ustar_header`` builds."""
    block = ustar_header(b"", typeflag, mode, 0, mtime)
    return block[100:124], block[136:148], block[156:], _fixed_sum(typeflag, mode, mtime)


def encode_header(
    name: bytes, typeflag: bytes, mode: int, size: int, mtime: int, linkname: bytes = b""
) -> bytes:
    """Header block(s) for one member: ustar, with a PAX header first only if needed."""
    if not linkname and len(name) <= 100 and size <= MAX_OCTAL_SIZE and name.isascii():
        # The common case, from a cached template: only name, size and checksum vary.
        ids, times, tail, fixed = header_template(typeflag, mode, mtime)
        size_field = b"%011o\0" % size
        checksum = fixed + sum(name) + sum(size_field)
        return b"".join(
            (name, NUL_PAD[len(name):], ids, size_field, times, b"%06o\0 " % checksum, tail)
        )
    pax: list[bytes] = []
    split = _split_ustar_name(name) if name.isascii() else None
    if split is None:
        pax.append(_pax_record(b"path", name))
        split = (b"", name[:100])
    if len(linkname) > 100 or not linkname.isascii():
        pax.append(_pax_record(b"linkpath", linkname))
        linkname = linkname[:100]
    if size > MAX_OCTAL_SIZE:
        pax.append(_pax_record(b"size", b"%d" % size))
    header = ustar_header(
        split[1], typeflag, mode, 0 if size > MAX_OCTAL_SIZE else size, mtime, linkname, split[0]
    )
    if not pax:
        return header
    records = b"".join(pax)
    pax_header = ustar_header(b"././@PaxHeader", PAXTYPE, 0o644, len(records), mtime)
    return pax_header + records + ZEROS[: padded(len(records)) - len(records)] + header


def fixed_length_header(name: bytes, mode: int, size: int, mtime: int) -> bytes:
    """One ustar block for a regular file whose length does not depend on ``size``: for
    a member written before its size is known and rewritten in place afterwards. Sizes
    of 8 GiB or more go into the size field in GNU base-256 (read by GNU tar, Go's
    archive/tar and Python's tarfile) instead of a PAX record ahead of the header."""
    if len(name) > 100 or not name.isascii():
        raise ValueError(f"{name!r}: expected a short ASCII name")
    if size <= MAX_OCTAL_SIZE:
        return encode_header(name, REGTYPE, mode, size, mtime)
    block = bytearray(encode_header(name, REGTYPE, mode, 0, mtime))
    block[124:136] = b"\x80" + size.to_bytes(11, "big")
    block[148:156] = b"%06o\0 " % (sum(block[:148]) + 8 * 0x20 + sum(block[156:]))
    return bytes(block)
