"""`cnnkit explore` in a real browser: Playwright (the pip package) driving Debian's Chromium, never a download.

Set CNNKIT_EXPLORE_SCREENSHOT=docs/explore.png to refresh the README's picture of the page.
"""

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from cnnkit.explore.server import ExploreServer
from cnnkit.explore.session import Explorer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SETTLED = "body[data-settled='1']"  # the prediction and the visible maps belong to the current image


@pytest.fixture(scope="module")
def server(trained_run):
    running = ExploreServer(Explorer.open(str(trained_run))).start()  # the session's run, read-only
    yield running
    running.stop()


def number(text: str) -> float:
    return float(text.strip())


@pytest.mark.slow  # a real Chromium
def test_draw_predict_explain_a_cell_and_browse_the_mistakes(server, tmp_path):
    assert Path(CHROMIUM).exists(), "the browser test needs Debian's chromium (apt-get install chromium)"
    strip = httpx.get(server.url + "api/heldout", timeout=30).json()
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 960})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']" + SETTLED[4:], timeout=30_000)

            page.click("#clear")
            box = page.locator("#draw").bounding_box()
            page.mouse.move(box["x"] + 130, box["y"] + 30)
            page.mouse.down()
            for i in range(1, 25):  # a "1": one stroke down the middle, predicted live while drawing
                page.mouse.move(box["x"] + 130 - i, box["y"] + 30 + 7 * i)
            page.mouse.up()
            page.wait_for_selector(SETTLED, timeout=30_000)
            probabilities = [number(t.rstrip("%")) for t in page.locator("#top .p").all_inner_texts()]
            assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)

            maps = page.locator(".card[data-kind='conv'] .maps canvas").first
            corner = maps.bounding_box()
            at = {"x": corner["width"] - 3, "y": corner["height"] - 3}  # bottom-right cell: SAME padding below/right
            maps.hover(position=at)
            tooltip = page.locator("#tooltip").inner_text()
            map_value = number(tooltip.rsplit(":", 1)[1])
            maps.click(position=at)
            page.wait_for_selector("#cell-panel[data-current='1']", timeout=30_000)
            terms = [number(t) for t in page.locator("#cell .equation .term").all_inner_texts()]
            total = number(page.locator("#cell .equation .total").inner_text())
            assert abs(sum(terms) - total) <= 5e-5 * (len(terms) + 1)  # 4-decimal numbers that add up
            steps = [number(t) for t in page.locator("#cell .step-value").all_inner_texts()]
            shown = number(page.locator("#cell .map-value").inner_text())
            assert len(steps) == 2 and steps[-1] == pytest.approx(shown, abs=1e-4) == pytest.approx(map_value, abs=1e-4)
            assert page.locator("#cell .grid td.pad").count() > 0  # the padding cells are marked
            assert re.search(r"padding top 1, bottom 1, left 1, right 1", page.locator("#cell").inner_text())

            page.click("#strip-wrong")
            figures = page.locator("#strip figure")
            assert figures.count() == page.locator("#strip figure.wrong").count() == min(strip["wrong"], 300) > 0
            figures.first.click()
            page.wait_for_selector(SETTLED, timeout=30_000)
            page.wait_for_selector("#cell-panel[data-current='1']", timeout=30_000)  # the panel follows the image
            first = next(item for item in strip["images"] if not item["correct"])
            assert page.locator("#top .label").first.inner_text() == first["predicted"]
            assert page.locator("#input-note").inner_text().endswith(f"true class {first['true']}")
            page.wait_for_timeout(300)  # let the saliency pictures paint
            page.screenshot(path=tmp_path / "explore.png")
        finally:
            browser.close()
    assert problems == []
    target = os.environ.get("CNNKIT_EXPLORE_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "explore.png", target)
