"""RE2 patterns: linear-time matching for schema ``pattern``s and the regex reward, never a
backtracking engine.

>>> compile_re2(r"^[a-z]+$").search(b"abc") is not None
True
"""

from __future__ import annotations

import re2

_SYNTAX_URL = "https://github.com/google/re2/wiki/Syntax"


def compile_re2(pattern: str, ignore_case: bool = False, field: str = "pattern"):
    """Compile ``pattern`` with RE2, or raise ValueError naming it and saying why."""
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        hint = " (RE2 writes end-of-text as \\z, not \\Z)" if "\\Z" in pattern else ""
        raise ValueError(
            f"{field} {pattern!r} cannot be compiled: {reason}{hint}. Patterns must use "
            f"RE2 syntax, which has no backreferences or lookaround so matching runs in linear "
            f"time; see {_SYNTAX_URL}"
        ) from None
