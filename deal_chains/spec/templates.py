"""``{name}`` templates in spec strings (prompts, reward parameters).

Only bare ``{name}`` placeholders exist: no attribute or index access, no format specs,
no evaluation. ``{{`` and ``}}`` stand for literal braces; any other brace is an error.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

from deal_chains.errors import SpecError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Alternation order matters: escapes first, then a valid placeholder, then a malformed
# one (``{a.b}``, ``{0}``, ``{ x }``), then a stray brace.
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + _NAME + r")\}|(\{[^{}\n]*\})|([{}])")


class Placeholder(NamedTuple):
    """A ``{name}`` in a parsed template."""

    name: str


class MissingVariable(KeyError):
    """A template names a variable that was not given."""

    def __init__(self, name: str, available: Mapping[str, Any]):
        super().__init__(name)
        self.name = name
        self.message = missing_variable_message(name, available)

    def __str__(self) -> str:
        return self.message


def missing_variable_message(name: str, available: Mapping[str, Any]) -> str:
    """The message for an unset template variable, listing those that are set."""
    names = ", ".join(sorted(map(str, available))) or "none were given"
    return f"template variable {{{name}}} is not set (available variables: {names})"


def parse_template(text: str) -> list[str | Placeholder]:
    """Split ``text`` into literal strings and placeholders; ValueError on bad braces.

    >>> parse_template("Use {words} {{literally}}")
    ['Use ', Placeholder(name='words'), ' ', '{', 'literally', '}']
    """
    parts: list[str | Placeholder] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            parts.append(text[pos:match.start()])
        pos = match.end()
        token = match.group(0)
        if match.group(1):
            parts.append(Placeholder(match.group(1)))
        elif match.group(2):
            raise ValueError(
                f"invalid placeholder {token!r}: only {{name}} placeholders are supported "
                "(letters, digits and _; write '{{' and '}}' for literal braces)"
            )
        elif match.group(3):
            raise ValueError(
                f"stray {token!r} at position {match.start()}: write "
                f"{token * 2!r} for a literal brace or use a {{name}} placeholder"
            )
        else:
            parts.append(token[0])  # "{{" -> "{", "}}" -> "}"
    if pos < len(text):
        parts.append(text[pos:])
    return parts


def check_template(text: str) -> str:
    """Return ``text`` unchanged if its placeholders are well formed, else ValueError.

    >>> check_template("Write about {topic}.")
    'Write about {topic}.'
    """
    parse_template(text)
    return text


def template_variables(value: Any) -> set[str]:
    """The placeholder names used in a string or (nested) list of strings.

    >>> sorted(template_variables(["{a} and {b}", "{{c}}"]))
    ['a', 'b']
    """
    if isinstance(value, str):
        return {p.name for p in parse_template(value) if isinstance(p, Placeholder)}
    if isinstance(value, (list, tuple)):
        return set().union(*(template_variables(v) for v in value)) if value else set()
    return set()


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def render_value(value: Any, variables: Mapping[str, Any]) -> Any:
    """Like ``render_template`` but raises ``MissingVariable`` (for callers that add
    their own field path and source line to the error)."""
    if isinstance(value, (list, tuple)):
        return [render_value(v, variables) for v in value]
    if not isinstance(value, str):
        return value
    parts = parse_template(value)
    if len(parts) == 1 and isinstance(parts[0], Placeholder):
        name = parts[0].name
        if name not in variables:
            raise MissingVariable(name, variables)
        found = variables[name]
        return list(found) if isinstance(found, (list, tuple)) else _as_text(found)
    out = []
    for part in parts:
        if isinstance(part, Placeholder):
            if part.name not in variables:
                raise MissingVariable(part.name, variables)
            out.append(_as_text(variables[part.name]))
        else:
            out.append(part)
    return "".join(out)


def render_template(value: Any, variables: Mapping[str, Any], *, field: str | None = None) -> Any:
    """Fill ``{name}`` placeholders in a string, or element-wise in a list of strings.

    >>> render_template("Use: {concepts}.", {"concepts": ["dog", "cat"]})
    'Use: dog, cat.'
    >>> render_template("{concepts}", {"concepts": ["dog", "cat"]})
    ['dog', 'cat']

    A string that is exactly one placeholder of a list variable gives the list itself;
    inside a longer string a list is joined with ", " and other values are ``str()``'d.
    Values that are not strings or lists are returned unchanged. A missing variable
    raises ``SpecError`` naming ``field`` (when given) and the variables that are set.
    """
    try:
        return render_value(value, variables)
    except MissingVariable as exc:
        raise SpecError(
            [{"file": None, "line": None, "column": None, "field": field, "message": exc.message}]
        ) from None
    except ValueError as exc:
        raise SpecError(
            [{"file": None, "line": None, "column": None, "field": field, "message": str(exc)}]
        ) from None


def render_text(value: str, variables: Mapping[str, Any]) -> str:
    """Render a template to one string (a lone list placeholder is joined with ", ").

    >>> render_text("{concepts}", {"concepts": ["a", "b"]})
    'a, b'
    """
    return _as_text(render_value(value, variables))


def split_words(text: str) -> list[str]:
    """Split a word list given as one string: on commas, or on whitespace if it has none.

    >>> split_words("dog, hot dog ,cat")
    ['dog', 'hot dog', 'cat']
    >>> split_words("dog cat")
    ['dog', 'cat']
    """
    pieces = text.split(",") if "," in text else text.split()
    return [p.strip() for p in pieces if p.strip()]
