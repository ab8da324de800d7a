// The held-out strip, misclassified first.
import {$, element, smallCanvas} from "./util.js";
import {api} from "./api.js";
import {brightness, paintDrawCanvas, pixelImage, setImage} from "./input.js";
import {state} from "./state.js";

const SHOWN = 300;  // thumbnails drawn at once
let strip = null;
let filter = "all";

export async function loadStrip() {
  strip = await api("/api/heldout");
  if (!strip.available) {
    $("strip-note").textContent = strip.reason;
    $("strip-all").hidden = $("strip-wrong").hidden = true;
    return false;
  }
  const cut = strip.total > strip.count ? `the first ${strip.count} of the ${strip.total} images` : `${strip.count} images`;
  $("strip-note").textContent = `${cut} from ${strip.description}; ${strip.wrong} of them misclassified ` +
    "(red, the most confident mistakes first). Click one to explore it.";
  $("strip-wrong").textContent = `misclassified only (${strip.wrong})`;
  state.heldoutBrightness = meanBrightness(strip.images);
  renderStrip();
  return strip.images.length > 0;
}

// The held-out images' mean border and overall brightness: what an upload is compared with.
function meanBrightness(images) {
  if (!images.length) return null;
  const each = images.map((item) => brightness(Uint8Array.from(atob(item.pixels), (c) => c.charCodeAt(0))));
  return {border: each.reduce((a, b) => a + b.border, 0) / each.length,
    mean: each.reduce((a, b) => a + b.mean, 0) / each.length};
}

function renderStrip() {
  const box = $("strip");
  box.replaceChildren();
  const items = strip.images.filter((item) => filter === "all" || !item.correct);
  for (const item of items.slice(0, SHOWN)) {
    const bytes = Uint8Array.from(atob(item.pixels), (c) => c.charCodeAt(0));
    const canvas = smallCanvas(pixelImage(bytes));
    const figure = element("figure", item.correct ? "right" : "wrong");
    figure.dataset.index = String(item.index);
    figure.title = `test image ${item.index}: true ${item.true}, predicted ${item.predicted} ` +
      `(${(100 * item.confidence).toFixed(1)}%)`;
    figure.append(canvas, element("figcaption", null, `${item.true}→${item.predicted} ${(100 * item.confidence).toFixed(0)}%`));
    figure.addEventListener("click", () => {
      for (const other of box.querySelectorAll(".chosen")) other.classList.remove("chosen");
      figure.classList.add("chosen");
      const pixels = Array.from(bytes);
      paintDrawCanvas(pixels);
      setImage({heldout: item.index}, pixels, `held-out test image ${item.index}: true class ${item.true}`);
    });
    box.append(figure);
  }
}

export function setupStrip() {
  const choose = (chosen) => {
    filter = chosen;
    $("strip-all").classList.toggle("active", chosen === "all");
    $("strip-wrong").classList.toggle("active", chosen === "wrong");
    renderStrip();
  };
  $("strip-all").addEventListener("click", () => choose("all"));
  $("strip-wrong").addEventListener("click", () => choose("wrong"));
}
