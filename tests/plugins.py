"""A throwaway installed distribution declaring ``deal_chains.rewards`` entry points, for the
plugin tests: a module and a ``*.dist-info`` folder on ``sys.path``, removed afterwards."""

from __future__ import annotations

import importlib
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping


@contextmanager
def installed_plugin(folder: Path, source: str, entries: Mapping[str, str], *, prefix: str = "dc_plugin",
                     extra_modules: Mapping[str, str] | None = None) -> Iterator[str]:
    """Install ``source`` as a fresh module (its name is yielded) whose entry points map each
    name in ``entries`` to ``module:attr``; ``extra_modules`` (suffix -> source) are written
    beside it as ``{module}_{suffix}``; an entry value with a ``:`` is taken as written,
    with ``{module}`` filled in."""
    module = f"{prefix}_{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    extra = {f"{module}_{suffix}": text for suffix, text in (extra_modules or {}).items()}
    for name, text in extra.items():
        (folder / f"{name}.py").write_text(text)
    dist = folder / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    lines = ["[deal_chains.rewards]"] + [
        f"{k} = {v.format(module=module) if ':' in v else f'{module}:{v}'}" for k, v in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        yield module
    finally:
        sys.path.remove(str(folder))
        for name in (module, *extra):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
