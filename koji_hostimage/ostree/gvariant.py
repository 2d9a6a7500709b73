# SPDX-License-Identifier: GPL-2.0-or-later
"""GVariant text format: parse what ``ostree`` prints, write what it parses.

The subset g_variant_print() emits and ostree's --add-metadata parses: strings,
numbers with type keywords, booleans, arrays, tuples, dicts, variants, maybes,
bytestrings and @TYPE annotations (GLib's "GVariant Text Format" reference).

``parse_gvariant_text`` turns GVariant text (``ostree show --raw``,
``--print-metadata-key``) into Python values; ``gvariant_text`` encodes Python values for
``--add-metadata=KEY=GVARIANT-TEXT``; ``GVariantLiteral`` passes ready-made text through.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NUMBER_KEYWORDS = {"byte", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                    "handle", "double"}
_STRING_KEYWORDS = {"objectpath", "signature"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "a": "\a",
            "\\": "\\", "'": "'", '"': '"'}
_NUMBER_RE = re.compile(
    r"[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)"
)
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class GVariantLiteral:
    """Ready-made GVariant text, passed through ``gvariant_text`` unchanged.

    For values whose type the Python value cannot carry, e.g. ``@a(sssss) []``.
    """

    text: str


class GVariantTextError(ValueError):
    """Text that is not (the supported subset of) GVariant text format."""


def parse_gvariant_text(text: str) -> Any:
    """Parse GVariant text into Python values.

    Strings -> str, numbers -> int/float, booleans -> bool, arrays -> list, tuples and
    dict entries -> tuple, dicts -> dict, variants -> their value, ``nothing`` -> None,
    bytestrings -> bytes (``[byte 0x..]`` arrays stay lists of int).
    """
    parser = _GVariantParser(text)
    value = parser.value()
    parser.skip_space()
    if parser.pos != len(text):
        parser.fail("end of input")
    return value


class _GVariantParser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> None:
        snippet = self.text[self.pos:self.pos + 20]
        raise GVariantTextError(f"GVariant text: at {self.pos}: expected {expected}, "
                                f"got {snippet!r}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            self.fail(repr(char))
        self.pos += 1

    def value(self) -> Any:
        char = self.peek()
        if char == "@":
            self.pos += 1
            self.type_string()
            return self.value()
        if char in ("'", '"'):
            return self.string()
        if char == "b" and self.text[self.pos + 1:self.pos + 2] in ("'", '"'):
            self.pos += 1
            # A bytestring literal stands for its bytes plus the implicit trailing NUL.
            return self.string().encode("latin-1", "surrogateescape") + b"\0"
        if char == "[":
            return self.sequence("[", "]")
        if char == "(":
            return tuple(self.sequence("(", ")"))
        if char == "{":
            return self.dict_or_entry()
        if char == "<":
            self.pos += 1
            inner = self.value()
            self.expect(">")
            return inner
        return self.word_or_number()

    def word_or_number(self) -> Any:
        self.skip_space()
        word = _WORD_RE.match(self.text, self.pos)
        if word and word.group() not in ("inf", "nan"):
            name = word.group()
            self.pos = word.end()
            if name == "true":
                return True
            if name == "false":
                return False
            if name == "nothing":
                return None
            if name == "just" or name in _NUMBER_KEYWORDS or name in _STRING_KEYWORDS:
                return self.value()
            self.pos = word.start()
            self.fail("a value")
        number = _NUMBER_RE.match(self.text, self.pos)
        if not number or not number.group():
            self.fail("a value")
        self.pos = number.end()
        literal = number.group()
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", literal):
            return int(literal, 16)
        if re.fullmatch(r"[-+]?\d+", literal):
            return int(literal)
        return float(literal)

    def sequence(self, open_char: str, close_char: str) -> list[Any]:
        self.expect(open_char)
        items: list[Any] = []
        if self.peek() == close_char:
            self.pos += 1
            return items
        while True:
            items.append(self.value())
            char = self.peek()
            self.pos += 1
            if char == close_char:
                return items
            if char != ",":
                self.pos -= 1
                self.fail(f"',' or {close_char!r}")
            if self.peek() == close_char:  # 1-tuples: ('a',)
                self.pos += 1
                return items

    def dict_or_entry(self) -> dict[Any, Any] | tuple[Any, Any]:
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return {}
        key = self.value()
        if self.peek() == ",":  # a lone dict entry {k, v}
            self.pos += 1
            val = self.value()
            self.expect("}")
            return (key, val)
        result: dict[Any, Any] = {}
        while True:
            self.expect(":")
            result[key] = self.value()
            char = self.peek()
            self.pos += 1
            if char == "}":
                return result
            if char != ",":
                self.pos -= 1
                self.fail("',' or '}'")
            key = self.value()

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char != "\\":
                out.append(char)
                continue
            out.append(self.escape())
        self.fail(f"closing {quote}")
        return ""

    def escape(self) -> str:
        char = self.text[self.pos:self.pos + 1]
        self.pos += 1
        if char in _ESCAPES:
            return _ESCAPES[char]
        if char in ("u", "U"):
            width = 4 if char == "u" else 8
            digits = self.text[self.pos:self.pos + width]
            if not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", digits):
                self.fail(f"{width} hex digits")
            self.pos += width
            return chr(int(digits, 16))
        if char == "x":
            digits = re.match(r"[0-9a-fA-F]{1,2}", self.text[self.pos:])
            if not digits:
                self.fail("hex digits")
            self.pos += len(digits.group())
            return chr(int(digits.group(), 16))
        if char in "01234567":
            digits = re.match(r"[0-7]{0,2}", self.text[self.pos:])
            self.pos += len(digits.group()) if digits else 0
            return chr(int(char + (digits.group() if digits else ""), 8))
        return char

    def type_string(self) -> str:
        start = self.pos
        self._one_type()
        return self.text[start:self.pos]

    def _one_type(self) -> None:
        char = self.text[self.pos:self.pos + 1]
        self.pos += 1
        if char and char in "bynqiuxthdsogv*?r":
            return
        if char in ("a", "m"):
            self._one_type()
            return
        if char == "(":
            while self.text[self.pos:self.pos + 1] not in (")", ""):
                self._one_type()
            self.pos += 1
            return
        if char == "{":
            self._one_type()
            self._one_type()
            if self.text[self.pos:self.pos + 1] != "}":
                self.fail("'}' closing a dict entry type")
            self.pos += 1
            return
        self.pos -= 1
        self.fail("a GVariant type")


def gvariant_text(value: Any, big_endian: bool = False, empty_type: str = "as") -> str:
    """Encode a Python value as GVariant text (for ``--add-metadata``).

    str -> s, bool -> b, int -> x (int64), float -> d, bytes -> ay, list -> array,
    tuple -> tuple, dict (str keys) -> a{sv}. An empty list is typed ``empty_type``.
    ``big_endian`` stores numbers byte-swapped on little-endian hosts: OSTree commit
    objects are big-endian, and ``ostree commit --add-metadata`` stores host order.
    """
    swap = big_endian and sys.byteorder == "little"
    if isinstance(value, GVariantLiteral):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if swap:
            value = struct.unpack("<q", struct.pack(">q", value))[0]
        return f"int64 {value}"
    if isinstance(value, float):
        if swap:
            # A byte-swapped double is often a denormal that GLib's parser rejects.
            raise GVariantTextError(
                f"GVariant text: cannot store the number {value!r} in commit metadata: "
                "expected an integer, or write it as a string"
            )
        return f"double {value!r}"
    if isinstance(value, str):
        return quote_gvariant_string(value)
    if isinstance(value, bytes):
        if not value:
            return "@ay []"
        return "[" + ", ".join(f"byte 0x{b:02x}" for b in value) + "]"
    if isinstance(value, tuple):
        items = [gvariant_text(v, big_endian) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        if not value:
            return f"@{empty_type} []"
        return "[" + ", ".join(gvariant_text(v, big_endian) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "@a{sv} {}"
        entries = (
            f"{quote_gvariant_string(str(k))}: <{gvariant_text(v, big_endian)}>"
            for k, v in value.items()
        )
        return "{" + ", ".join(entries) + "}"
    raise GVariantTextError(
        f"GVariant text: cannot encode a {type(value).__name__}: expected str, bool, int, "
        "float, bytes, list, tuple or dict"
    )


def quote_gvariant_string(text: str) -> str:
    """A single-quoted GVariant string literal for ``text``."""
    out = ["'"]
    for char in text:
        if char in ("\\", "'"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append("'")
    return "".join(out)
