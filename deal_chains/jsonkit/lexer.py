"""One incremental JSON lexer: the single place that decides "inside a string", "keys seen",
"complete" and "where and why it broke" for JSON text, whole or a prefix of it.

>>> lx = JsonLexer().feed('{"a": [1, "x"')
>>> lx.ok, lx.complete, lx.depth, lx.in_string
(True, False, 2, False)
>>> lx.feed(']}').complete
True
>>> JsonLexer().feed('{"a": 1} extra').error
(9, 'extra text after the JSON value')

A lexer can be fed in pieces (one model token at a time) and ``copy()``-ed cheaply, so the
search keeps one per row; feeding costs O(new characters). Built on it: ``scan_prefix``
(can this prefix still become JSON? the part written so far, closed, for prefix
validation), ``json_content`` (the string and number values, for rewards that score what an
answer says rather than its keys) and ``decode_string_prefix`` (the complete characters of
a string body being streamed).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Sequence

_WHITESPACE = " \t\r\n"
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_LITERALS = ("true", "false", "null")
_SIMPLE_ESCAPES = frozenset('"\\/bfnrt')
_HEX = frozenset("0123456789abcdefABCDEF")
# a run of string characters that need no decision (no quote, backslash or control character)
_PLAIN_RUN = re.compile(r'[^"\\\x00-\x1f]+')
# what the lexer expects next, outside a string and a scalar
VALUE, KEY_OR_END, KEY, COLON, COMMA_OR_END, VALUE_OR_END, DONE = (
    "value", "key_or_end", "key", "colon", "comma_or_end", "value_or_end", "done")


@lru_cache(maxsize=4096)
def _number_prefix(token: str) -> bool:
    return re.fullmatch(r"-?(0|[1-9]\d*)?(\.\d*)?([eE][+-]?\d*)?", token) is not None


@lru_cache(maxsize=4096)
def _is_number(token: str) -> bool:
    return re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?", token) is not None


class JsonLexer:
    """Where a JSON text stands after the characters fed so far.

    ``frames``: the open containers, innermost last, each ``(kind, keys)`` — ``"{"`` with the
    (decoded) keys the object has so far, or ``"["``; ``expect``: what may come next;
    ``in_string`` / ``in_key``: inside a string (a key); ``complete``: one whole top-level
    value is there (``value_end`` is where it ends); ``error``: ``(position, reason)`` where
    the text stopped being the start of a JSON document (nothing more is read after it).
    ``repeated_key`` says whether the last ``feed`` closed a key its object already had.
    With ``collect=True``, ``values`` gathers ``(top-level key or None, depth, text)`` for
    every string and number value, in order (literals and keys left out), and
    ``partial_string()`` reads the string being written; without it only keys are decoded,
    so the per-token mask path pays O(new characters), however long a string value grows.
    """

    __slots__ = ("frames", "expect", "in_string", "in_key", "escape", "high_surrogate", "raw", "scalar", "pos",
                 "error", "value_end", "cut", "cut_kinds", "repeated_key", "root_keys", "top_key", "values")

    def __init__(self, collect: bool = False):
        self.frames: list[tuple[str, frozenset]] = []
        self.expect = VALUE
        self.in_string = self.in_key = False
        self.escape = 0  # 0 none, 1 after a backslash, 2-5: hex digits of a \u escape read + 2
        # the last complete character of the string is a \u escape of a high surrogate (its
        # low half may still follow, so a partial read leaves it out)
        self.high_surrogate = False
        self.raw = ""  # the raw text of the string being read (keys, or everything with collect)
        self.scalar = ""  # a number or literal being read
        self.pos = 0
        self.error: tuple[int, str] | None = None
        self.value_end: int | None = None
        # the end of the last complete value inside a container, and the containers open there
        self.cut: int | None = None
        self.cut_kinds: tuple[str, ...] = ()
        self.repeated_key = False
        self.root_keys: frozenset = frozenset()  # the keys of the top-level object so far
        self.top_key: str | None = None  # the current key of the top-level object
        self.values: list[tuple[str | None, int, str]] | None = [] if collect else None

    # ---- state

    @property
    def ok(self) -> bool:
        """No error so far: some continuation can still make the text one JSON document."""
        return self.error is None

    @property
    def complete(self) -> bool:
        """One whole top-level value has been read (a number still being read at the top
        level counts only once something ends it; see ``could_end``)."""
        return self.value_end is not None

    @property
    def could_end(self) -> bool:
        """Whether the text, ended here, is one whole JSON document (also a top-level number
        or literal that more characters could still extend)."""
        if self.error is not None:
            return False
        return self.complete or (not self.frames and not self.in_string and self._scalar_whole())

    @property
    def depth(self) -> int:
        """Open objects and arrays."""
        return len(self.frames)

    def copy(self) -> "JsonLexer":
        new = JsonLexer.__new__(JsonLexer)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))
        new.frames = list(self.frames)
        new.values = None if self.values is None else list(self.values)
        return new

    def partial_string(self) -> str:
        """The complete characters of the string being read (``""`` outside one; needs
        ``collect=True``): an unfinished escape is left out, and so is a high surrogate
        whose low half may still come."""
        if not self.in_string:
            return ""
        cut = self.escape + (6 if self.high_surrogate else 0)
        return json.loads('"' + self.raw[:len(self.raw) - cut] + '"')

    def string_so_far(self) -> str | None:
        """For a lexer fed a top-level string from its opening quote (and perhaps text after
        it, which is not read as part of it): the string's complete characters so far, the
        whole string once closed, None if it is broken (``collect=True`` lexers only)."""
        if self.complete:
            return self.values[0][2] if self.values else ""
        return self.partial_string() if self.ok else None

    # ---- reading

    def feed(self, text: str) -> "JsonLexer":
        """Read ``text`` (the next characters); returns ``self``."""
        self.repeated_key = False
        start, i, n = self.pos, 0, len(text)
        while i < n and self.error is None:
            self.pos = start + i
            ch = text[i]
            if self.in_string:
                if self.escape == 0 and (run := _PLAIN_RUN.match(text, i)) is not None:
                    # ordinary characters: taken as one run (kept only where someone reads them)
                    if self._keeps_text():
                        self.raw += run.group()
                    self.high_surrogate = False
                    i = run.end()
                    continue
                self._string_char(ch)
            elif self.scalar and (ch in _NUMBER_CHARS or ch.isalpha()):
                self._scalar_char(ch)
            else:
                if self.scalar:
                    self._end_scalar()
                    if self.error is not None:
                        break
                self._structural(ch)
            i += 1
        if self.error is None:
            self.pos = start + n
        return self

    def _fail(self, reason: str) -> None:
        self.error = (self.pos, reason)

    def _keeps_text(self) -> bool:
        """Whether the string being read is kept: a key (for ``repeated_key``), or any
        string when collecting."""
        return self.in_key or self.values is not None

    def _string_char(self, ch: str) -> None:
        """A quote, a backslash, a control character or a character of an escape."""
        esc = self.escape
        if esc == 0:
            if ch == '"':
                self._end_string()
                return
            if ch == "\\":
                self.escape = 1
            else:
                self._fail("a control character inside a string")
                return
        elif esc == 1:
            if ch in _SIMPLE_ESCAPES:
                self.escape, self.high_surrogate = 0, False
            elif ch == "u":
                self.escape = 2
            else:
                self._fail(f"an invalid escape \\{ch}")
                return
        elif ch not in _HEX:
            self._fail("an invalid \\u escape")
            return
        elif esc < 5:
            self.escape = esc + 1
        else:
            self.escape = 0
        if self._keeps_text():
            self.raw += ch
            if esc == 5:  # raw ends with a whole \\uXXXX escape
                self.high_surrogate = 0xD800 <= int(self.raw[-4:], 16) < 0xDC00

    def _end_string(self) -> None:
        self.in_string = self.high_surrogate = False
        text = json.loads('"' + self.raw + '"') if self._keeps_text() else ""
        self.raw = ""
        if self.in_key:
            self.in_key = False
            kind, keys = self.frames[-1]
            self.repeated_key = self.repeated_key or text in keys
            self.frames[-1] = (kind, keys | {text})
            if len(self.frames) == 1:
                self.top_key, self.root_keys = text, self.frames[0][1]
            self.expect = COLON
        else:
            self._collect(text)
            self._value_done(self.pos + 1)

    def _scalar_char(self, ch: str) -> None:
        token = self.scalar + ch
        if token[0] in "-0123456789":
            ok = ch in _NUMBER_CHARS and _number_prefix(token)
        else:
            ok = ch.isalpha() and any(lit.startswith(token) for lit in _LITERALS)
        if ok:
            self.scalar = token
        else:
            self._fail(f"{token!r} cannot start a JSON value")

    def _scalar_whole(self) -> bool:
        s = self.scalar
        return bool(s) and (s in _LITERALS or _is_number(s))

    def _end_scalar(self) -> None:
        if not self._scalar_whole():
            self._fail(f"{self.scalar!r} is not a JSON value")
            return
        if self.scalar not in _LITERALS:
            self._collect(self.scalar)
        self.scalar = ""
        self._value_done(self.pos)

    def _collect(self, text: str) -> None:
        if self.values is not None:
            self.values.append((self.top_key if len(self.frames) == 1 else None, len(self.frames), text))

    def _value_done(self, end: int) -> None:
        if self.frames:
            self.expect = COMMA_OR_END
            self.cut, self.cut_kinds = end, tuple(k for k, _ in self.frames)
        else:
            self.expect = DONE
            self.value_end = end

    def _structural(self, ch: str) -> None:
        if ch in _WHITESPACE:
            return
        expect = self.expect
        if expect == DONE:
            self._fail(_EXTRA)
        elif ch == '"':
            if expect in (KEY_OR_END, KEY):
                self.in_key = True
            elif expect not in (VALUE, VALUE_OR_END):
                self._fail(f"a string where {_WANTS[expect]} was expected")
                return
            self.in_string, self.raw = True, ""
        elif ch in "{[":
            if expect not in (VALUE, VALUE_OR_END):
                self._fail(f"{ch!r} where {_WANTS[expect]} was expected")
                return
            self.frames.append((ch, frozenset()))
            self.expect = KEY_OR_END if ch == "{" else VALUE_OR_END
        elif ch in "}]":
            want = "{" if ch == "}" else "["
            if not self.frames or self.frames[-1][0] != want or \
                    expect not in (COMMA_OR_END, KEY_OR_END if ch == "}" else VALUE_OR_END):
                self._fail(f"{ch!r} where {_WANTS[expect]} was expected")
                return
            self.frames.pop()
            self._value_done(self.pos + 1)
        elif ch == ":":
            if expect != COLON:
                self._fail(f"':' where {_WANTS[expect]} was expected")
                return
            self.expect = VALUE
        elif ch == ",":
            if expect != COMMA_OR_END:
                self._fail(f"',' where {_WANTS[expect]} was expected")
                return
            self.expect = KEY if self.frames[-1][0] == "{" else VALUE
        elif expect in (VALUE, VALUE_OR_END) and ch in "-0123456789tfn":
            self.scalar = ch
        else:
            self._fail(f"{ch!r} where {_WANTS[expect]} was expected")


_EXTRA = "extra text after the JSON value"
_WANTS = {VALUE: "a value", KEY_OR_END: "a key or '}'", KEY: "a key", COLON: "':'",
          COMMA_OR_END: "',' or the end of the container", VALUE_OR_END: "a value or ']'", DONE: "nothing"}


def lex(text: str, *, collect: bool = False) -> JsonLexer:
    """A lexer that has read ``text``."""
    return JsonLexer(collect=collect).feed(text)


def scan_prefix(text: str) -> tuple[bool, bool, str | None, int]:
    """Read ``text`` as the beginning of one JSON document.

    Returns ``(valid_prefix, complete, closed, end)``: whether some continuation could still
    make it JSON; whether a whole document is already there (``end``: where the text after
    it starts, or ``len(text)``); and ``closed`` — the prefix cut back to its last complete
    value with every open container closed, so a partial object can be checked against a
    schema (None when there is nothing to close).

    >>> scan_prefix('{"a": 1, "b": [2, "x')
    (True, False, '{"a": 1, "b": [2]}', 20)
    """
    lx = lex(text)
    if lx.complete or lx.could_end:  # (complete: perhaps with other text after it)
        end = lx.value_end if lx.value_end is not None else len(text)
        rest = text[end:]
        return True, True, None, (end + len(rest) - len(rest.lstrip(_WHITESPACE)) if rest.strip(_WHITESPACE)
                                  else len(text))
    if not lx.ok:
        return False, False, None, lx.error[0]
    closed = None
    if lx.cut is not None:
        closed = text[:lx.cut] + _closers(lx.cut_kinds)
    elif lx.frames:
        # no value is complete yet: the outermost container, empty (``{"a": [`` -> ``{}``)
        closed = lx.frames[0][0] + _closers(lx.frames[0][0])
    return True, False, closed, len(text)


def _closers(kinds: Sequence[str]) -> str:
    return "".join("}" if k == "{" else "]" for k in reversed(kinds))


def json_content(text: str, skip_keys: Sequence[str] = ()) -> str:
    """The content of a JSON text, or of the prefix of one: its string values and numbers
    in order, one per line (keys, punctuation, ``true``/``false``/``null`` and empty strings
    left out); an unfinished value at the end counts as far as it goes.

    >>> json_content('{"city": "Paris", "answer": "It is sunny", "n": 2, "ok": true}')
    'Paris\\nIt is sunny\\n2'
    >>> json_content('{"name":"get_weather","arguments":{"city":"Par', skip_keys=["name"])
    'Par'

    ``skip_keys``: top-level keys whose values are not content (a tool call's ``name``).
    Text that does not start as JSON is returned unchanged."""
    body = text.lstrip()
    if not body or body[0] not in '{["':
        return text
    lx = lex(body, collect=True)
    skip = set(skip_keys)
    values = list(lx.values or ())
    if lx.ok and lx.in_string and not lx.in_key:
        values.append((lx.top_key if lx.depth == 1 else None, lx.depth, lx.partial_string()))
    elif lx.ok and lx.scalar and lx.scalar[0] not in "tfn":
        values.append((lx.top_key if lx.depth == 1 else None, lx.depth, lx.scalar))
    return "\n".join(_well_formed(v) for key, depth, v in values if v and not (depth == 1 and key in skip))


def _well_formed(text: str) -> str:
    """``text`` with lone surrogates (``"\\ud800"`` decodes to one) as U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def decode_string_prefix(body: str) -> str | None:
    """The decoded text of the complete characters at the start of a JSON string body (the
    text after its opening quote), up to its closing quote; None if the string is broken (an
    invalid escape, a control character).

    >>> decode_string_prefix('It is sun')
    'It is sun'
    >>> decode_string_prefix('a\\\\u00e9b", "next": 1')
    'aéb'
    >>> decode_string_prefix('half an escape \\\\u00')
    'half an escape '
    """
    return JsonLexer(collect=True).feed('"' + body).string_so_far()


def loads_with_repeats(text: str) -> tuple[Any, list[str]]:
    """``json.loads`` plus the keys an object repeats (json.loads keeps the last silently, so
    ``{"x": 1, "x": 2}`` would pass ``minProperties: 2`` checks on the text's behalf)."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                repeated.append(k)
            out[k] = v
        return out

    return json.loads(text, object_pairs_hook=pairs), repeated
