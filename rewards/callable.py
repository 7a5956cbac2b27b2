"""Rewards from plain Python functions, and reward plugins installed as entry points.

>>> from rewards.callable import CallableReward
>>> def shortness(text):
...     return 1.0 / (1 + len(text.split()))
>>> r = CallableReward(shortness)
>>> r.name, r.score(["one", "one two three"], None)
('shortness', [0.5, 0.25])
>>> def mentions_name(text, context):
...     return float(context.variables["name"] in text)
>>> from rewards.base import RewardContext
>>> CallableReward(mentions_name).score(["Hi Ada", "Hi"], RewardContext(variables={"name": "Ada"}))
[1.0, 0.0]

Plugins are installed packages that declare an entry point in the group
``deal_chains.rewards``, e.g. in their ``pyproject.toml``::

    [project.entry-points."deal_chains.rewards"]
    toxicity = "acme_rewards.toxicity:ToxicityReward"

``load_plugin("toxicity", {"threshold": 0.5})`` then builds that reward. A plugin is found
only by its entry-point name among installed distributions: a spec names a plugin, it
never carries code or an import path, and nothing else is ever imported by name.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import math
import numbers
from importlib import metadata
from typing import Any, Callable, Mapping, Sequence

from rewards.base import BaseReward, RewardContext

PLUGIN_GROUP = "deal_chains.rewards"
_CONTEXT_NAMES = ("context", "ctx")


def _describe(fn: Any) -> str:
    """A readable name for ``fn`` in error messages."""
    if isinstance(fn, functools.partial):
        return f"partial({_describe(fn.func)})"
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _takes_context(fn: Callable[..., Any], what: str) -> bool:
    """Whether to call ``fn(x, context)`` rather than ``fn(x)``.

    Two required positional parameters -> with context; one (or none, or ``*args``) ->
    without, unless the second positional parameter is named ``context`` or ``ctx``.
    Raises TypeError when ``fn`` cannot be called either way.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: assume fn(x)
        return False
    params = list(sig.parameters.values())
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    required_kwonly = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    name = _describe(fn)
    if required_kwonly:
        raise TypeError(
            f"CallableReward: {name} has required keyword-only parameters {required_kwonly}; "
            f"it must be callable as {name}({what}) or {name}({what}, context)"
        )
    if len(required) > 2:
        raise TypeError(
            f"CallableReward: {name} needs {len(required)} positional arguments; "
            f"it must be callable as {name}({what}) or {name}({what}, context)"
        )
    if not positional and not has_varargs:
        raise TypeError(f"CallableReward: {name} takes no positional parameter for the {what}")
    if len(required) == 2:
        return True
    return len(positional) >= 2 and positional[1].name in _CONTEXT_NAMES


def _to_float(value: Any, fn_name: str, where: str) -> float:
    if isinstance(value, numbers.Real):  # bool, int, float, numpy scalars, Fraction
        return float(value)
    if not isinstance(value, (str, bytes)) and hasattr(type(value), "__float__"):
        try:  # Decimal, 0-d tensors and arrays
            return float(value)
        except Exception:  # noqa: BLE001 - reported below as a type problem
            pass
    raise TypeError(
        f"CallableReward: {fn_name} returned {type(value).__name__} {value!r:.80}{where}; "
        "a reward function must return a number"
    )


class CallableReward(BaseReward):
    """A reward from a Python function.

    >>> r = CallableReward(lambda texts, context: [len(t) / 10 for t in texts],
    ...                    name="chars", batched=True)
    >>> r.score(["abc", "abcde"], None)
    [0.3, 0.5]

    - ``batched=False`` (default): ``fn(text)`` or ``fn(text, context)`` is called once
      per text and returns a number. Which one is decided from ``fn``'s signature: two
      required positional parameters, or a second one named ``context``/``ctx``, get
      the :class:`RewardContext`.
    - ``batched=True``: ``fn(texts, context)`` (or ``fn(texts)``) returns one number
      per text, in order.

    Booleans count as 1.0 / 0.0. A result that is not a number raises TypeError naming
    the function. ``name`` defaults to the function's ``__name__``; ``bounds`` is the
    (min, max) the function can return (the search prunes with it, and scores
    unfinished text with its max when ``terminal``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        weight: float = 1.0,
        terminal: bool = False,
        batched: bool = False,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallableReward: fn must be callable, got {type(fn).__name__}")
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"CallableReward: bounds must be two numbers (min, max), got {bounds!r}") from None
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(f"CallableReward: bounds must be (min, max) with min <= max, got {bounds!r}")
        self.fn = fn
        self.batched = bool(batched)
        self._fn_name = _describe(fn)
        self._with_context = _takes_context(fn, "texts" if self.batched else "text")
        if name is None:
            name = getattr(fn, "__name__", None) or self._fn_name
        self.name = str(name)
        self.weight = float(weight)
        self.terminal = bool(terminal)
        self.bounds = (lo, hi)

    def _call(self, arg: Any, context: RewardContext) -> Any:
        return self.fn(arg, context) if self._with_context else self.fn(arg)

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        context = context if context is not None else RewardContext()
        texts = list(texts)
        if not self.batched:
            return [
                _to_float(self._call(t, context), self._fn_name, f" for text {i}")
                for i, t in enumerate(texts)
            ]
        values = self._call(texts, context)
        if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
            raise TypeError(
                f"CallableReward: batched {self._fn_name} returned {type(values).__name__}; "
                "it must return a list with one number per text"
            )
        out = [_to_float(v, self._fn_name, f" at index {i}") for i, v in enumerate(values)]
        if len(out) != len(texts):
            raise ValueError(
                f"CallableReward: batched {self._fn_name} returned {len(out)} scores for {len(texts)} texts"
            )
        return out

    def __repr__(self) -> str:
        return f"CallableReward({self._fn_name}, name={self.name!r}, weight={self.weight})"


# -------------------------------------------------------------------------------- plugins


class UnknownPluginError(KeyError):
    """No installed reward plugin has the requested name (a KeyError, so a LookupError)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=PLUGIN_GROUP))


def available_plugins() -> list[str]:
    """Names of the installed reward plugins (entry points in ``deal_chains.rewards``), sorted."""
    return sorted({ep.name for ep in _entry_points()})


def _find(name: str) -> metadata.EntryPoint:
    matches = [ep for ep in _entry_points() if ep.name == name]
    values = sorted({ep.value for ep in matches})
    if len(values) > 1:
        raise LookupError(
            f"reward plugin {name!r} is declared by several installed packages ({', '.join(values)}); "
            "uninstall all but one"
        )
    if matches:
        return matches[0]
    installed = available_plugins()
    if installed:
        msg = f"unknown reward plugin {name!r}; installed plugins: {', '.join(installed)}"
    else:
        msg = (
            f"unknown reward plugin {name!r}: no reward plugins are installed "
            f"(a plugin is a package with an entry point in the group {PLUGIN_GROUP!r})"
        )
    if any(c in name for c in ".:/"):
        msg += "; plugins are found by entry-point name only, never imported from a path"
    raise UnknownPluginError(msg)


def _is_reward(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "score", None))


def _returns_reward(fn: Any) -> bool:
    """Whether ``fn``'s return annotation says it builds a reward."""
    try:
        ann = inspect.signature(fn, eval_str=True).return_annotation
    except Exception:  # noqa: BLE001 - an unresolvable string annotation: look at the text
        try:
            ann = inspect.signature(fn).return_annotation
        except (TypeError, ValueError):
            return False
    if ann is inspect.Signature.empty:
        return False
    if isinstance(ann, str):
        return ann.strip().split("[")[0].split(".")[-1].endswith("Reward")
    return isinstance(ann, type) and callable(getattr(ann, "score", None))


def _is_factory(fn: Any, params: Mapping[str, Any]) -> bool:
    """A callable that can be called with ``params`` as keywords alone builds a reward;
    one that needs the text positionally scores it."""
    if _returns_reward(fn):
        return True
    try:
        inspect.signature(fn).bind(**params)
    except TypeError:
        return False
    except ValueError:  # no signature
        return False
    return True


def _check_bound_params(fn: Any, params: Mapping[str, Any], what: str, *, text: bool = True) -> None:
    """TypeError now, when ``params`` cannot be bound as keywords to ``fn``: a scoring
    function next to its text argument (``text``; an unknown name, or the text's own
    parameter), a reward class or factory alone. ``functools.partial`` accepts anything,
    so a scoring function would otherwise fail only at the first score; for a class the
    message names what it accepts, with a close match for a typo."""
    if not params:
        return
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to check against: the call will tell
        return
    try:
        sig.bind_partial(*(["text"] if text else []), **params)
    except TypeError as exc:
        accepted = [p.name for p in list(sig.parameters.values())[1 if text else 0:]
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        unknown = sorted(k for k in params if k not in accepted)
        detail = f"unknown parameter(s) {', '.join(map(repr, unknown))}" if unknown and not takes_any else str(exc)
        close = [m for k in unknown for m in difflib.get_close_matches(k, accepted, n=1)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        kind = "the scoring function" if text else ("the reward class" if isinstance(fn, type) else "the factory")
        besides = " besides the text" if text else ""
        raise TypeError(
            f"{what}: params do not fit {kind} {_describe(fn)}{sig}: {detail}{hint}; "
            f"it accepts {', '.join(map(repr, accepted)) or 'no parameters'}{besides}"
        ) from None


def load_plugin(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    weight: float = 1.0,
    reward_name: str | None = None,
    terminal: bool | None = None,
) -> Any:
    """Build the reward plugin installed under ``name`` with ``params``.

    >>> load_plugin("surely-not-installed")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rewards.callable.UnknownPluginError: unknown reward plugin 'surely-not-installed'...

    The entry point may name:

    - a reward class: instantiated as ``cls(**params)``;
    - a reward object: used as a shallow copy (``params`` must be empty);
    - a factory function: called as ``factory(**params)``, must return a reward. A
      function is a factory when its return annotation is a reward class, or when it
      can be called with ``params`` as keywords alone;
    - a scoring function, one that takes the text as a required positional parameter:
      wrapped in :class:`CallableReward` with ``params`` bound as keywords. It is
      batched when the function has a true ``batched`` attribute.

    The result gets ``weight``; ``reward_name`` when given (else its own name, or
    ``name`` for a scoring function); ``terminal`` when given (None keeps the
    reward's own). Unknown ``name`` -> :class:`UnknownPluginError` listing what is
    installed.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward plugin name must be a non-empty string, got {name!r}")
    params = dict(params or {})
    bad_keys = [k for k in params if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"reward plugin {name!r}: parameter names must be strings, got {bad_keys!r}")
    ep = _find(name)
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - an installed plugin may fail to import in any way
        raise ImportError(
            f"reward plugin {name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    what = f"reward plugin {name!r} ({ep.value})"

    if isinstance(obj, type):
        _check_bound_params(obj, params, what, text=False)
        reward = obj(**params)
        if not _is_reward(reward):
            raise TypeError(f"{what}: {obj.__name__}(...) has no score(texts, context) method")
    elif _is_reward(obj):
        if params:
            raise TypeError(f"{what} is a ready-made reward and takes no parameters, got {sorted(params)}")
        reward = copy.copy(obj)
    elif callable(obj):
        if _is_factory(obj, params):
            reward = obj(**params)
            if not _is_reward(reward):
                raise TypeError(
                    f"{what}: the factory returned {type(reward).__name__}, not a reward (an object "
                    "with score(texts, context)); a scoring function must take the text as a "
                    "required positional parameter"
                )
        else:
            _check_bound_params(obj, params, what)
            fn = functools.partial(obj, **params) if params else obj
            reward = CallableReward(
                fn,
                name=reward_name or name,
                weight=weight,
                terminal=bool(terminal),
                batched=bool(getattr(obj, "batched", False)),
                bounds=tuple(getattr(obj, "bounds", (0.0, 1.0))),
            )
    else:
        raise TypeError(f"{what} is a {type(obj).__name__}, not a reward class, factory or function")

    try:
        reward.weight = float(weight)
        if reward_name is not None:
            reward.name = reward_name
        elif not isinstance(getattr(reward, "name", None), str):
            reward.name = name
        if terminal is not None:
            reward.terminal = bool(terminal)
        elif not hasattr(reward, "terminal"):
            reward.terminal = False
    except AttributeError as exc:
        raise TypeError(f"{what}: cannot set name/weight/terminal on the reward ({exc})") from exc
    return reward
