"""``SearchConfig``: the one validated set of search knobs (DESIGN §1)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deal_chains.errors import ConfigError

Strategy = Literal["greedy", "sample", "best_of_n", "rerank", "deal"]
STRATEGIES: tuple[str, ...] = ("greedy", "sample", "best_of_n", "rerank", "deal")


class SearchConfig(BaseModel):
    """How to decode.

    >>> SearchConfig(strategy="deal", top_k=8, lookahead=8, beam=2, lam=8.0).commit_tokens
    8

    ``commit`` defaults to ``lookahead`` (blockwise commit, the fast setting); ``commit=1``
    is the paper's exact rule (one token committed per lookahead). The defaults were
    tuned on CommonGen dev with the default model (README, Benchmark): ``lam`` is large
    because rewards live in [0, 1] while log-probabilities differ by several nats.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: Strategy = "deal"
    top_k: int = Field(6, ge=1, le=256, description="candidate next tokens per beam")
    lookahead: int = Field(4, ge=0, le=128, description="greedy tokens rolled out after each candidate")
    beam: int = Field(2, ge=1, le=64, description="live beams kept per prompt")
    lam: float = Field(24.0, ge=0.0, allow_inf_nan=False,
                       description="weight of the reward against the log-probability")
    commit: int | None = Field(
        None, ge=1, le=128,
        description="tokens committed per step; default = lookahead (blockwise); 1 = paper-exact",
    )
    max_new_tokens: int = Field(48, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="0 = deterministic; >0 samples")
    seed: int = Field(0, ge=0)
    n: int = Field(4, ge=1, le=256, description="samples for best_of_n / hypotheses for rerank")
    prune: bool = Field(
        True,
        description="drop candidates that cannot enter the top beams whatever the reward says",
    )
    adaptive: bool = Field(
        True,
        description="fall back to greedy steps for a beam whose rewards are all settled",
    )

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        if self.strategy == "sample" and self.temperature == 0.0:
            # sampling at temperature 0 is greedy; say so instead of silently doing greedy
            raise ValueError("strategy 'sample' needs temperature > 0")
        if self.commit is not None and self.strategy == "deal" and self.commit > max(self.lookahead, 1):
            raise ValueError(
                f"commit ({self.commit}) cannot exceed lookahead ({self.lookahead}): "
                "only looked-ahead tokens can be committed"
            )
        return self

    @property
    def commit_tokens(self) -> int:
        """Tokens committed per search step."""
        if self.commit is not None:
            return self.commit
        return max(self.lookahead, 1)

    @classmethod
    def build(cls, **values: Any) -> "SearchConfig":
        """Validate ``values`` and raise ``ConfigError`` naming each bad field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix="search")) from None

    def updated(self, **changes: Any) -> "SearchConfig":
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        merged = self.model_dump()
        merged.update({k: v for k, v in changes.items() if v is not None})
        return SearchConfig.build(**merged)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        value = err.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict) and err["type"] != "missing" else ""
        lines.append(f"{field}: {err['msg']}{shown}")
    return "invalid search config: " + "; ".join(lines)
