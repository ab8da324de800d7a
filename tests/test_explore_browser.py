"""`cnnkit explore` in a real browser: Playwright (the pip package) driving Debian's Chromium, never a download.

Set CNNKIT_EXPLORE_SCREENSHOT=docs/explore.png to refresh the README's picture of the page and docs/explore-*.png.
"""

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
import torch
from playwright.sync_api import sync_playwright

from cnnkit import tf
from cnnkit.analysis.inference import untrained
from cnnkit.explore.server import ExploreServer
from cnnkit.explore.session import Explorer
from tests.browser import CHROMIUM, collect_errors, launch

SETTLED = "body[data-settled='1']"  # the prediction and the visible maps belong to the current image


@pytest.fixture(scope="module")
def server(trained_run):
    RUN.append(trained_run)
    running = ExploreServer(Explorer.open(str(trained_run))).start()  # the session's run, read-only
    yield running
    running.stop()


def number(text: str) -> float:
    return float(text.strip())


def watch(page, problems: list[str]) -> None:
    """Collect every console error, page error, failed request and 4xx / 5xx answer."""
    collect_errors(page, problems)
    page.on("requestfailed", lambda request: problems.append(f"{request.url}: {request.failure}"))
    page.on("response", lambda response: problems.append(
        f"{response.url}: {response.status} for {(response.request.post_data or '')[:300]}")
            if response.status >= 400 else None)


def contrast_on_white(locator) -> float:
    """WCAG contrast ratio of an SVG stroke (its colour and opacity over white) against the white page."""
    r, g, b, opacity = locator.evaluate("""e => { const s = getComputedStyle(e);
        return [...s.stroke.match(/[0-9.]+/g).slice(0, 3).map(Number), Number(s.strokeOpacity)]; }""")
    channels = [opacity * v / 255 + (1 - opacity) for v in (r, g, b)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def check_new_views(page, server, index, tmp_path):
    """Overview, animation, softmax / dense and the playground, each checked against torch and cnnkit.tf."""
    trained = Explorer.open(str(RUN[0])).trained
    image = trained.prepare(Explorer.open(str(RUN[0])).image(heldout=index))
    with torch.no_grad():
        logits = trained.model.eval()(image)[0].double()
    page.wait_for_selector("#overview[data-settled='10']", timeout=30_000)
    shown = [number(t.rstrip("%")) for t in page.locator("#overview .ov-p").all_inner_texts()]
    assert shown == pytest.approx((100 * torch.softmax(logits, 0)).tolist(), abs=0.06)
    assert page.locator("#overview .ov-lines .edge").count() == 9  # digits_cnn: nine units in a chain
    edge = page.locator("#overview .ov-lines .edge").first
    assert contrast_on_white(edge) >= 3.0  # WCAG's contrast for graphics: the lines are seen at normal zoom
    assert float(edge.evaluate("e => parseFloat(getComputedStyle(e).strokeWidth)")) >= 1.5
    # The input's line (straight, so Playwright's hover sees no height: the mouse goes to its middle): lit, named.
    page.locator("#overview").scroll_into_view_if_needed()  # the mouse below goes to viewport coordinates
    rect = page.locator("#overview .ov-lines .edge[data-to='features.0']").evaluate(
        "e => { const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }")
    page.mouse.move(*rect)
    assert page.locator("#overview .ov-lines .edge.lit").count() == 1
    assert page.locator("#tooltip").inner_text() == "the input → features.0"
    page.locator("#overview .ov-col[data-unit='features.3'] .ov-map").first.hover()
    assert page.locator("#overview .ov-col[data-unit='features.0'] .feeds").count() == 6  # a conv reads every map
    lit = page.locator("#overview .ov-lines .edge.lit")  # the column's lines in and out, and nothing else
    assert sorted((e.get_attribute("data-from"), e.get_attribute("data-to")) for e in lit.all()) == \
        [("features.0", "features.3"), ("features.3", "features.6")]
    page.locator("#overview .ov-col[data-unit='features.6'] .ov-map").nth(2).hover()
    fed = page.locator("#overview .ov-col[data-unit='features.3'] .feeds")
    assert fed.count() == 1 and fed.get_attribute("data-channel") == "2"  # a pool reads its own channel
    page.locator("#cell-panel").evaluate("e => { e.hidden = true; }")  # the open cell panel would cover it
    page.locator("#overview-panel").screenshot(path=tmp_path / "explore-overview.png")
    page.locator("#cell-panel").evaluate("e => { e.hidden = false; }")

    page.fill("#sm-temp", "2")
    page.dispatch_event("#sm-temp", "input")
    probabilities = {int(r.get_attribute("data-index")): number(r.locator(".sm-p").inner_text())
                     for r in page.locator("#sm-rows .sm-row").all()}
    expected = torch.softmax(logits / 2, 0)
    assert all(abs(probabilities[i] - float(expected[i])) < 1e-4 for i in range(10))
    predicted = int(logits.argmax())  # the dense view opens on the predicted class until one is picked
    page.wait_for_selector(f"#dense-view[data-output='{predicted}']", timeout=30_000)
    assert page.locator("#sm-output").input_value() == str(predicted)
    page.select_option("#sm-output", "3")
    page.wait_for_selector("#dense-view[data-output='3']", timeout=30_000)
    assert number(page.locator("#dense-view .dense-value").inner_text()) == pytest.approx(float(logits[3]), abs=2e-4)
    page.locator("#softmax-view").screenshot(path=tmp_path / "explore-softmax.png")

    page.click("#cell .scan-open")
    page.wait_for_selector("#cell .animation", timeout=30_000)
    page.click("#cell .scan-next")
    step = page.locator("#cell .animation")
    assert step.get_attribute("data-step") is not None and page.locator("#cell .grid td.win").count() == 9
    page.fill("#cell .scan-go-y", "1")
    page.fill("#cell .scan-go-x", "2")
    page.click("#cell .scan-go")
    assert (step.get_attribute("data-y"), step.get_attribute("data-x")) == ("1", "2")
    outputs = page.locator("#cell .scan-output td")
    page.click("#cell .scan-last")
    assert int(step.get_attribute("data-step")) == outputs.count() - 1
    assert "empty" not in (outputs.last.get_attribute("class") or "")
    page.fill("#cell .scan-go-y", "3")
    page.fill("#cell .scan-go-x", "4")
    page.click("#cell .scan-go")  # mid-map for the picture, the controls and both grids in view
    page.locator("#cell .scan").evaluate("e => e.scrollIntoView()")
    page.locator("#cell-panel").screenshot(path=tmp_path / "explore-animation.png")
    page.click("#cell-close")

    for kind, size, kernel, stride, padding, dilation in (("conv", 7, 3, 2, "same", 1), ("conv", 8, 3, 3, "same", 2),
                                                          ("max", 6, 3, 2, "same", 1), ("avg", 9, 2, 2, "valid", 1)):
        page.select_option("#pg-kind", kind)
        for name, value in (("height", size), ("width", size), ("kernel", kernel), ("stride", stride)):
            page.fill(f"#pg-{name}", str(value))
        if kind == "conv":
            page.fill("#pg-dilation", str(dilation))
        page.select_option("#pg-padding", padding)
        page.wait_for_timeout(150)
        page.wait_for_selector("#playground[data-settled='1']", timeout=30_000)
        x = ((3 * torch.arange(size)[:, None] + 5 * torch.arange(size)[None]) % 10).double()[None, :, :, None]
        if kind == "conv":
            w = ((torch.arange(kernel)[:, None] + 2 * torch.arange(kernel)[None]) % 3 - 1).double()[:, :, None, None]
            y = tf.conv2d(x, w, stride, padding.upper(), dilations=dilation)
        else:
            y = (tf.max_pool if kind == "max" else tf.avg_pool)(x, kernel, stride, padding.upper())
        left, right, top, bottom = tf.spatial_pads((size, size), (kernel, kernel), (stride, stride), padding.upper(),
                                                   (dilation, dilation))
        assert page.locator("#pg-output").inner_text() == f"{y.shape[1]}x{y.shape[2]}"
        assert page.locator("#pg-pads").inner_text() == f"top {top}, bottom {bottom}, left {left}, right {right}"
        page.click("#pg-animation .scan-output td >> nth=-1")  # the last cell: where SAME's extra padding is
        last = number(page.locator("#pg-animation .anim-out").inner_text())
        assert last == pytest.approx(float(y[0, -1, -1, 0]), abs=1e-2)
        if kind == "conv" and bottom > top:
            assert page.locator("#pg-animation td.extra").count() > 0
    page.locator("#playground").screenshot(path=tmp_path / "explore-playground.png")
    check_playground_fields(page)


def check_playground_fields(page):
    """Empty, out-of-range and too-wide settings are named in the page and never sent."""
    sent = []
    page.on("request", lambda request: sent.append(request.url) if "/api/window" in request.url else None)
    for name, value, message in (
            ("height", "", "input height must be a whole number from 1 to 32; it is empty"),
            ("kernel", "12", "kernel must be a whole number from 1 to 11; received 12"),
            ("stride", "0", "stride must be a whole number from 1 to 8; received 0"),
            ("width", "2.5", "width must be a whole number from 1 to 32; received 2.5"),
            ("kernel", "11", "kernel 11: larger than the input side 9")):  # the avg pool above: 9x9, VALID
        page.fill(f"#pg-{name}", value)
        page.wait_for_selector("#playground[data-settled='1']", timeout=30_000)
        assert page.locator("#pg-error").inner_text().startswith(message)
        assert page.locator("#pg-result").is_hidden()
        if name != "kernel" or value != "11":
            assert page.get_attribute(f"#pg-{name}", "aria-invalid") == "true"
        page.fill(f"#pg-{name}", {"height": "9", "width": "9", "kernel": "2", "stride": "2"}[name])
        page.wait_for_selector("#playground[data-settled='1']", timeout=30_000)
    page.wait_for_timeout(200)
    assert page.locator("#pg-error").inner_text() == "" and page.locator("#pg-result").is_visible()
    assert len(sent) == 5  # one request per valid setting restored, none for the half-typed ones


RUN: list[Path] = []


@pytest.mark.slow  # a real Chromium
def test_draw_predict_explain_a_cell_and_browse_the_mistakes(server, tmp_path):
    assert Path(CHROMIUM).exists(), "the browser test needs Debian's chromium (apt-get install chromium)"
    strip = httpx.get(server.url + "api/heldout", timeout=30).json()
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 960})
            watch(page, problems)
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
            check_new_views(page, server, first["index"], tmp_path)
        finally:
            browser.close()
    assert problems == [], problems  # no console error, no failed or refused request in the whole session
    target = os.environ.get("CNNKIT_EXPLORE_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "explore.png", target)
        for view in ("overview", "softmax", "animation", "playground"):
            shutil.copyfile(tmp_path / f"explore-{view}.png", Path(target).with_name(f"explore-{view}.png"))


@pytest.mark.slow  # a real Chromium and an untrained ResNet-18
def test_a_resnet_stem_animates_as_canvases_with_the_window_zoomed(tmp_path):
    """resnet18 at 32x32: its 34x34 padded stem is drawn as canvases; the zoomed window's products add up to the
    shown sum, and the scan starts at the clicked cell with the value /api/cell computed for it."""
    running = ExploreServer(Explorer(untrained("resnet18", (3, 32, 32)), "resnet18")).start()
    problems: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 960})
            watch(page, problems)
            page.goto(running.url)
            page.wait_for_selector("body[data-ready='1']" + SETTLED[4:], timeout=60_000)
            box = page.locator("#draw").bounding_box()
            page.mouse.move(box["x"] + 60, box["y"] + 40)
            page.mouse.down()
            for i in range(1, 30):
                page.mouse.move(box["x"] + 60 + 4 * i, box["y"] + 40 + 6 * i)
            page.mouse.up()
            page.wait_for_selector(SETTLED, timeout=60_000)
            page.locator(".card[data-kind='conv'] .maps canvas").nth(1).click(position={"x": 30, "y": 30})
            page.wait_for_selector("#cell-panel[data-current='1']", timeout=60_000)
            conv_output = number(page.locator("#cell .equation .total").inner_text())
            page.click("#cell .scan-open")
            page.wait_for_selector("#cell .animation .scan-zoom", timeout=60_000)
            animation = page.locator("#cell .animation")
            assert page.locator("#cell .scan-picture").get_attribute("width") == "34"
            assert number(page.locator("#cell .anim-out").inner_text()) == pytest.approx(conv_output, abs=2e-4)
            page.fill("#cell .scan-go-y", "0")
            page.fill("#cell .scan-go-x", "31")
            page.click("#cell .scan-go")
            assert animation.get_attribute("data-step") == "31"
            products = [number(t) for t in page.locator("#cell .scan-zoom .zoom-product").all_inner_texts()]
            shown = number(page.locator("#cell .anim-sum").inner_text())
            assert len(products) == 9 and sum(products) == pytest.approx(shown, abs=0.01 * (1 + abs(shown)))
            assert page.locator("#cell .scan-zoom td.pad").count() == 5  # the top-right corner: 3 + 3 - 1 pads
            page.select_option("#cell .scan-speed", "1000")
            page.click("#cell .scan-play")
            page.wait_for_function("() => document.querySelector('#cell .animation').dataset.step === '1023'",
                                   timeout=10_000)  # 1024 positions at 1000 a second
            page.fill("#cell .scan-go-y", "16")
            page.fill("#cell .scan-go-x", "12")
            page.click("#cell .scan-go")  # mid-map for the picture
            page.locator("#cell .scan").evaluate("e => e.scrollIntoView()")
            page.locator("#cell-panel").screenshot(path=tmp_path / "explore-animation-large.png")
            browser.close()
    finally:
        running.stop()
    assert problems == [], problems
    target = os.environ.get("CNNKIT_EXPLORE_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "explore-animation-large.png", Path(target).with_name("explore-animation-large.png"))
