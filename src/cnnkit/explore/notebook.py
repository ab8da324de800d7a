"""`cnnkit.show`: the explore page inline in a Jupyter notebook, served by this kernel on 127.0.0.1.

Jupyter renders any object with `_repr_html_`, so no IPython import is needed: the view is an <iframe> to an
ExploreServer running in a daemon thread. One server per source is kept for the kernel's life, so re-running a
cell does not pile up servers; a run retrained in place (a newer checkpoint file) gets a fresh one.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from cnnkit.analysis.inference import Trained, is_checkpoint_path, names_registry_model
from cnnkit.core.errors import CnnkitError
from cnnkit.explore.server import ExploreServer
from cnnkit.explore.session import Explorer
from cnnkit.store.checkpoint import resolve_checkpoint

HOST = "127.0.0.1"  # a notebook's explorer is for the person at this machine only
EXPECTED = ("a run directory, a checkpoint, a registered model name, cnnkit.load(...) or a cnnkit.fit(...) result "
            "with out=")

# source key -> (ExploreServer, page title, the object whose id() is in the key, kept alive so the id stays its)
_SERVERS: dict[tuple, tuple[ExploreServer, str, object]] = {}


class ExplorerView:
    """The explore page of one source: shown inline by Jupyter (an iframe), `.url` for a browser, `.stop()`."""

    def __init__(self, server: ExploreServer, title: str, height: int) -> None:
        self.server, self.title, self.height = server, title, height

    @property
    def url(self) -> str:
        """The page's address on this machine."""
        return self.server.url

    @property
    def running(self) -> bool:
        """Whether the server still answers (False after `.stop()`)."""
        thread = self.server.thread
        return thread is not None and thread.is_alive() and not self.server.server.should_exit

    def stop(self) -> None:
        """Stop the server (every view of this source shares it); a later `cnnkit.show` starts a new one."""
        self.server.stop()
        for key, (server, _, _) in list(_SERVERS.items()):
            if server is self.server:
                del _SERVERS[key]

    def _repr_html_(self) -> str:
        if not self.running:
            return f"<p>cnnkit explorer of {html.escape(self.title)}: stopped (call cnnkit.show again)</p>"
        url, title = html.escape(self.url, quote=True), html.escape(self.title, quote=True)
        return (f'<iframe src="{url}" title="cnnkit explore: {title}" width="100%" height="{self.height}" '
                f'frameborder="0"></iframe>\n<p>cnnkit explorer of {title} at <a href="{url}" target="_blank">'
                f"{url}</a></p>")

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"ExplorerView({self.title!r}, {state})"


def show(source: object, *, height: int = 900, port: int = 0) -> ExplorerView:
    """The explore page of `source` (what `cnnkit explore` takes, or a `cnnkit.load` / `cnnkit.fit` result),
    inline in a notebook; `port` 0 picks a free one."""
    if isinstance(height, bool) or not isinstance(height, int) or not 100 <= height <= 10_000:
        raise CnnkitError(f"show: height must be a whole number of pixels from 100 to 10000; received {height!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise CnnkitError(f"show: port must be a whole number from 0 (a free one) to 65535; received {port!r}")
    key, owner, opened = _resolve(source)
    cached = _SERVERS.get(key)
    if cached is not None:
        view = ExplorerView(cached[0], cached[1], height)
        if view.running and port in (0, view.server.port):
            return view
    explorer = opened()  # before retiring the old server: a source that fails to open leaves it serving
    for old in [k for k in _SERVERS if k[:2] == key[:2]]:  # stopped, on another port, or an older checkpoint
        _SERVERS.pop(old)[0].stop()
    try:
        server = ExploreServer(explorer, HOST, port, "pass another port=, or port=0 (the default) for a free one")
    except CnnkitError as error:  # in show's own terms: its arguments, not the command line's flags
        raise CnnkitError(f"show: {error}") from None
    server.start()
    _SERVERS[key] = (server, explorer.title, owner)
    return ExplorerView(server, explorer.title, height)


def _resolve(source: object) -> tuple[tuple, object, Any]:
    """(cache key, the object kept alive with the key, a function opening the Explorer) for `source`."""
    trained = getattr(source, "trained", None)
    if isinstance(trained, Trained):  # cnnkit.load(...): reuse its already loaded model
        title = Path(getattr(source, "path", "model")).name
        return ("object", id(trained)), trained, lambda: Explorer(trained, title)
    if hasattr(source, "run_dir") and not isinstance(source, (str, Path)):  # cnnkit.fit(...)
        if source.run_dir is None:
            raise CnnkitError("show: this cnnkit.fit result kept no run (it was called without out=); pass "
                              "out='runs/NAME' to cnnkit.fit, then cnnkit.show(result)")
        source = source.run_dir
    if not isinstance(source, (str, Path)) or not str(source):
        raise CnnkitError(f"show: expected {EXPECTED}; received {type(source).__name__} {source!r:.60}")
    text = str(source)
    if names_registry_model(text):
        return ("model", text), None, lambda: Explorer.open(text)
    if not is_checkpoint_path(text):  # a checkpoint's stem (runA/best) too, as --compare takes it
        raise CnnkitError(f"show: {text!r} is neither a registered model (see cnnkit.list_models()) nor a "
                          "checkpoint path")
    stem = resolve_checkpoint(text)
    stamp = max((p.stat().st_mtime_ns for p in (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
                 if p.exists()), default=0)
    return ("path", str(Path(text).resolve()), str(stem), stamp), None, lambda: Explorer.open(text)
