"""Narrowing a schema to what the grammar engine and plain ``jsonschema`` agree on, so a
masked output always passes the user's own validation: checked formats as sound patterns,
numeric bounds inside what both accept, decimal ``multipleOf`` as the admissible values.

>>> sound_schema({"type": "string", "format": "date"})[0]["pattern"].startswith("^")
True
"""

from __future__ import annotations

import math
from typing import Any

from deal_chains.errors import ConstraintError
from deal_chains.jsonkit.validate import validator_class
from deal_chains.jsonkit.schema_rewrite import MAX_ABS_NUMBER, NUMERIC_TYPES, int_or
from deal_chains.jsonkit.schema_walk import schema_types, walk_schema
from deal_chains.jsonkit.schema_walk import BOUND_KEYS, EXACT_LIMIT, number_bounds


# Sound patterns for formats that jsonschema's checker checks but llguidance either does
# not know or reads more loosely (its date allows Feb 29 of any year and year 0000, its
# time the leap second 60 that rfc3339-validator refuses, its hostname any length). Each
# is a subset of what the checker accepts: checked by sampling in tests/jsonkit/test_schema_sound.py.
_LABEL = r"[a-zA-Z0-9]{1,20}(?:-[a-zA-Z0-9]{1,20}){0,2}"  # no "--" (idna), <= 62 characters


_HOST = _LABEL + r"(?:\." + _LABEL + r"){0,3}"  # <= 251 characters (fqdn: 253)


_DATE = (r"[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
         r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")  # February to the 28th: valid in every year


_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"


# an absolute URI of plain characters is also a URI reference, an IRI and a URI template
_URI = (r"[a-zA-Z][a-zA-Z0-9+.-]{0,15}://" + _HOST + r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]*)*"
        r"(?:\?[A-Za-z0-9._~=&-]*)?(?:#[A-Za-z0-9._~-]*)?")


_POINTER = r"(?:/(?:[^~/]|~[01])*)*"


# regexes Python's re compiles: literals, classes of plain ranges, single quantifiers, flat groups
_RE_ATOM = r"(?:[A-Za-z0-9 _,;:@%&=<>'!/~-]|\.|\\[dDwWsS.]|\[\^?(?:a-z|A-Z|0-9|[A-Za-z0-9_ .,])+\])"


_RE_QUANT = r"(?:[*+?]|\{[1-9][0-9]?\})?"


_RE_GROUP = r"\((?:" + _RE_ATOM + _RE_QUANT + r")+(?:\|(?:" + _RE_ATOM + _RE_QUANT + r")+)*\)"


FORMAT_PATTERNS = {
    "date": _DATE, "time": _TIME, "date-time": _DATE + "[tT]" + _TIME,
    "hostname": _HOST, "idn-hostname": _HOST,
    "uri": _URI, "uri-reference": _URI, "iri": _URI, "iri-reference": _URI, "uri-template": _URI,
    "json-pointer": _POINTER,
    # jsonschema's checker refuses any digit after a 0 ("10" passes, "100" does not)
    "relative-json-pointer": r"(?:0|[1-9]{1,4}0?)(?:#|" + _POINTER + ")",
    "regex": r"\^?(?:(?:" + _RE_ATOM + "|" + _RE_GROUP + ")" + _RE_QUANT + r")*\$?",
}


# formats llguidance enforces as a subset of what the checker accepts (an e-mail address of
# ASCII characters is also a valid idn-email: the checker only wants an "@")
NATIVE_FORMATS = {"email": "email", "idn-email": "email", "ipv4": "ipv4", "ipv6": "ipv6", "uuid": "uuid",
                  "duration": "duration"}


LLGUIDANCE_FORMATS = {"date", "date-time", "time", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri",
                      "unknown"}


MAX_MULTIPLE_ENUM = 1000  # admissible values listed for a decimal multipleOf


def _sound_format(node: dict, checked: set[str], notes: list[str]) -> dict:
    fmt = node.get("format")
    if not isinstance(fmt, str):
        return node
    if fmt not in checked:
        # jsonschema does not check this format: the engine may enforce it if it knows it,
        # else the string is left free (as jsonschema leaves it)
        if fmt in LLGUIDANCE_FORMATS:
            return node
        notes.append(f"not enforced by the mask: Unknown format: {fmt} (jsonschema does not check it either)")
        return {k: v for k, v in node.items() if k != "format"}
    if fmt in NATIVE_FORMATS:
        return {**node, "format": NATIVE_FORMATS[fmt]}
    pattern = FORMAT_PATTERNS.get(fmt)
    if pattern is None:
        raise ConstraintError(
            f"format {fmt!r} is checked by jsonschema but cannot be enforced by the token mask; "
            "use a pattern instead, or mode: soft")
    out = {k: v for k, v in node.items() if k != "format"}
    anchored = f"^(?:{pattern})$"
    if "pattern" in out:  # both must hold: the engine intersects allOf branches
        out["allOf"] = [*(out.get("allOf") or []), {"pattern": anchored}]
    else:
        out["pattern"] = anchored
    return out


def _just_above(bound: Any, upper: Any) -> float:
    """A float above ``bound`` with a short decimal form (the grammar engine spells a bound
    out digit by digit), close enough to it to cut off at most a millionth of the way to
    ``upper`` (or of the bound's own size, at most 1e-6)."""
    from decimal import ROUND_FLOOR, Decimal

    bound = float(bound)
    width = upper - bound if upper is not None and upper > bound else max(1.0, abs(bound))
    first = min(math.floor(math.log10(width)) - 6, -6)
    exact = Decimal(repr(bound))
    for e in range(first, first + 40):
        step = Decimal(1).scaleb(e)
        candidate = float((exact / step).to_integral_value(rounding=ROUND_FLOOR) * step + step)
        if candidate > bound:
            break
    if not candidate > bound or (upper is not None and candidate > upper):
        candidate = math.nextafter(bound, math.inf)
    return candidate


def _sound_bounds(node: dict, cls: Any) -> dict:
    """llguidance reads numeric bounds more loosely than jsonschema: an exclusive bound lets
    the bound itself through when the other bound is near (``exclusiveMinimum: 0`` with
    ``maximum: 0.5`` accepts ``0``), a decimal longer than a float passes an exclusive bound
    that jsonschema's float comparison refuses (``0.10000000000000000001 > 0.1``), and
    integer bounds are read as 64-bit floats (saturated at the int64 range), so past 2**53
    integers outside them get through. Rewrite the bounds as inclusive ones both agree on:
    an exclusive bound becomes the next float inside it (the next integer where only
    integers are allowed), and bounds are clamped to +-2**53; refuse a range that lies
    wholly past that."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if "enum" in node or "const" in node or not any(k in node for k in BOUND_KEYS):
        return node
    low_in, low_ex, high_in, high_ex = [], [], [], []
    if num(node.get("minimum")):  # draft 4: exclusiveMinimum: true makes minimum exclusive
        (low_ex if node.get("exclusiveMinimum") is True else low_in).append(node["minimum"])
    if num(node.get("maximum")):
        (high_ex if node.get("exclusiveMaximum") is True else high_in).append(node["maximum"])
    if num(node.get("exclusiveMinimum")):
        low_ex.append(node["exclusiveMinimum"])
    if num(node.get("exclusiveMaximum")):
        high_ex.append(node["exclusiveMaximum"])
    if not (low_ex or high_ex or any(abs(v) > EXACT_LIMIT for v in low_in + high_in)):
        return node
    if any(isinstance(v, float) and not math.isfinite(v) for v in low_in + low_ex + high_in + high_ex):
        return node  # not a valid bound: left to the validator
    integer_only = bool(schema_types(node)) and schema_types(node) <= {"integer"}

    lo_in = max(low_in, default=None)
    hi_in = min(high_in, default=None)
    lo_ex = max(low_ex, default=None)
    hi_ex = min(high_ex, default=None)
    far = [v for v in (hi_in, hi_ex) if v is not None]
    near = [v for v in (lo_in, lo_ex) if v is not None]
    if integer_only:
        above = math.floor(lo_ex) + 1 if lo_ex is not None else None
        below = math.ceil(hi_ex) - 1 if hi_ex is not None else None
    else:
        above = _just_above(lo_ex, min(far)) if lo_ex is not None and far else \
            _just_above(lo_ex, None) if lo_ex is not None else None
        below = -_just_above(-hi_ex, -max(near)) if hi_ex is not None and near else \
            -_just_above(-hi_ex, None) if hi_ex is not None else None
    lo = max([v for v in (lo_in, above) if v is not None], default=None)
    hi = min([v for v in (hi_in, below) if v is not None], default=None)
    if (lo is not None and lo > EXACT_LIMIT) or (hi is not None and hi < -EXACT_LIMIT):
        raise ConstraintError(
            f"numeric bounds past +-2**53 ({EXACT_LIMIT}) cannot be enforced exactly by the token "
            "mask (the grammar engine reads them as 64-bit floats); use mode: soft")
    out = {k: v for k, v in node.items() if k not in BOUND_KEYS}
    if lo is not None:
        out["minimum"] = max(lo, -EXACT_LIMIT)
    if hi is not None:
        out["maximum"] = min(hi, EXACT_LIMIT)
    return out


def _sound_multiple_of(node: dict, cls: Any, notes: list[str]) -> dict:
    """jsonschema checks a float ``multipleOf`` in floating point (``0.29 / 0.01`` is
    ``28.999999999999996``: not a multiple) where llguidance checks exact decimals. Keep the
    keyword only where both agree (a dyadic step like 0.5, or an integer one, with values
    that floats hold exactly); otherwise list the values jsonschema accepts as an ``enum``."""
    from decimal import Decimal
    from fractions import Fraction

    step = node.get("multipleOf")
    if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0 or "enum" in node \
            or "const" in node:
        return node
    lo, hi = number_bounds(node)
    out = dict(node)
    exact_step = Fraction(step)
    integer_only = bool(schema_types(node)) and schema_types(node) <= {"integer"}
    if isinstance(step, int) or exact_step == Fraction(Decimal(repr(step))):
        # every decimal multiple of the step is a dyadic rational: exact in a float while
        # its numerator fits 53 bits, so narrow the range to where that holds (integers
        # stay Python ints, exact at any size, when the type allows nothing else)
        if isinstance(step, int) and integer_only:
            return node
        limit = max(1, int(Fraction(EXACT_LIMIT - 1, exact_step.denominator)))
        if lo is None or lo < -limit:
            out["minimum"] = -limit
            out.pop("exclusiveMinimum", None)  # it was below -limit too (or absent)
        if hi is None or hi > limit:
            out["maximum"] = limit
            out.pop("exclusiveMaximum", None)
        return out
    # a decimal step: list its multiples inside the bounds that jsonschema's own check accepts
    dec = Decimal(repr(step))
    lo_f = float(lo) if lo is not None else -float(MAX_ABS_NUMBER)
    hi_f = float(hi) if hi is not None else float(MAX_ABS_NUMBER)
    if lo_f > hi_f:
        return node  # unsatisfiable anyway: the engine says so
    k_lo, k_hi = int(Fraction(lo_f) / exact_step) - 1, int(Fraction(hi_f) / exact_step) + 1
    if k_hi - k_lo + 1 > MAX_MULTIPLE_ENUM:
        # too many to list: the multiples nearest zero (a sound narrowing of the range)
        if k_lo <= 0 <= k_hi:
            k_lo = max(k_lo, -(MAX_MULTIPLE_ENUM // 2))
            k_hi = min(k_hi, k_lo + MAX_MULTIPLE_ENUM - 1)
        elif k_lo > 0:
            k_hi = k_lo + MAX_MULTIPLE_ENUM - 1
        else:
            k_lo = k_hi - MAX_MULTIPLE_ENUM + 1
        notes.append(f"multipleOf {step}: the mask allows the {MAX_MULTIPLE_ENUM} multiples nearest zero "
                     "that jsonschema's floating-point check accepts")
    keys = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
    numeric_types = [t for t in node["type"] if t in NUMERIC_TYPES] if isinstance(node.get("type"), list) \
        else node.get("type")
    check = cls({**{k: node[k] for k in keys if k in node}, **({"type": numeric_types} if numeric_types else {})})
    values: list[Any] = []
    seen: set[Any] = set()
    for k in range(k_lo, k_hi + 1):
        d = dec * k
        v: Any = int(d) if d == d.to_integral_value() else (None if integer_only else float(d))
        if v is not None and v not in seen and check.is_valid(v):
            seen.add(v)
            values.append(v)
    if not values:
        raise ConstraintError(
            f"multipleOf {step}: no number in the schema's range passes jsonschema's floating-point "
            f"multipleOf check (it computes value / {step}), so the mask cannot produce a valid one")
    for k in keys[1:]:
        out.pop(k, None)
    out["enum"] = values
    other = schema_types(node) - NUMERIC_TYPES
    if other:  # the step constrains numbers only: the node's other types stay as they were
        rest = {k: v for k, v in node.items() if k not in keys}
        return {"anyOf": [{**out, "type": numeric_types}, {**rest, "type": sorted(other)}]}
    return out


def sound_schema(schema: Any) -> tuple[Any, list[str]]:
    """``schema`` narrowed where the grammar engine would otherwise accept values that plain
    jsonschema validation rejects (see the comment above), and notes on what the mask leaves
    to validation; raises ``ConstraintError`` for what it cannot enforce soundly."""
    cls = validator_class(schema)
    if cls.__name__ == "Draft3Validator":
        raise ConstraintError(
            "draft-03 schemas cannot be enforced by the token mask (the grammar engine does not "
            "read required: true, divisibleBy, disallow or extends); write the schema in draft-04 "
            "or later, or use mode: soft")
    checked = set(cls.FORMAT_CHECKER.checkers)
    notes: list[str] = []

    def fix(node: dict) -> dict:
        node = _sound_format(node, checked, notes)
        node = _sound_bounds(node, cls)
        node = _sound_multiple_of(node, cls, notes)
        if "uniqueItems" in node:
            if node["uniqueItems"] is True and not int_or(node.get("maxItems"), 2) <= 1:
                raise ConstraintError(
                    "uniqueItems (e.g. a set[...] field) cannot be enforced by the token mask; "
                    "use a list, give the array maxItems: 1, or use mode: soft")
            # false, or at most one item (always unique): nothing to enforce
            node = {k: v for k, v in node.items() if k != "uniqueItems"}
        return node

    out = walk_schema(schema, fix)
    return out, list(dict.fromkeys(notes))
