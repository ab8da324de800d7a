"""`cnnkit.show` (the explore page inline in Jupyter) and docs/explore.ipynb, executed for real with nbclient."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import cnnkit
from cnnkit.explore import notebook
from tests.browser import launch
from tests.conftest import copy_run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "explore.ipynb"


def get(url: str) -> tuple[dict, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(response.headers), response.read()


def model_of(view: notebook.ExplorerView) -> dict:
    return json.loads(get(view.url + "api/model")[1])


@pytest.fixture()
def views():
    """Every view a test opens is stopped afterwards, so servers do not outlive their test."""
    opened: list[notebook.ExplorerView] = []
    yield opened
    for view in opened:
        view.stop()


def test_show_is_the_public_api():
    assert cnnkit.show is notebook.show
    assert "show" in dir(cnnkit)


def test_the_view_frames_a_live_server_with_the_run_s_model(trained_digitsnet, views):
    view = cnnkit.show(str(trained_digitsnet), height=640)
    views.append(view)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", view.url)
    assert f'<iframe src="{view.url}"' in view._repr_html_() and 'height="640"' in view._repr_html_()
    assert repr(view) == f"ExplorerView('run', {view.url})"
    described = model_of(view)
    loaded = cnnkit.load(trained_digitsnet)  # the same run read by the API's own route
    assert described["title"] == trained_digitsnet.name
    assert described["model"] == loaded.trained.meta["model"]["name"] == "digitsnet"
    assert described["input_shape"] == [1, 8, 8] and described["classes"] == loaded.class_names
    assert [u["id"] for u in described["units"]][:3] == ["features.conv1", "features.conv2", "features.pool2"]
    headers, page = get(view.url)
    assert b"<script" in page
    # a notebook on another localhost port may frame the page: nothing forbids it, the rest of the CSP stands
    assert "x-frame-options" not in {name.lower() for name in headers}
    policy = headers["content-security-policy"]
    assert "frame-ancestors" not in policy and "script-src 'self'" in policy


def test_one_server_per_source_and_each_kind_of_source(trained_digitsnet, views):
    first = cnnkit.show(str(trained_digitsnet))
    views.append(first)
    again = cnnkit.show(trained_digitsnet, height=300)  # a Path to the same run: the same server, its own height
    assert again.server is first.server and again.url == first.url and 'height="300"' in again._repr_html_()
    fitted = cnnkit.FitResult(test_accuracy=0.9, run_dir=trained_digitsnet, best_epoch=3, test_loss=0.3,
                              best_val_accuracy=0.9, epochs_run=3, seconds=1.0)
    assert cnnkit.show(fitted).server is first.server
    loaded = cnnkit.load(trained_digitsnet)
    from_load = cnnkit.show(loaded)
    views.append(from_load)
    assert from_load.url != first.url and cnnkit.show(loaded).server is from_load.server
    assert model_of(from_load)["title"] == "run"
    fresh = cnnkit.show("digitsnet")  # a registered name: fresh weights, no run
    views.append(fresh)
    assert model_of(fresh)["trained"] is False and model_of(first)["trained"] is True


def test_stop_stops_the_server_and_show_starts_a_new_one(trained_digitsnet, views):
    view = cnnkit.show(str(trained_digitsnet))
    url = view.url
    view.stop()
    with pytest.raises(urllib.error.URLError):
        get(url)
    assert repr(view) == "ExplorerView('run', stopped)" and "<iframe" not in view._repr_html_()
    again = cnnkit.show(str(trained_digitsnet))
    views.append(again)
    assert again.server is not view.server and model_of(again)["title"] == "run"


def test_a_run_retrained_in_place_gets_a_fresh_server(trained_digitsnet, tmp_path, views):
    run = copy_run(trained_digitsnet, tmp_path)
    old = cnnkit.show(run)
    views.append(old)
    checkpoint = run / "best.safetensors"
    stamp = checkpoint.stat().st_mtime_ns + 10**9
    os.utime(checkpoint, ns=(stamp, stamp))  # as a new best checkpoint written over it would
    new = cnnkit.show(run)
    views.append(new)
    assert new.server is not old.server and not old.running and model_of(new)["title"] == "run"


class Quiet(http.server.SimpleHTTPRequestHandler):
    """The stand-in notebook server, without a log line per request."""

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_the_page_works_inside_a_frame_of_another_localhost_origin(trained_digitsnet, tmp_path, views):
    """What Jupyter does with the view: its HTML in a page from another port, in a real browser."""
    from playwright.sync_api import sync_playwright

    view = cnnkit.show(trained_digitsnet)
    views.append(view)
    (tmp_path / "index.html").write_text(f"<!doctype html><title>notebook</title>{view._repr_html_()}")
    handler = functools.partial(Quiet, directory=str(tmp_path))
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page()
            page.goto(f"http://localhost:{host.server_port}/")  # another origin than 127.0.0.1:PORT
            frame = page.frame_locator("iframe")
            frame.locator("body[data-settled='1']").wait_for(timeout=30_000)  # a held-out image predicted
            assert frame.locator("#title").inner_text() == "run (digitsnet)"
            assert frame.locator("#strip figure").count() > 0
            browser.close()
    finally:
        host.shutdown()


def test_a_busy_port_is_refused_in_one_line(trained_digitsnet):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(cnnkit.CnnkitError) as error:
            cnnkit.show(cnnkit.load(trained_digitsnet), port=port)
    message = str(error.value)  # in show's terms: its port= argument, never the command line's --host / --port
    assert message.startswith(f"show: cannot listen on 127.0.0.1:{port} (") and "\n" not in message
    assert message.endswith("pass another port=, or port=0 (the default) for a free one")
    assert "--" not in message


def test_a_checkpoint_stem_is_shown_as_compare_takes_it(trained_digitsnet, views):
    stem = trained_digitsnet / "best"  # runA/best: runA/best.safetensors is there, runA/best is not
    assert not stem.exists()
    view = cnnkit.show(str(stem))
    views.append(view)
    assert model_of(view)["trained"] is True and view.title == "best"


@pytest.mark.parametrize(("source", "options", "words"), [
    ("no/such/run", {}, "show: 'no/such/run' is neither a registered model"),
    (3, {}, "show: expected a run directory"),
    (None, {}, "show: expected a run directory"),
    ("", {}, "show: expected a run directory"),
    (cnnkit.FitResult(None, None, 1, None, None, 1, 0.1), {}, "show: this cnnkit.fit result kept no run"),
    ("digitsnet", {"height": "tall"}, "show: height must be a whole number"),
    ("digitsnet", {"height": 50}, "show: height must be a whole number"),
    ("digitsnet", {"port": 70000}, "show: port must be a whole number"),
    ("digitsnet", {"port": True}, "show: port must be a whole number"),
])
def test_bad_sources_and_options_are_refused_in_one_line(source, options, words):
    with pytest.raises(cnnkit.CnnkitError) as error:
        cnnkit.show(source, **options)
    assert str(error.value).startswith(words) and "\n" not in str(error.value)


def test_a_folder_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(cnnkit.CnnkitError, match="no best or last checkpoint"):
        cnnkit.show(tmp_path)


def test_the_committed_notebook_is_the_script_s_and_was_executed():
    spec = importlib.util.spec_from_file_location("make_notebook", ROOT / "docs" / "make_notebook.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert [cell.source for cell in committed.cells] == [cell.source for cell in script.build().cells]
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count and cell.outputs for cell in code)
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_the_notebook_executes_and_its_numbers_are_the_run_s(tmp_path):
    executed = nbformat.read(NOTEBOOK, as_version=4)
    for cell in executed.cells:  # start from nothing: the committed outputs must not leak into the check
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    NotebookClient(executed, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute(env=env)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    text = ["".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream") for cell in code]
    printed = re.search(r"held-out test accuracy: (\d\.\d{4})", text[0])
    assert printed, text[0]
    run = tmp_path / "runs" / "digitsnet"  # the run landed in the kernel's folder, not the repository
    assert 0.85 <= float(printed[1]) <= 1.0
    assert printed[1] == f"{cnnkit.load(run).evaluate()['accuracy']:.4f}"  # the accuracy `cnnkit evaluate` gives
    shown = next(o for cell in code for o in cell.outputs if o.output_type == "execute_result"
                 and "ExplorerView" in o["data"].get("text/plain", ""))
    assert re.search(r'<iframe src="http://127\.0\.0\.1:\d+/"', shown["data"]["text/html"])
    assert f"title: {run.name}\nmodel: digitsnet |" in text[-1]
    assert "input: [1, 8, 8] | classes: 10" in text[-1]
