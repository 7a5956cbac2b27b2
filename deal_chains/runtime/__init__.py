"""The runtime: the one place the LangChain, DSPy (and server) shells run the engine.

- ``requests``: ``Request`` (one prepared generation) and ``Outcome``; spec resolution;
- ``options``: ``read_call_options``, the one reading of a shell's call options (stop, max tokens,
  n, temperature, seed, spec, reward variables, response format, tools) as ``CallOptions``;
- ``scheduler``: which waiting requests share one batched search;
- ``worker``: one thread per loaded model running those searches;
- ``streaming``: ``Handle`` (committed text as it comes, then the outcome) and ``TextStream``;
- ``views``: rewards that score a JSON answer's content;
- ``model_runtime``: ``ModelRuntime``, a model loaded on first use plus its worker.

>>> from deal_chains.runtime import ModelRuntime   # doctest: +SKIP
"""

from deal_chains.runtime.model_runtime import ModelRuntime, score_text
from deal_chains.runtime.requests import (
    SEARCH_FIELDS,
    CancelledRequest,
    Outcome,
    Request,
    resolve_spec,
    search_config,
)
from deal_chains.runtime.streaming import Handle, TextStream
from deal_chains.runtime.views import ContentView, content_view

__all__ = ["SEARCH_FIELDS", "CancelledRequest", "ContentView", "Handle", "ModelRuntime", "Outcome",
           "Request", "TextStream", "content_view", "resolve_spec", "score_text", "search_config"]
