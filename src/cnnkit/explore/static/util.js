// Small DOM, number and colour helpers shared by every view.

export const $ = (id) => document.getElementById(id);

const SVG = "http://www.w3.org/2000/svg";

// An SVG element with its attributes (and text), as `element` makes HTML ones.
export function svgElement(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function floats(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

// A 2-D plane as {h, w, at(r, c), low, high}: nested arrays (the playground) or a scan's float32 base64
// {shape, data}.
export function planeOf(values) {
  if (Array.isArray(values)) {
    const h = values.length, w = h ? values[0].length : 0;
    const flat = values.flat();
    return {h, w, at: (r, c) => values[r][c], low: Math.min(...flat), high: Math.max(...flat)};
  }
  const data = floats(values.data);
  const [h, w] = values.shape;
  let low = Infinity, high = -Infinity;
  for (const v of data) { if (v < low) low = v; if (v > high) high = v; }
  return {h, w, at: (r, c) => data[r * w + c], low, high};
}

// The one grouping of units both the overview and the layer cards draw: a unit outside any block stands alone
// ({unit}); a block's units split into its branches, in order of first appearance, and its fusion (the units with
// no branch, after the branches merge): {block, branches: [{name, units}], fusion: [units]}.
export function groupUnits(units) {
  const groups = [];
  let block = null;
  for (const unit of units) {
    if (!unit.block) { block = null; groups.push({unit}); continue; }
    if (!block || block.block !== unit.block) {
      block = {block: unit.block, branches: [], fusion: []};
      groups.push(block);
    }
    if (!unit.branch) { block.fusion.push(unit); continue; }
    let branch = block.branches.find((b) => b.name === unit.branch);
    if (!branch) {
      branch = {name: unit.branch, units: []};
      block.branches.push(branch);
    }
    branch.units.push(unit);
  }
  return groups;
}

// Class probabilities from logits (the largest subtracted first, so exp cannot overflow).
export function softmax(logits) {
  const top = Math.max(...logits);
  const e = logits.map((z) => Math.exp(z - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

export function fmt(value) {
  return Number(value).toFixed(4);
}

// A short number for a grid cell: whole numbers as they are, others to 2 decimals.
export function short(value) {
  return Number.isInteger(value) ? String(value) : Number(value).toFixed(2);
}

export function status(message) {
  $("status").textContent = message || "";
}

const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
  [92, 200, 99], [170, 220, 50], [253, 231, 37]];

export function viridis(t) {
  const p = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(p));
  const f = p - i;
  return VIRIDIS[i].map((a, k) => a + (VIRIDIS[i + 1][k] - a) * f);
}

export function heat(t) {  // black-red-yellow-white, for saliency and Grad-CAM
  const v = Math.min(1, Math.max(0, t));
  return [Math.min(255, 765 * v), Math.max(0, Math.min(255, 765 * v - 255)), Math.max(0, 765 * v - 510)];
}

// Size a canvas for an HxW input: its larger side `pixels` canvas pixels and `css` CSS pixels, the aspect ratio kept
// (an 8x12 input is drawn 12 wide by 8 high, not stretched into a square).
export function keepAspect(canvas, [H, W], pixels, css = pixels) {
  const side = Math.max(H, W);
  canvas.width = Math.round(pixels * W / side);
  canvas.height = Math.round(pixels * H / side);
  canvas.style.width = `${Math.round(css * W / side)}px`;
  canvas.style.height = `${Math.round(css * H / side)}px`;
}

export function smallCanvas(image) {
  const canvas = element("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}

// A canvas of maps' values [count][h*w] on one colour scale, each cell px pixels (CSS).
export function mapCanvas(values, offset, h, w, low, span, px) {
  const image = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = viridis((values[offset + i] - low) / span);
    image.data.set([r, g, b, 255], 4 * i);
  }
  const canvas = smallCanvas(image);
  canvas.style.width = `${w * px}px`;
  canvas.style.height = `${h * px}px`;
  return canvas;
}

export function legend() {
  const canvas = element("canvas", "legend");
  canvas.width = 64;
  canvas.height = 1;
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < 64; i++) {
    const [r, g, b] = viridis(i / 63);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(i, 0, 1, 1);
  }
  return canvas;
}

export function tooltip(event, text) {
  const tip = $("tooltip");
  tip.textContent = text;
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

export function hideTooltip() {
  $("tooltip").hidden = true;
}
