"""The explore page's guidance in a real browser (Playwright driving Debian's Chromium, never a download): the
softmax table capped at the top 10, the Why menu by probability, the animation's post-activation values, the
loss caption of Watch it learn, an overview that fits its panel, the empty / inverted input hints, the untrained
mark and HxW for a non-square input. Numbers are checked against torch and the session's Python side."""

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import sync_playwright
from torch import nn

from cnnkit.analysis.inference import untrained
from cnnkit.explore.learn import open_training
from cnnkit.explore.server import ExploreServer
from cnnkit.explore.session import Explorer
from tests.browser import CHROMIUM, collect_errors, launch

READY = "body[data-ready='1'][data-settled='1']"


def browse(url: str, width: int, check) -> None:
    """Open the page at `url` in a `width` px wide window and run `check(page)`; no console or page error."""
    assert Path(CHROMIUM).exists(), "the browser test needs Debian's chromium (apt-get install chromium)"
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": 960})
            collect_errors(page, problems)
            page.goto(url)
            page.wait_for_selector(READY, timeout=60_000)
            check(page)
        finally:
            browser.close()
    assert problems == [], problems


def serve(explorer: Explorer, width: int, check) -> None:
    running = ExploreServer(explorer).start()
    try:
        browse(running.url, width, lambda page: check(page, running))
    finally:
        running.stop()


def inside(page, inner: str, outer: str) -> bool:
    """Whether `inner`'s box lies within `outer`'s (what the user sees without scrolling it)."""
    a, b = page.locator(inner).bounding_box(), page.locator(outer).bounding_box()
    return a["x"] >= b["x"] - 0.5 and a["x"] + a["width"] <= b["x"] + b["width"] + 0.5


@pytest.mark.slow  # a real Chromium
def test_many_classes_non_square_and_untrained(tmp_path):
    """An untrained digits_cnn with 1000 classes on 1x8x12: ten softmax rows whose exp column is divided by the sum
    over all 1000, the Why menu in torch's order, HxW named as 8x12, the input drawn 12 wide by 8 high."""
    trained = untrained("digits_cnn", (1, 8, 12), 1000)
    explorer = Explorer(trained, "digits_cnn")

    def check(page, running):
        page.wait_for_function("() => document.querySelector('#why-note').textContent.includes('empty')")
        note = page.locator("#why-note").inner_text()
        assert "for the 8x12 input" in note and "Untrained" in note
        assert page.locator("#input-warning").inner_text() == "The input is empty: draw or upload an image."
        for canvas in ("#seen", "#draw", "#saliency", "#grad-cam", "#overview .ov-input canvas"):
            box = page.locator(canvas).bounding_box()
            assert box["width"] / box["height"] == pytest.approx(12 / 8, abs=0.05), canvas
        assert page.locator("#top .untrained-mark").is_visible()

        pixels = np.random.default_rng(0).integers(0, 256, (8, 12))
        (tmp_path / "noise.png").write_bytes(png(pixels))
        sent = httpx.post(running.url + "api/upload", content=png(pixels), timeout=30,
                          headers={"Content-Type": "image/png"}).json()["pixels"]
        assert sent == pixels.reshape(-1).tolist()  # the upload keeps an 8x12 image's pixels as they are
        page.set_input_files("#upload", str(tmp_path / "noise.png"))
        page.wait_for_function("() => document.querySelector('#input-note').textContent === 'uploaded noise.png'")
        page.wait_for_selector(READY[4:], timeout=30_000)
        with torch.no_grad():
            logits = trained.model.eval()(explorer.image(pixels=[float(v) for v in sent]))[0].double()
        rows = page.locator("#sm-rows .sm-row")
        assert rows.count() == 10
        order = torch.argsort(logits, descending=True).tolist()
        assert [int(r.get_attribute("data-index")) for r in rows.all()] == order[:10]
        exps = torch.exp(logits - logits.max())
        assert float(page.locator("#sm-sum").inner_text()) == pytest.approx(float(exps.sum()), abs=1e-4)
        p = [float(t) for t in page.locator("#sm-rows .sm-p").all_inner_texts()]
        assert p == pytest.approx((exps / exps.sum())[order[:10]].tolist(), abs=1e-4)
        assert page.locator("#sm-shown").inner_text().startswith("10 of 1000 classes")
        assert "the sum runs over all 1000" in page.locator("#sm-shown").inner_text()
        values = page.locator("#why-class option").evaluate_all("os => os.map((o) => o.value)")
        assert len(values) == 1001 and values[0] == "" and [int(v) for v in values[1:21]] == order[:20]
        page.select_option("#why-class", str(order[3]))
        page.wait_for_function(f"() => document.querySelector('#why-note').textContent.includes('class {order[3]} ')")
        assert page.locator("#why-class").input_value() == str(order[3])  # still chosen after the re-sort
        assert page.locator("#input-warning").is_hidden()

    serve(explorer, 1400, check)


@pytest.mark.slow  # a real Chromium
def test_the_learn_caption_names_label_smoothing_and_dropout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    explorer = open_training("digits_cnn", 1, Path("runs/d"))
    smoothing = explorer.training.config.label_smoothing
    has_dropout = any(isinstance(m, nn.Dropout) for m in explorer.trained.model.modules())

    def check(page, running):
        page.wait_for_selector("#learn-panel[data-state='idle']", timeout=30_000)
        caption = page.locator("#learn-caption").inner_text()
        assert f"label smoothing {smoothing}" in caption and smoothing > 0
        assert ("dropout on" in caption) == has_dropout and "plain cross-entropy in eval mode" in caption
        assert page.locator("#top .untrained-mark").inner_text().startswith("untrained")
        assert page.locator("#input-warning").inner_text() == "The input is empty: draw a digit."

    serve(explorer, 1400, check)
    assert not Path("runs/d").exists()  # nothing written before Start


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.slow  # a real Chromium
def test_trained_digits_overview_animation_and_input_hints(trained_run, tmp_path):
    explorer = Explorer.open(str(trained_run))
    units = {u["id"]: u for u in explorer.describe()["units"]}

    def check(page, running):
        # The overview's probabilities are in view at 1400 px and in a 700 px window, where the row scrolls.
        page.wait_for_selector("#overview[data-settled='10']", timeout=30_000)
        assert inside(page, "#overview .ov-classes", "#overview")
        assert page.locator("#overview-scroll").is_hidden()  # the smallest network fits a 1400 px window
        assert page.locator("#overview").evaluate("e => e.scrollWidth <= e.clientWidth")
        more = page.locator("#overview .ov-col[data-unit='features.0'] .ov-more")
        assert more.inner_text() == f"+{units['features.0']['shape'][0] - 6} more"
        page.set_viewport_size({"width": 1200, "height": 960})  # a notebook's frame: narrower gaps, still no scroller
        page.wait_for_function("() => getComputedStyle(document.querySelector('#overview'))"
                               ".getPropertyValue('--ov-gap') !== '26px'")
        assert page.locator("#overview").evaluate("e => e.scrollWidth <= e.clientWidth")
        assert page.locator("#overview-scroll").is_hidden()
        page.set_viewport_size({"width": 700, "height": 960})
        page.wait_for_selector("#overview-scroll:not([hidden])", timeout=10_000)
        assert inside(page, "#overview .ov-classes", "#overview")
        page.locator("#overview").evaluate("e => { e.scrollLeft = e.scrollWidth; }")
        page.wait_for_timeout(100)
        assert inside(page, "#overview .ov-classes", "#overview")
        page.set_viewport_size({"width": 1400, "height": 960})

        # The animation of a conv + BN + ReLU map: its grid is the conv's own output; beside the current cell the
        # value the post-activation map shows, as the session's recorded forward pass has it.
        image = explorer.image(heldout=0)
        page.locator("#strip figure[data-index='0']").click()
        page.wait_for_selector(READY[4:], timeout=30_000)
        page.locator(".card[data-kind='conv'] .maps canvas").first.click(position={"x": 3, "y": 3})
        page.wait_for_selector("#cell-panel[data-current='1']", timeout=30_000)
        page.click("#cell .scan-open")
        page.wait_for_selector("#cell .animation", timeout=30_000)
        caption = page.locator("#cell .scan-figures h4").last.inner_text()
        C, H, W = units["features.0"]["shape"]
        assert caption == f"the layer's own output {H}x{W}, before BatchNorm2d and ReLU"
        for y, x in ((3, 3), (0, W - 1), (H - 1, 2)):
            page.fill("#cell .scan-go-y", str(y))
            page.fill("#cell .scan-go-x", str(x))
            page.click("#cell .scan-go")
            cell = explorer.cell(image, "features.0", 0, y, x)
            assert float(page.locator("#cell .anim-out").inner_text()) == pytest.approx(cell["output"], abs=1e-4)
            assert float(page.locator("#cell .anim-post").inner_text()) == pytest.approx(
                cell["map_value"]["post"], abs=1e-4)
        page.click("#cell-close")

        # Empty and inverted inputs are named; a light-on-dark upload is not.
        page.click("#clear")
        page.wait_for_selector(READY[4:], timeout=30_000)
        assert page.locator("#input-warning").inner_text() == "The input is empty: draw a digit."
        # Why answers after the prediction settles (its own request): wait for its note, not for data-settled
        page.wait_for_function("() => document.querySelector('#why-note').textContent.includes('The input is empty')",
                               timeout=30_000)
        strip = httpx.get(running.url + "api/heldout", timeout=30).json()["images"]
        border = np.mean([np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]]).mean() for a in (
            np.frombuffer(base64.b64decode(item["pixels"]), np.uint8).reshape(H, W) for item in strip)])
        digit = np.zeros((H, W))
        digit[1:-1, W // 2 - 1:W // 2 + 1] = 255  # a "1", white on black as the training data
        for array, name, hinted in ((255 - digit, "dark.png", True), (digit, "light.png", False)):
            path = tmp_path / name
            path.write_bytes(png(array))
            page.set_input_files("#upload", str(path))
            page.wait_for_function(f"() => document.querySelector('#input-note').textContent === 'uploaded {name}'")
            page.wait_for_selector(READY[4:], timeout=30_000)
            warning = page.locator("#input-warning")
            if hinted:
                assert warning.inner_text().endswith("Try Invert.")
                assert f"the held-out images' is dark ({border:.0f})" in warning.inner_text()
            else:
                assert warning.is_hidden()

    serve(explorer, 1400, check)


@pytest.mark.slow  # a real Chromium
def test_hovering_a_fusion_outlines_the_maps_it_is_made_of():
    """googlenet's depth concatenation: map c comes from one branch's map (branches stacked in order, as
    torch.cat does); resnet18's residual add: map c is the sum of channel c of both inputs."""
    for name, kind in (("googlenet", "concat"), ("resnet18", "add")):
        explorer = Explorer(untrained(name, (3, 32, 32)), name)
        fuse = next(u for u in explorer.units if u.types[0] == "Fuse")
        depths = [explorer.by_id[i].shape[0] for i in explorer.inputs[fuse.id]]
        assert sum(depths) == fuse.shape[0] if kind == "concat" else set(depths) == {fuse.shape[0]}

        def check(page, running, fuse=fuse, kind=kind, inputs=explorer.inputs[fuse.id]):
            page.locator(f"#overview .ov-col[data-unit='{fuse.id}'] .ov-map").nth(2).hover()
            fed = page.locator("#overview .feeds")
            sources = [page.evaluate("(m) => m.closest('.ov-col').dataset.unit", fed.nth(i).element_handle())
                       for i in range(fed.count())]
            channels = [fed.nth(i).get_attribute("data-channel") for i in range(fed.count())]
            if kind == "concat":  # map 2 lies in the first branch (64 maps deep)
                assert (sources, channels) == ([inputs[0]], ["2"])
            else:
                assert sorted(sources) == sorted(inputs) and channels == ["2"] * len(inputs)

        serve(explorer, 1400, check)
