"""What rewards score when the answer is a JSON envelope: its content, not its keys."""

from __future__ import annotations

from typing import Any, Callable, Sequence


class ContentView:
    """A reward that scores the content of a JSON answer (``json_content``) rather than its
    raw text.

    Under a JSON constraint (tools, structured output, DSPy's JSON adapter) the text is an
    envelope: keywords would match its keys, a length reward would count its punctuation.
    Wrapped rewards see the string values and numbers instead, as the search extends the
    JSON; everything else (name, weight, bounds, terminal) is the wrapped reward's.
    ``json_schema`` rewards are never wrapped: they judge the JSON itself."""

    def __init__(self, reward: Any, view: Callable[[str], str]):
        self._reward, self._view = reward, view

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reward, name)

    def score(self, texts: Sequence[str], context: Any) -> list[float]:
        return self._reward.score([self._view(t) for t in texts], context)

    def settled(self, text: str, context: Any) -> bool:
        fn = getattr(self._reward, "settled", None)
        return bool(fn(self._view(text), context)) if fn is not None else False

    def __repr__(self) -> str:
        return f"ContentView({self._reward!r})"


def content_view(rewards: Sequence[Any], view: Callable[[str], str]) -> list[Any]:
    """``rewards`` with every reward but ``json_schema`` ones wrapped in ``ContentView``."""
    from rewards.json_schema import JsonSchemaReward

    def judges_json(reward: Any) -> bool:
        inner = getattr(reward, "reward", None)  # a rewards.guard.Guarded wraps the reward
        return isinstance(reward, JsonSchemaReward) or isinstance(inner, JsonSchemaReward)

    return [r if judges_json(r) else ContentView(r, view) for r in rewards]
