"""``deal-chains serve``: aligned decoding behind an OpenAI-compatible HTTP API (FastAPI +
uvicorn; extra ``serve``).

>>> from deal_chains.serve import ServerThread, create_app, served_model   # doctest: +SKIP
>>> with ServerThread(create_app([served_model("default")])) as server:     # doctest: +SKIP
...     from openai import OpenAI
...     OpenAI(base_url=server.base_url, api_key="-").chat.completions.create(
...         model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Hi"}],
...         extra_body={"deal": {"preset": "concise"}})

- ``protocol``: request bodies read and checked (``ServeLimits``, ``ServedModel``);
- ``responses``: outcomes as OpenAI response bodies and stream chunks;
- ``app``: the routes (``create_app``); ``metrics``: Prometheus;
- ``server``: ``served_model``, ``ServerThread``, ``run``; ``bench``: ``bench serve``.
"""

from deal_chains._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {
    "create_app": "deal_chains.serve.app",
    "ServeLimits": "deal_chains.serve.protocol",
    "ServedModel": "deal_chains.serve.protocol",
    "ServerThread": "deal_chains.serve.server",
    "served_model": "deal_chains.serve.server",
    "run": "deal_chains.serve.server",
})
__all__ = ["ServeLimits", "ServedModel", "ServerThread", "create_app", "run", "served_model"]
