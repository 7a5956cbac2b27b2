"""Error types. Every error deal-chains raises on bad input is a ``DealChainsError``
whose message names the problem (file, line, field, value) so a user can fix it."""

from __future__ import annotations


class DealChainsError(Exception):
    """Base class of every deal-chains error raised for bad input or a failed step."""


class ConfigError(DealChainsError, ValueError):
    """A search configuration value is invalid (unknown strategy, top_k <= 0, ...)."""


class SpecError(DealChainsError, ValueError):
    """A reward spec is invalid. ``errors`` lists every problem found.

    Each problem is a dict with ``file``, ``line``, ``column`` (1-based, or None when
    the spec did not come from text), ``field`` (a dotted path such as
    ``rewards.0.keywords.words``) and ``message``.
    """

    def __init__(self, errors: list[dict] | str, source: str | None = None):
        if isinstance(errors, str):
            errors = [{"file": source, "line": None, "column": None, "field": None, "message": errors}]
        self.errors = errors
        self.source = source
        super().__init__("\n".join(format_spec_problem(e) for e in errors))


def format_spec_problem(problem: dict) -> str:
    """``file:line:column: field: message`` with the parts that are known."""
    where = problem.get("file") or "<spec>"
    if problem.get("line") is not None:
        where += f":{problem['line']}"
        if problem.get("column") is not None:
            where += f":{problem['column']}"
    field = problem.get("field")
    return f"{where}: {field + ': ' if field else ''}{problem['message']}"


class ConstraintError(DealChainsError, ValueError):
    """A grammar or schema the grammar engine refuses, or one a token mask cannot enforce
    soundly (we fail closed: no generation)."""


class ModelLoadError(DealChainsError, RuntimeError):
    """A model could not be loaded (missing package, missing path, wrong model type)."""


class PromptTooLongError(DealChainsError, ValueError):
    """A prompt plus the generation budget does not fit in the model's context window."""


class InputError(DealChainsError, ValueError):
    """An input record or prompt is invalid (empty prompt, bad JSON line, missing file)."""


class RewardError(DealChainsError, RuntimeError):
    """A reward raised or returned something unusable. ``reward`` names it."""

    def __init__(self, reward: str, message: str):
        self.reward = reward
        super().__init__(f"reward {reward!r} failed: {message}")
