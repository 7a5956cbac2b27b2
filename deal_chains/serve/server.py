"""Running the server: the served model from a name and an optional spec file, uvicorn in the
foreground (``deal-chains serve``) or on a background thread (tests, ``bench serve``).

>>> with ServerThread(create_app([served_model(lm, name="tiny")])) as server:   # doctest: +SKIP
...     server.base_url
'http://127.0.0.1:54321/v1'
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from deal_chains.runtime import ModelRuntime, resolve_spec
from deal_chains.runtime.options import ModelDefaults
from deal_chains.serve._deps import require
from deal_chains.serve.app import create_app
from deal_chains.serve.protocol import ServedModel, ServeLimits


def served_model(model: Any = "default", *, name: str | None = None, spec: str | Path | None = None,
                 device: str = "auto", dtype: str | None = "auto", trust_remote_code: bool = False,
                 load: bool = True) -> ServedModel:
    """A model to serve: ``model`` (``"default"``, a Hugging Face id, a local path or a loaded
    model), the name requests give (default: the model's own name), and the spec every
    request without its own uses (a file, trusted: it may name files and models).
    ``load``: load the model now, so the first request does not wait for it."""
    runtime = ModelRuntime(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    loaded = resolve_spec(Path(spec) if isinstance(spec, str) else spec) if spec is not None else None
    if load:
        runtime.lm  # noqa: B018 - loads the model
    defaults = ModelDefaults(spec=loaded, loaded_spec=loaded)
    return ServedModel(name=name or runtime.model_name, runtime=runtime, defaults=defaults)


class ServerThread:
    """uvicorn serving ``app`` on a background thread, on a free port unless one is given;
    ``with`` waits until it accepts connections and stops it at the end."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        uvicorn = require("uvicorn")
        self.config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                                     timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="deal-chains-serve", daemon=True)
        self.host, self.port = host, port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.host}:{self.config.port}")
            self.thread.join(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def run(models: list[ServedModel], *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
        limits: ServeLimits | None = None, log_level: str = "info") -> None:
    """Serve ``models`` in the foreground until interrupted."""
    uvicorn = require("uvicorn")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {host} without an API key: anyone who can reach it can use the model "
              "(pass --api-key or set DEAL_CHAINS_API_KEY)", file=sys.stderr)
    app = create_app(models, limits, api_key)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
