"""`cnnkit explore --train` in a real browser: Start, watch the epochs arrive, Pause, Resume (Playwright driving
Debian's Chromium, never a download).

Set CNNKIT_EXPLORE_LEARN_SCREENSHOT=docs/explore-learn.png to refresh the docs' picture of the section.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from cnnkit.explore.learn import open_training
from cnnkit.explore.server import ExploreServer
from tests.browser import CHROMIUM, collect_errors, launch

EPOCHS = 10


@pytest.mark.slow  # a real Chromium
def test_start_watch_pause_resume(tmp_path, monkeypatch):
    assert Path(CHROMIUM).exists(), "the browser test needs Debian's chromium (apt-get install chromium)"
    monkeypatch.chdir(tmp_path)  # a relative run directory, as a user's `--out runs/digits` (and the screenshot) shows
    out = Path("runs/digits")
    explorer = open_training("digits_cnn", EPOCHS, out)
    server = ExploreServer(explorer).start()
    problems: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                collect_errors(page, problems)
                page.goto(server.url)
                page.wait_for_selector("body[data-ready='1'] #learn-panel[data-state='idle']", timeout=30_000)
                assert page.locator("#learn-run").inner_text() == str(out)
                assert not page.locator("#untrained").is_hidden()

                page.click("#learn-start")
                page.click("#learn-pause")  # shown once the start is answered; the epoch being trained ends first
                page.wait_for_selector("#learn-panel[data-state='paused']", timeout=60_000)
                paused = int(page.locator("#learn-panel").get_attribute("data-epoch"))
                assert 1 <= paused < EPOCHS
                assert json.loads((out / "last.json").read_text())["epoch"] == paused
                assert page.locator("#learn-acc circle.val-acc").count() == paused
                assert page.locator("#learn-resume").is_visible() and page.locator("#learn-pause").is_hidden()

                page.click("#learn-resume")
                page.wait_for_selector("#learn-panel[data-state='done']", timeout=120_000)
                page.wait_for_selector("body[data-settled='1']", timeout=30_000)
                lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                epochs = [r for r in lines if "epoch" in r]
                assert len(epochs) == EPOCHS
                assert page.locator("#learn-acc circle.val-acc").count() == EPOCHS
                assert page.locator("#learn-loss circle.train-loss").count() == EPOCHS
                assert page.locator("#learn-val-acc").inner_text() == f"{100 * epochs[-1]['val_accuracy']:.2f}%"
                assert page.locator("#learn-epoch").inner_text() == f"epoch {EPOCHS} of {EPOCHS}"
                assert f"{100 * lines[-1]['final']['test_accuracy']:.2f}%" in page.locator("#learn-final").inner_text()
                filters = explorer.training.filters()
                assert page.locator("#learn-filters canvas").count() == filters["shape"][0]
                assert page.locator("#untrained").is_hidden()  # the views show the trained weights
                assert page.locator("#strip figure").count() > 0  # and the run's held-out split opened
                # The compare menus follow the run: 'training latest' keeps its name but now holds the last epoch
                latest = f"training latest (epoch {EPOCHS}, val {100 * epochs[-1]['val_accuracy']:.1f}%)"
                page.wait_for_function("(text) => [...document.querySelectorAll('#cmp-a option')].some("
                                       "(o) => o.textContent === text)", arg=latest, timeout=15_000)
                page.locator("#learn-panel").screenshot(path=tmp_path / "explore-learn.png")
            finally:
                browser.close()
    finally:
        server.stop()
    assert problems == []
    target = os.environ.get("CNNKIT_EXPLORE_LEARN_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "explore-learn.png", target)
