"""The explorer's "Compare checkpoints" section in a real browser (Debian's Chromium through Playwright), its numbers
checked against torch.

With CNNKIT_EXPLORE_SCREENSHOT=docs/explore.png (as for tests/test_explore_browser.py) it also writes
docs/explore-compare.png beside it.
"""

import io
import os
import shutil
from pathlib import Path

import httpx
import pytest
import torch
from playwright.sync_api import sync_playwright

from cnnkit.analysis.inference import load_trained
from cnnkit.explore.compare import Checkpoints
from cnnkit.explore.server import ExploreServer
from cnnkit.explore.session import Explorer
from cnnkit.store.checkpoint import read_metadata
from tests.browser import CHROMIUM, collect_errors, launch

COMPARED = "#compare-panel[data-settled='1']"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_run):
    """The session's 5-epoch digits_cnn run (read-only) and a 1-epoch run of the same network: two stages."""
    from cnnkit.train import TrainConfig, fit

    folder = tmp_path_factory.mktemp("compare-browser")
    fit(TrainConfig(model="digits_cnn", epochs=1), out=folder / "one", progress=False, stream=io.StringIO())
    return trained_run, folder / "one"


def expected(stem: Path, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities, first-conv weights) of a checkpoint loaded alone."""
    trained = load_trained(stem)
    with torch.no_grad():
        probabilities = torch.softmax(trained.model(trained.preprocessing(image)), dim=1)[0]
    return probabilities, trained.model.features[0].weight.detach()


@pytest.mark.slow  # a real Chromium
def test_compare_two_checkpoints_side_by_side(runs, tmp_path, monkeypatch):
    assert Path(CHROMIUM).exists(), "the browser test needs Debian's chromium (apt-get install chromium)"
    run = runs[0]
    monkeypatch.chdir(runs[1].parent)  # a relative path, as typed: `cnnkit explore RUN --compare one`
    one = Path("one")
    explorer = Explorer.open(str(run))
    Checkpoints.attach(explorer, str(run), [str(one)])
    server = ExploreServer(explorer).start()
    problems: list[str] = []
    refused: list[str] = []
    try:
        first = httpx.get(server.url + "api/heldout", timeout=30).json()["images"][0]["index"]  # the page's pick
        image = Explorer.open(str(run)).image(heldout=first)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 960})
                collect_errors(page, problems)
                page.on("response", lambda r: refused.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                page.goto(server.url)
                page.wait_for_selector("body[data-ready='1']", timeout=30_000)
                page.locator("#compare-panel").scroll_into_view_if_needed()
                page.wait_for_selector(COMPARED, timeout=30_000)
                assert page.locator("#cmp-a").input_value() == str(one / "best")  # earliest vs best by default
                assert page.locator("#cmp-b").input_value() == "best"
                page.select_option("#cmp-a", "last")
                page.select_option("#cmp-b", str(one / "best"))
                page.wait_for_selector(COMPARED, timeout=30_000)
                last = read_metadata(run / "last")
                assert page.locator("#cmp-title-a").inner_text() == \
                    f"A: last (epoch {last['epoch']}, val {100 * last['metrics']['val_accuracy']:.1f}%)"
                for side, stem in (("a", run / "last"), ("b", one / "best")):
                    probabilities, weights = expected(stem, image)
                    top = page.locator(f"#cmp-top-{side} li").first
                    assert float(top.get_attribute("data-probability")) == pytest.approx(float(probabilities.max()),
                                                                                         abs=1e-6)
                    assert top.locator(".label").inner_text() == str(int(probabilities.argmax()))
                    canvas = page.locator(f"#cmp-filters .cmp-pair[data-index='4'] canvas[data-side='{side.upper()}']")
                    low, high = (float(v) for v in canvas.get_attribute("title").rsplit(": ", 1)[1].split(" .. "))
                    assert (low, high) == pytest.approx((float(weights[4].min()), float(weights[4].max())), abs=1e-4)
                change = (weights_of(one) - weights_of(run)).flatten(1).norm(dim=1) / \
                    weights_of(run).flatten(1).norm(dim=1)
                shown = [float(t) for t in page.locator("#cmp-filters .cmp-change").all_inner_texts()]
                assert shown == pytest.approx(change.tolist(), abs=6e-4)
                most = page.locator("#cmp-filters .cmp-most").evaluate_all("nodes => nodes.map(n => n.dataset.index)")
                assert sorted(map(int, most)) == sorted(change.topk(5).indices.tolist())
                page.select_option("#cmp-layer", "features.7")
                page.wait_for_selector(COMPARED, timeout=30_000)
                assert page.locator("#cmp-maps .cmp-pair").count() == 16  # the first page of 48 maps
                page.click("#cmp-next")
                page.wait_for_selector(COMPARED, timeout=30_000)
                assert page.locator("#cmp-maps .cmp-pair").first.get_attribute("data-index") == "16"
                page.select_option("#cmp-layer", "features.0")
                page.select_option("#cmp-a", str(one / "best"))  # back to epoch 1 vs best for the picture
                page.select_option("#cmp-b", "best")
                page.wait_for_selector(COMPARED, timeout=30_000)
                assert page.locator("#cmp-title-a").inner_text().startswith("A: one/best (epoch 1, val ")
                page.locator("#compare-panel").screenshot(path=tmp_path / "explore-compare.png")
            finally:
                browser.close()
    finally:
        server.stop()
    assert [r for r in refused if "/api/compare" in r or "/api/checkpoints" in r] == []
    # Scrolling to the page's end shows the playground, whose .card layers.js also watches as a layer (a 400).
    assert [p for p in problems if "status of 400" not in p] == []
    target = os.environ.get("CNNKIT_EXPLORE_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "explore-compare.png", Path(target).with_name("explore-compare.png"))


def weights_of(run: Path, name: str = "last") -> torch.Tensor:
    return load_trained(run / name).model.features[0].weight.detach().double()
