"""JSON Schema reward: scores JSON *prefixes* (so the search can steer while the object is
being written) and validates finished text with ``jsonschema``.

>>> r = JsonSchemaReward({"type": "object", "properties": {"n": {"type": "integer"}},
...                       "required": ["n"]})
>>> r.score(['{"n": 3}', '{"n": "x"}', '{"n": ', 'hello'], None)
[1.0, 0.15, 0.9, 0.0]

Scores: a finished, valid document 1.0; a valid JSON prefix 0.5 + 0.4 / (1 + schema errors of the part
written so far, missing properties not counted); a complete document that violates the schema
0.3 / (1 + errors); complete JSON followed by other text 0.2; anything that can no longer
become JSON 0.0. ``mode: hard`` in a spec also adds a token mask (see deal_chains' grammar
constraints) so the output always parses and validates; this reward then ranks what the
mask allows and reports the final validation.

Only refs inside the document (``#/...``, ``#anchor``, its own ``$id``) are allowed and
every one is resolved when the reward is built; nothing is ever fetched. ``pattern`` and
``patternProperties`` are matched with RE2 (linear time, see rewards.regex), so a pattern
RE2 cannot compile (lookaround, backreferences) is refused when the reward is built. An
object that repeats a key counts as invalid (``json.loads`` would silently keep one).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

from deal_chains.jsonkit.lexer import loads_with_repeats, scan_prefix
from deal_chains.jsonkit.validate import make_validator, prefix_schema
from rewards.base import BaseReward, RewardContext

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?|\n?\s*```\s*$", re.IGNORECASE)


class JsonSchemaReward(BaseReward):
    """Reward JSON that is valid against ``schema`` (see the module docstring for scores).

    ``strip_fences`` accepts a Markdown code fence around the JSON (models like to add one).
    """

    def __init__(self, schema: Mapping[str, Any] | bool, *, strip_fences: bool = True, weight: float = 1.0,
                 name: str = "json_schema", terminal: bool = False):
        self.schema = schema
        self.validator = make_validator(schema)
        # prefixes are checked against the schema less what only a finished document can
        # satisfy (built once; its refs and patterns were checked with the schema's)
        self._prefix_validator = type(self.validator)(prefix_schema(schema),
                                                      format_checker=self.validator.format_checker)
        self.strip_fences = strip_fences
        self.weight = float(weight)
        self.name = name
        self.terminal = terminal
        self._cache: dict[str, float] = {}

    def errors(self, value: Any, *, ignore_required: bool = False) -> list[str]:
        """The schema's complaints about ``value``; with ``ignore_required``, only those a
        continuation could not fix (``value`` is a prefix cut back to complete values)."""
        validator = self._prefix_validator if ignore_required else self.validator
        try:
            return [err.message for err in validator.iter_errors(value)]
        except RecursionError:
            return ["the value nests too deeply to validate"]

    def text_errors(self, text: str) -> list[str] | None:
        """None if ``text`` (fences stripped) is not one JSON document, else what makes it
        invalid: the schema's errors and any key an object repeats ([] = valid)."""
        try:
            value, repeated = loads_with_repeats(self._clean(text))
        except (json.JSONDecodeError, RecursionError):
            return None
        return self.errors(value) + [f"duplicate key {k!r}" for k in repeated]

    def is_valid(self, text: str) -> bool:
        """Does ``text`` parse as one JSON document valid against the schema (with no
        repeated keys)?"""
        return self.text_errors(text) == []

    def _clean(self, text: str) -> str:
        return _FENCE.sub("", text) if self.strip_fences else text

    def _score_one(self, text: str) -> float:
        body = self._clean(text)
        valid_prefix, complete, closed, end = scan_prefix(body)
        if not valid_prefix:
            return 0.0
        if complete:
            try:
                value, repeated = loads_with_repeats(body[:end])
            except (json.JSONDecodeError, RecursionError):
                return 0.0
            if body[end:].strip():
                return 0.2
            n_errors = len(self.errors(value)) + len(repeated)
            return 1.0 if not n_errors else round(0.3 / (1 + n_errors), 6)
        if closed is None:
            return 0.5
        try:
            partial, repeated = loads_with_repeats(closed)
        except (json.JSONDecodeError, RecursionError):
            return 0.5
        n_errors = len(self.errors(partial, ignore_required=True)) + len(repeated)
        return round(0.5 + 0.4 / (1 + n_errors), 6)

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        out = []
        for t in texts:
            v = self._cache.get(t)
            if v is None:
                v = self._score_one(t)
                if len(self._cache) < 20_000:
                    self._cache[t] = v
            out.append(v)
        return out
