# SPDX-License-Identifier: GPL-2.0-or-later
"""The HTTP/1.1 pieces of the static server that need no socket: parsing a request head,
mapping a request target to a tree path, parsing a ``Range`` header, the ``Date`` header
and the ``Cache-Control`` policy.

They are plain functions on bytes and strings, kept apart from the event loop in
:mod:`koji_hostimage.serve.server` so they can be read and tested on their own.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from urllib.parse import unquote

IMMUTABLE = b"public, max-age=31536000, immutable"
NO_CACHE = b"no-cache"
# Content-addressed files never change under the same name; everything else can.
IMMUTABLE_TOPS = frozenset({"objects", "deltas", "delta-indexes"})

MAX_HEADER_BYTES = 16384


class Request:
    __slots__ = ("method", "target", "version", "range", "if_range", "close", "has_body")

    def __init__(self) -> None:
        self.range: bytes | None = None
        self.if_range = False
        self.close = False
        self.has_body = False


class BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}


def find_head_end(buf: bytes) -> tuple[int, int]:
    """Where the request head in ``buf`` ends: ``(end, rest)``, the head being
    ``buf[:end]`` and the next request starting at ``rest``; ``(-1, -1)`` while the
    head is incomplete. The head ends at the first empty line; lines end in CRLF or,
    as most HTTP/1.1 parsers accept (RFC 9112 section 2.2), in a bare LF."""
    crlf = buf.find(b"\n\r\n")
    lf = buf.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 3
    return -1, -1


# Header lines after the request line (each starting with its LF): a token, a colon and a
# value without control characters other than tab (RFC 9110 5.1 and 5.5). No space before
# the colon, no obsolete line folding: those are refused (RFC 9112 5.1, 5.2).
_HEADER_LINES = re.compile(
    rb"(?:\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*)*"
)


def _header_value(headers: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (``b"\\nname:"``) in the lower-cased header block."""
    at = headers.find(name)
    if at < 0:
        return None
    start = at + len(name)
    stop = headers.find(b"\n", start)
    return headers[start : stop if stop >= 0 else len(headers)].strip(b" \t")


def parse_head(head: bytes) -> Request:
    """Parse a request line and the few headers that matter to a static server.

    Lines may end in CRLF or a bare LF; a bare CR, a header line that is not
    ``name: value`` or a ``Content-Length`` that is not a number is a BadRequest (400).
    Headers are found by searching the lower-cased block for ``LF name:`` rather than
    by splitting every line: ostree sends a handful of headers we ignore, and this keeps
    the per-request work in C.
    """
    if b"\r" in head:
        head = head.replace(b"\r\n", b"\n")
        if b"\r" in head:
            raise BadRequest(400, "bare CR in the request head")
    line_end = head.find(b"\n")
    if line_end < 0:
        line_end = len(head)
    parts = head[:line_end].split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not method.isalpha() or not target:  # RFC 9112: method is a token, target non-empty
        raise BadRequest(400, "malformed request line")
    if not version.startswith(b"HTTP/1."):
        raise BadRequest(505 if version.startswith(b"HTTP/") else 400, "bad HTTP version")
    if len(version) != 8 or not version[7:].isdigit():
        raise BadRequest(400, "bad HTTP version")
    headers = head[line_end:]
    if headers and not _HEADER_LINES.fullmatch(headers):
        raise BadRequest(400, "malformed header line")
    request = Request()
    request.method = method.decode("ascii", "replace")
    request.target = target.decode("latin-1")
    request.version = version
    headers = headers.lower()
    if b"\nrange:" in headers:
        # Range values are case-insensitive in the unit only ("bytes"); digits have no case.
        request.range = _header_value(headers, b"\nrange:")
    request.if_range = b"\nif-range:" in headers
    length = _header_value(headers, b"\ncontent-length:")
    if length is not None and (
        not length.isdigit() or headers.count(b"\ncontent-length:") > 1
    ):
        raise BadRequest(400, "bad Content-Length")
    request.has_body = b"\ntransfer-encoding:" in headers or (
        length is not None and length.strip(b"0") != b""
    )
    connection = _header_value(headers, b"\nconnection:") or b""
    if version == b"HTTP/1.0":
        request.close = b"keep-alive" not in connection
    else:
        request.close = b"close" in connection
    return request


# The shape of every path ostree asks for (objects, deltas, refs, summary, config):
# segments of plain characters, none starting with a dot, so none can be "." or "..".
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*)+")


def request_relpath(target: str) -> str | None:
    """Map a request target to a path relative to the tree, or None to refuse it.

    Refused: anything with ``.``/``..``/empty components (also when percent-encoded),
    encoded slashes, backslashes, NUL or other control characters.
    """
    if _PLAIN_PATH.fullmatch(target):  # fast path: nothing to decode or to refuse
        return target[1:]
    if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 3.2.2)
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    segments = path[1:].split("/")
    if "%" in path:
        try:
            segments = [unquote(s, errors="strict") for s in segments]
        except UnicodeDecodeError:
            return None
    for segment in segments:
        if segment in ("", ".", "..") or "/" in segment or "\\" in segment:
            return None
        if not segment.isprintable():  # NUL, CR, LF and other control characters
            return None
    return "/".join(segments)


def parse_range(spec: bytes, size: int) -> tuple[int, int] | None | bool:
    """Parse a single ``bytes=`` range. Returns (start, end inclusive), None to ignore the
    header (serve the whole file: syntax we do not handle, or several ranges), or False
    when the range cannot be satisfied (416)."""
    if not spec.startswith(b"bytes=") or b"," in spec:
        return None
    first, sep, last = spec[6:].strip().partition(b"-")
    if not sep:
        return None
    try:
        if first:
            start = int(first)
            end = int(last) if last else max(start, size - 1)
            if start < 0 or end < start:
                return None
        else:
            suffix = int(last)
            if suffix < 0:
                return None
            if suffix == 0:
                return False
            start, end = max(0, size - suffix), size - 1
    except ValueError:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


class DateCache:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._value = formatdate(now, usegmt=True).encode("ascii")
            self._second = now
        return self._value
