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

from .sources import CONTENT_ADDRESSED

IMMUTABLE = b"public, max-age=31536000, immutable"
NO_CACHE = b"no-cache"
# Content-addressed files never change under the same name; everything else can.
IMMUTABLE_DIRS = CONTENT_ADDRESSED

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
    range_spec, if_range, has_body, connection = parse_header_block(head[line_end:])
    request = Request()
    request.method = method.decode("ascii", "replace")
    request.target = target.decode("latin-1")
    request.version = version
    request.range = range_spec
    request.if_range = if_range
    request.has_body = has_body
    if version == b"HTTP/1.0":
        request.close = b"keep-alive" not in connection
    else:
        request.close = b"close" in connection
    return request


def parse_header_block(headers: bytes) -> tuple[bytes | None, bool, bool, bytes]:
    """The header lines after the request line (each starting with its line end, CRLF
    or LF; empty when there are none): ``(range, if_range, has_body, connection)``, the
    ``Range`` and lower-cased ``Connection`` values (``b""`` without one). A bare CR, a
    malformed line or a bad ``Content-Length`` is a BadRequest (400)."""
    if b"\r" in headers:
        headers = headers.replace(b"\r\n", b"\n")
        if b"\r" in headers:
            raise BadRequest(400, "bare CR in the request head")
    if headers and not _HEADER_LINES.fullmatch(headers):
        raise BadRequest(400, "malformed header line")
    headers = headers.lower()
    range_spec = None
    if b"\nrange:" in headers:
        # Range values are case-insensitive in the unit only ("bytes"); digits have no case.
        range_spec = _header_value(headers, b"\nrange:")
    length = _header_value(headers, b"\ncontent-length:")
    if length is not None and (
        not length.isdigit() or headers.count(b"\ncontent-length:") > 1
    ):
        raise BadRequest(400, "bad Content-Length")
    has_body = b"\ntransfer-encoding:" in headers or (
        length is not None and length.strip(b"0") != b""
    )
    connection = _header_value(headers, b"\nconnection:") or b""
    return range_spec, b"\nif-range:" in headers, has_body, connection


# The start of the request line ostree (libcurl) sends for every object: GET and a plain
# path (see _PLAIN_PATH below). The rest of the head, " HTTP/1.1" and the header lines,
# is looked up in _KNOWN_RESTS.
_SEGMENT = rb"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*"
_PLAIN_GET = re.compile(rb"GET /%s(?:/%s)*" % (_SEGMENT, _SEGMENT)).match
# The rests of heads seen before and what they mean for a plain GET: close the connection
# after the response or not. A client sends the same rest (Host, User-Agent, Accept,
# Connection...) with every request, so it is parsed once, not per request.
_KNOWN_RESTS: dict[bytes, bool] = {}
_MAX_KNOWN_RESTS = 256


def parse_plain_get(head: bytes) -> tuple[str, bool] | None:
    """The fast path for the requests ostree sends for every object: ``(target,
    close)`` when ``head`` (a whole request head, up to and including the empty line
    ending it) is ``GET /plain/path HTTP/1.1`` with CRLF line ends and header lines that
    :func:`parse_head` accepts, without ``Range``. None for anything else, which
    :func:`parse_head` then decides: this only skips work, it never decides otherwise
    (the header lines go through the same :func:`parse_header_block`; heads longer than
    MAX_HEADER_BYTES are left to the caller's 431)."""
    if len(head) > MAX_HEADER_BYTES:
        return None
    match = _PLAIN_GET(head)
    if match is None:
        return None
    end = match.end()
    close = _KNOWN_RESTS.get(head[end:])
    if close is None:
        close = _learn_rest(head[end:])
        if close is None:
            return None
    # Plain-path characters are ASCII: the same str as parse_head's latin-1 decoding.
    return head[4:end].decode("ascii"), close


def _learn_rest(rest: bytes) -> bool | None:
    """Whether a plain GET whose head ends in ``rest`` (after its path) closes the
    connection; None when that is not for the fast path to say (remembered when not)."""
    if not (rest.startswith(b" HTTP/1.1\r\n") and rest.endswith(b"\r\n\r\n")):
        return None
    try:
        range_spec, _if_range, has_body, connection = parse_header_block(rest[9:-4])
    except BadRequest:
        return None
    if range_spec is not None:
        return None
    close = has_body or b"close" in connection
    if len(_KNOWN_RESTS) >= _MAX_KNOWN_RESTS:
        _KNOWN_RESTS.clear()
    _KNOWN_RESTS[rest] = close
    return close


# The shape of every path ostree asks for (objects, deltas, refs, summary, config):
# segments of plain characters, none starting with a dot, so none can be "." or "..".
_PLAIN_PATH = re.compile(f"(?:/{_SEGMENT.decode('ascii')})+")


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


def ok_header(
    status: int, date: bytes, length: int, immutable: bool, extra: bytes, close: bool
) -> bytes:
    """The head of a 200 or 206 response with a body of ``length`` bytes (``extra``:
    more header lines, each ending in CRLF)."""
    return (
        b"HTTP/1.1 %d %s\r\nServer: koji-hostimage\r\nDate: %s\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
        b"Accept-Ranges: bytes\r\nCache-Control: %s\r\n%s%s\r\n"
    ) % (
        status,
        b"OK" if status == 200 else b"Partial Content",
        date,
        length,
        IMMUTABLE if immutable else NO_CACHE,
        extra,
        b"Connection: close\r\n" if close else b"",
    )


def error_response(
    status: int, date: bytes, extra: bytes = b"", *, close: bool, head_only: bool
) -> bytes:
    """A whole error response: its head and a one-line text body (not for HEAD)."""
    reason = REASONS.get(status, "Error")
    body = f"{status} {reason}\n".encode("ascii")
    if status == 405:
        extra += b"Allow: GET, HEAD\r\n"
    header = (
        b"HTTP/1.1 %d %s\r\nServer: koji-hostimage\r\nDate: %s\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\nCache-Control: no-cache\r\n"
        b"%s%s\r\n"
    ) % (
        status,
        reason.encode("ascii"),
        date,
        len(body),
        extra,
        b"Connection: close\r\n" if close else b"",
    )
    return header if head_only else header + body


class DateCache:
    """The Date header, formatted once per second, and the heads of a 200 response made
    with it: ``ok_heads[immutable] % length`` is what :func:`ok_header` makes for a 200
    with ``length`` body bytes on a connection that stays open (one formatting of one
    number per response, not of the whole head)."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""
        self.ok_heads = (b"", b"")

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._value = formatdate(now, usegmt=True).encode("ascii")
            self._second = now
            # The head for length 0 with its length made a %d: a Date holds no "%".
            self.ok_heads = tuple(
                ok_header(200, self._value, 0, immutable, b"", False).replace(
                    b"\r\nContent-Length: 0\r\n", b"\r\nContent-Length: %d\r\n"
                )
                for immutable in (False, True)
            )
        return self._value

    def refresh(self, monotonic_now: float) -> float:
        """Bring the value up to date; returns when (on the ``time.monotonic()`` clock)
        the next second starts, the time to call this again."""
        self.get()
        return monotonic_now + 1.0 - time.time() % 1.0
