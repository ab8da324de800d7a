// cnnkit explore: draw or pick an image, see the prediction, every layer's maps, a cell's arithmetic and why.
// Plain JavaScript; it talks only to the server that served it (/api/...), and names images by their pixels or
// by their index in the held-out strip, never by a file path.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null,
  activation: "post",
  image: null,            // {pixels: [...]} (display values 0..255, C*H*W) or {heldout: index}
  pixels: null,           // display pixels of the current image, for drawing it
  version: 0,             // bumped on every new image or display mode
  pages: {},              // unit id -> page of maps shown
  shown: {},              // unit id -> version its maps belong to
  visible: new Set(),     // unit ids whose cards are on screen
  busy: false, again: false,
  whyBusy: false, whyAgain: false,
  strip: null, stripFilter: "all",
  cell: null,             // the explained cell: {unit, at: [channel, y, x], version}
};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

async function api(path, body) {
  const options = body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function floats(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

function fmt(value) {
  return Number(value).toFixed(4);
}

function status(message) {
  $("status").textContent = message || "";
}

const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
  [92, 200, 99], [170, 220, 50], [253, 231, 37]];

function viridis(t) {
  const p = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(p));
  const f = p - i;
  return VIRIDIS[i].map((a, k) => a + (VIRIDIS[i + 1][k] - a) * f);
}

function heat(t) {  // black-red-yellow-white, for saliency and Grad-CAM
  const v = Math.min(1, Math.max(0, t));
  return [Math.min(255, 765 * v), Math.max(0, Math.min(255, 765 * v - 255)), Math.max(0, 765 * v - 510)];
}

// An ImageData of display pixels (C*H*W values 0..255, channel-major) at the model's size.
function pixelImage(pixels) {
  const [C, H, W] = state.model.input_shape;
  const image = new ImageData(W, H);
  for (let i = 0; i < H * W; i++) {
    for (let k = 0; k < 3; k++) image.data[4 * i + k] = pixels[(C === 3 ? k : 0) * H * W + i];
    image.data[4 * i + 3] = 255;
  }
  return image;
}

function smallCanvas(image) {
  const canvas = element("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}

// Draw the current input, scaled without smoothing, onto a display canvas.
function drawInput(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(smallCanvas(pixelImage(state.pixels)), 0, 0, canvas.width, canvas.height);
  return ctx;
}

// ---------------------------------------------------------------------------------------------------------------
// Input: drawing, upload, invert, clear

const drawCanvas = () => $("draw");

function canvasPixels() {
  const [C, H, W] = state.model.input_shape;
  const small = element("canvas");
  small.width = W;
  small.height = H;
  const ctx = small.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(drawCanvas(), 0, 0, W, H);
  const rgba = ctx.getImageData(0, 0, W, H).data;
  const pixels = new Array(C * H * W);
  for (let i = 0; i < H * W; i++) {
    const grey = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3;
    for (let c = 0; c < C; c++) pixels[c * H * W + i] = C === 3 ? rgba[4 * i + c] : grey;
  }
  return pixels;
}

function setImage(image, pixels, note) {
  state.image = image;
  state.pixels = pixels;
  state.version += 1;
  document.body.dataset.settled = "0";
  $("cell-panel").dataset.current = "0";
  drawInput($("seen"));
  $("input-note").textContent = note || "";
  for (const card of document.querySelectorAll(".card")) card.classList.add("stale");
  refresh();
}

function paintDrawCanvas(pixels) {
  const ctx = drawCanvas().getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(smallCanvas(pixelImage(pixels)), 0, 0, drawCanvas().width, drawCanvas().height);
}

function fromDrawing(note) {
  const pixels = canvasPixels();
  setImage({pixels}, pixels, note || "drawn");
}

function clearCanvas() {
  const ctx = drawCanvas().getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, drawCanvas().width, drawCanvas().height);
}

function setupDrawing() {
  const canvas = drawCanvas();
  const [, H, W] = state.model.input_shape;
  const ctx = canvas.getContext("2d");
  let last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  const stroke = (to) => {
    ctx.strokeStyle = "#fff";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Math.max(8, 1.5 * canvas.width / Math.max(H, W));  // about one and a half input pixels
    ctx.beginPath();
    ctx.moveTo(...(last || to));
    ctx.lineTo(...to);
    ctx.stroke();
    last = to;
    fromDrawing();
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = null;
    stroke(point(event));
  });
  canvas.addEventListener("pointermove", (event) => { if (last) stroke(point(event)); });
  const end = () => { last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => { clearCanvas(); fromDrawing("cleared"); });
  $("invert").addEventListener("click", () => {
    ctx.globalCompositeOperation = "difference";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.globalCompositeOperation = "source-over";
    fromDrawing("inverted");
  });
  $("upload").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    try {
      const response = await fetch("/api/upload", {method: "POST", body: file,
        headers: {"Content-Type": file.type || "application/octet-stream"}});
      const data = await response.json();
      if (!response.ok) throw new Error(data.error);
      paintDrawCanvas(data.pixels);
      setImage({pixels: data.pixels}, data.pixels, `uploaded ${file.name}`);
      status("");
    } catch (error) {
      status(`upload refused: ${error.message}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Prediction and maps of the visible layers, one request at a time (the newest image wins)

async function refresh() {
  if (!state.image) return;
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  state.again = false;
  const version = state.version;
  const layers = {};
  for (const id of state.visible) layers[id] = state.pages[id] || 0;
  try {
    const result = await api("/api/predict", {image: state.image, layers, activation: state.activation, top_k: 5});
    showTop(result.top);
    for (const [id, maps] of Object.entries(result.maps)) showMaps(id, maps, version);
    status("");
  } catch (error) {
    status(error.message);
  } finally {
    state.busy = false;
  }
  const missing = [...state.visible].some((id) => state.shown[id] !== state.version);
  if (state.again || missing) {
    refresh();
  } else {
    document.body.dataset.settled = "1";  // the prediction and visible maps belong to the current image
    if (state.cell && state.cell.version !== state.version) explainCell(state.cell.unit, ...state.cell.at);
    refreshWhy();
  }
}

function showTop(top) {
  const list = $("top");
  list.replaceChildren();
  for (const entry of top) {
    const item = element("li");
    const bar = element("span", "bar");
    const fill = element("span", "fill");
    fill.style.width = `${(100 * entry.probability).toFixed(1)}%`;
    bar.append(fill);
    item.append(element("span", "label", entry.class), bar, element("span", "p", `${(100 * entry.probability).toFixed(1)}%`));
    list.append(item);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Layers: one card per unit (a layer with the batch norm and activation after it), branches side by side

function buildLayers() {
  const root = $("layers");
  let block = null;
  for (const unit of state.model.units) {
    let parent = root;
    if (unit.block) {
      if (!block || block.name !== unit.block) {
        const node = element("div", "block");
        node.append(element("h3", null, `${unit.block}: branches, then their fusion`));
        const branches = element("div", "branches");
        const fusion = element("div", "fusion");
        node.append(branches, fusion);
        root.append(node);
        block = {name: unit.block, branches, fusion, columns: {}};
      }
      if (unit.branch) {
        if (!block.columns[unit.branch]) {
          const column = element("div", "branch");
          column.append(element("h4", null, `branch ${unit.branch}`));
          block.branches.append(column);
          block.columns[unit.branch] = column;
        }
        parent = block.columns[unit.branch];
      } else {
        parent = block.fusion;
      }
    } else {
      block = null;
    }
    parent.append(card(unit));
  }
  const observer = new IntersectionObserver((entries) => {
    let newly = false;
    for (const entry of entries) {
      const id = entry.target.dataset.unit;
      if (entry.isIntersecting) {
        state.visible.add(id);
        newly = newly || state.shown[id] !== state.version;
      } else {
        state.visible.delete(id);
      }
    }
    if (newly) refresh();
  }, {rootMargin: "200px"});
  for (const node of document.querySelectorAll(".card")) observer.observe(node);
}

function card(unit) {
  const node = element("div", `card${unit.explainable ? " explainable" : ""}`);
  node.dataset.unit = unit.id;
  node.dataset.kind = unit.kind;
  // Inside a branch column the block and branch are in its heading; the card names the layers below them.
  const prefix = unit.block ? `${unit.block}.${unit.branch ? `${unit.branch}.` : ""}` : "";
  const short = (name) => (prefix && name.startsWith(prefix) ? name.slice(prefix.length) : name);
  const title = unit.names.map((name, i) => `${short(name)} ${unit.types[i]}`).join(" → ");
  node.append(element("h3", null, title));
  const table = element("table", "rows");
  const head = element("tr");
  for (const label of ["layer", "type", "output", "params", "mult-adds", "RF", "formula"]) {
    head.append(element("th", null, label));
  }
  table.append(head);
  for (const row of unit.rows) {
    const line = element("tr");
    const cells = [row.name, row.type, row.output_shape.join("x") || "-", row.trainable.toLocaleString(),
      row.macs.toLocaleString(), row.receptive_field === null ? "all" : String(row.receptive_field), row.formula];
    for (const text of cells) line.append(element("td", null, text));
    table.append(line);
  }
  const wrap = element("div", "table-wrap");
  wrap.append(table);
  node.append(wrap);
  const info = element("div", "map-head");
  info.append(element("span", "which"), element("span", "range"), element("span", "pager"));
  node.append(info, element("div", "maps"));
  return node;
}

function showMaps(id, data, version) {
  const node = document.querySelector(`.card[data-unit="${CSS.escape(id)}"]`);
  if (!node || version !== state.version) return;
  const unit = state.model.units.find((u) => u.id === id);
  state.shown[id] = version;
  node.classList.remove("stale");
  const values = floats(data.data);
  const low = data.low;
  const span = data.high > data.low ? data.high - data.low : 1;
  const which = state.activation === "pre" || unit.names.length === 1 ?
    `output of ${unit.id}` : `after ${unit.types.slice(1).join(" + ")} (${data.layer})`;
  node.querySelector(".which").textContent = which + (data.scale > 1 ? `; each cell the mean of ${data.scale}x${data.scale}` : "");
  const range = node.querySelector(".range");
  range.replaceChildren(element("span", null, `${fmt(data.low)} `), legend(), element("span", null, ` ${fmt(data.high)}`));
  const maps = node.querySelector(".maps");
  maps.replaceChildren();
  if (data.kind === "vector") {
    node.querySelector(".pager").replaceChildren();
    maps.append(vectorFigure(unit, data, values, low, span));
    return;
  }
  pager(node, unit, data);
  const [h, w] = data.size;
  const px = Math.max(1, Math.floor(64 / Math.max(h, w)));  // every map about 64 pixels wide
  for (let m = 0; m < data.count; m++) {
    const image = new ImageData(w, h);
    for (let i = 0; i < h * w; i++) {
      const [r, g, b] = viridis((values[m * h * w + i] - low) / span);
      image.data.set([r, g, b, 255], 4 * i);
    }
    const canvas = smallCanvas(image);
    canvas.style.width = `${w * px}px`;
    canvas.style.height = `${h * px}px`;
    const channel = data.first + m;
    const at = (event) => [Math.min(h - 1, Math.floor(event.offsetY / px)), Math.min(w - 1, Math.floor(event.offsetX / px))];
    canvas.addEventListener("mousemove", (event) => {
      const [y, x] = at(event);
      const mean = data.scale > 1 ? ` (mean of ${data.scale}x${data.scale} cells)` : "";
      tooltip(event, `map ${channel}, row ${y * data.scale}, col ${x * data.scale}: ${fmt(values[m * h * w + y * w + x])}${mean}`);
    });
    canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    if (unit.explainable) {
      canvas.addEventListener("click", (event) => {
        const [y, x] = at(event);
        const [, H, W] = unit.shape;
        explainCell(unit, channel, Math.min(H - 1, y * data.scale + Math.floor(data.scale / 2)),
          Math.min(W - 1, x * data.scale + Math.floor(data.scale / 2)));
      });
    }
    const figure = element("figure");
    figure.append(canvas, element("figcaption", null, String(channel)));
    maps.append(figure);
  }
}

function vectorFigure(unit, data, values, low, span) {
  const columns = 32;
  const rows = Math.ceil(values.length / columns);
  const image = new ImageData(columns, rows);
  values.forEach((v, i) => image.data.set([...viridis((v - low) / span), 255], 4 * i));
  const canvas = smallCanvas(image);
  canvas.style.width = `${columns * 8}px`;
  canvas.style.height = `${rows * 8}px`;
  canvas.addEventListener("mousemove", (event) => {
    const i = Math.floor(event.offsetY / 8) * columns + Math.floor(event.offsetX / 8);
    if (i < values.length) {
      const what = data.scale > 1 ? `values ${i * data.scale}..${(i + 1) * data.scale - 1} (mean)` : `value ${i}`;
      tooltip(event, `${what}: ${fmt(values[i])}`);
    }
  });
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  const figure = element("figure");
  figure.append(canvas, element("figcaption", null, `${data.length} values${data.scale > 1 ? `, shown as means of ${data.scale}` : ""}`));
  return figure;
}

function legend() {
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

function pager(node, unit, data) {
  const box = node.querySelector(".pager");
  box.replaceChildren();
  if (data.pages <= 1) {
    box.textContent = `${data.channels} maps`;
    return;
  }
  const go = (page) => { state.pages[unit.id] = page; state.shown[unit.id] = -1; refresh(); };
  const back = element("button", null, "‹");
  back.disabled = data.page === 0;
  back.addEventListener("click", () => go(data.page - 1));
  const next = element("button", null, "›");
  next.disabled = data.page >= data.pages - 1;
  next.addEventListener("click", () => go(data.page + 1));
  box.append(back, element("span", null, ` maps ${data.first}–${data.first + data.count - 1} of ${data.channels} `), next);
}

function tooltip(event, text) {
  const tip = $("tooltip");
  tip.textContent = text;
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

// ---------------------------------------------------------------------------------------------------------------
// A clicked cell: receptive field on the input and the arithmetic with the real numbers

// The panel follows the image: a new drawing re-explains the same cell.
async function explainCell(unit, channel, y, x) {
  const version = state.version;
  state.cell = {unit, at: [channel, y, x], version};
  try {
    const e = await api("/api/cell", {image: state.image, layer: unit.id, channel, y, x});
    renderCell(e);
    $("cell-panel").dataset.current = version === state.version ? "1" : "0";
  } catch (error) {
    status(error.message);
  }
}

function grid(values, picked) {
  const table = element("table", "grid");
  values.forEach((row, i) => {
    const line = element("tr");
    row.forEach((v, j) => {
      const cell = v === null ? element("td", "pad", "pad") : element("td", null, fmt(v));
      if (picked && picked[0] === i && picked[1] === j) cell.classList.add("picked");
      line.append(cell);
    });
    table.append(line);
  });
  return table;
}

function renderCell(e) {
  const box = $("cell");
  box.replaceChildren();
  box.append(element("h3", null, `${e.layer} (${e.type}), map ${e.channel}, cell row ${e.y}, column ${e.x}`));
  const field = element("canvas");
  field.id = "cell-field";
  field.width = 160;
  field.height = 160;
  box.append(field);
  const [, H, W] = state.model.input_shape;
  const ctx = drawInput(field);
  if (e.field) {
    const f = e.field;
    const top = Math.max(0, f.top), left = Math.max(0, f.left);
    const bottom = Math.min(H - 1, f.bottom), right = Math.min(W - 1, f.right);
    ctx.strokeStyle = "#ff3b30";
    ctx.lineWidth = 2;
    ctx.strokeRect(left * 160 / W + 1, top * 160 / H + 1, (right - left + 1) * 160 / W - 2, (bottom - top + 1) * 160 / H - 2);
    const outside = f.top < 0 || f.left < 0 || f.bottom >= H || f.right >= W ? " (reaching into the padding)" : "";
    box.append(element("p", "note", `Receptive field on the input: rows ${f.top}..${f.bottom}, columns ${f.left}..${f.right}` +
      ` (${f.bottom - f.top + 1}x${f.right - f.left + 1} pixels)${outside}.`));
  } else {
    box.append(element("p", "note", "This cell sees the whole input."));
  }
  const w = e.window;
  const pads = w.pads;
  box.append(element("p", "note", `Window ${w.kernel.join("x")}, stride ${w.stride.join("x")}` +
    (w.dilation[0] > 1 || w.dilation[1] > 1 ? `, dilation ${w.dilation.join("x")}` : "") +
    ` over this layer's ${w.input_size.join("x")} input: rows ${w.rows[0]}..${w.rows[w.rows.length - 1]}, columns ` +
    `${w.cols[0]}..${w.cols[w.cols.length - 1]}; padding top ${pads.top}, bottom ${pads.bottom}, left ${pads.left}, ` +
    `right ${pads.right}` + (pads.bottom > pads.top || pads.right > pads.left ?
      " (TF SAME puts the extra row/column at the bottom/right)" : "") + ". Hatched cells are padding."));
  if (e.kind === "conv") renderConv(box, e); else renderPool(box, e);
  for (const step of e.steps) {
    const line = element("p", "step");
    if (step.op === "batch_norm") {
      line.append(`${step.type} (${step.layer}): (x − mean) / √(var + ε) · γ + β = (${fmt(step.input)} − ${fmt(step.mean)}) / ` +
        `√(${fmt(step.var)} + ${step.eps}) · ${fmt(step.gamma)} + ${fmt(step.beta)} = `);
    } else {
      line.append(`${step.type} (${step.layer}): ${step.formula.replace(/\bx\b/, fmt(step.input))} = `);
    }
    line.append(element("span", "step-value", fmt(step.value)));
    box.append(line);
  }
  const mode = state.activation === "pre" ? "pre" : "post";
  const shown = element("p", "step");
  shown.append(`Value in the ${mode === "pre" ? "pre" : "post"}-activation map: `,
    element("span", "map-value", fmt(e.map_value[mode])));
  box.append(shown);
  $("cell-panel").hidden = false;
}

function renderConv(box, e) {
  const limit = 6;
  const list = element("div");
  e.channels.forEach((c, i) => {
    const row = element("div", "channel");
    row.append(element("span", null, `input channel ${c.input_channel}:`), grid(c.patch), element("span", null, "·"),
      grid(c.kernel), element("span", null, `= ${fmt(c.sum)}`));
    row.hidden = i >= limit;
    list.append(row);
  });
  box.append(element("h4", null, `Patch · kernel, per input channel${e.groups > 1 ? ` (group of ${e.channels.length} channels)` : ""}`));
  box.append(list);
  if (e.channels.length > limit) {
    const more = element("button", null, `show all ${e.channels.length} channels`);
    more.addEventListener("click", () => { for (const row of list.children) row.hidden = false; more.remove(); });
    box.append(more);
  }
  const equation = element("p", "equation");
  equation.append("Sum over channels: ");
  e.channels.forEach((c, i) => {
    if (i) equation.append(" + ");
    equation.append(element("span", "term", fmt(c.sum)));
  });
  equation.append(" + bias ", element("span", "term bias", fmt(e.bias)), " = ", element("span", "total", fmt(e.output)));
  box.append(equation);
}

function renderPool(box, e) {
  box.append(element("h4", null, `Window on channel ${e.channel}`));
  box.append(grid(e.channel_patch, e.argmax));
  const line = element("p", "equation");
  if (e.kind === "max_pool") {
    line.append("max of the real cells (a max pool never picks padding) = ", element("span", "total", fmt(e.output)));
  } else {
    line.append(`sum ${fmt(e.sum)} / ${e.divisor} cells = `, element("span", "total", fmt(e.output)));
  }
  box.append(line);
}

// ---------------------------------------------------------------------------------------------------------------
// Why: saliency and Grad-CAM for the chosen class

async function refreshWhy() {
  if (!state.image) return;
  if (state.whyBusy) { state.whyAgain = true; return; }
  state.whyBusy = true;
  state.whyAgain = false;
  const chosen = $("why-class").value;
  try {
    const r = await api("/api/why", {image: state.image, class_index: chosen === "" ? null : Number(chosen)});
    const [, H, W] = state.model.input_shape;
    overlay($("saliency"), floats(r.saliency.data), r.saliency.size, r.saliency.high, false);
    if (r.grad_cam) {
      overlay($("grad-cam"), floats(r.grad_cam.data), r.grad_cam.size, r.grad_cam.high, true);
      $("grad-cam-caption").textContent = `Grad-CAM on ${r.grad_cam.layer} (${r.grad_cam.size.join("x")})`;
    }
    $("why-note").textContent = `Explaining class ${r.class} (probability ${(100 * r.probability).toFixed(1)}%) ` +
      `for the ${W}x${H} input.`;
  } catch (error) {
    status(error.message);
  } finally {
    state.whyBusy = false;
  }
  if (state.whyAgain) refreshWhy();
}

function overlay(canvas, values, size, high, smooth) {
  const ctx = drawInput(canvas);
  const [h, w] = size;
  const image = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const t = high > 0 ? values[i] / high : 0;
    image.data.set([...heat(t), Math.round(200 * t)], 4 * i);
  }
  ctx.imageSmoothingEnabled = smooth;
  ctx.drawImage(smallCanvas(image), 0, 0, canvas.width, canvas.height);
}

// ---------------------------------------------------------------------------------------------------------------
// The held-out strip, misclassified first

async function loadStrip() {
  const strip = await api("/api/heldout");
  state.strip = strip;
  if (!strip.available) {
    $("strip-note").textContent = strip.reason;
    $("strip-all").hidden = $("strip-wrong").hidden = true;
    return false;
  }
  $("strip-note").textContent = `${strip.count} images from ${strip.description}; ${strip.wrong} misclassified ` +
    "(red, the most confident mistakes first). Click one to explore it.";
  $("strip-wrong").textContent = `misclassified only (${strip.wrong})`;
  renderStrip();
  return strip.images.length > 0;
}

function renderStrip() {
  const box = $("strip");
  box.replaceChildren();
  const items = state.strip.images.filter((item) => state.stripFilter === "all" || !item.correct);
  for (const item of items.slice(0, 300)) {
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

function setupStrip() {
  const choose = (filter) => {
    state.stripFilter = filter;
    $("strip-all").classList.toggle("active", filter === "all");
    $("strip-wrong").classList.toggle("active", filter === "wrong");
    renderStrip();
  };
  $("strip-all").addEventListener("click", () => choose("all"));
  $("strip-wrong").addEventListener("click", () => choose("wrong"));
}

// ---------------------------------------------------------------------------------------------------------------
// Start

async function start() {
  const model = await api("/api/model");
  state.model = model;
  const [C, H, W] = model.input_shape;
  $("title").textContent = `${model.title} (${model.model})`;
  document.title = `cnnkit explore: ${model.title}`;
  $("untrained").hidden = model.trained;
  $("input-size").textContent = `${C}x${H}x${W}`;
  const seen = $("seen");
  seen.width = W;
  seen.height = H;
  $("totals").textContent = `${model.units.length} units; trainable parameters ${model.totals.trainable.toLocaleString()}; ` +
    `multiply-adds per image ${model.totals.macs.toLocaleString()}`;
  model.classes.forEach((name, i) => {
    const option = element("option", null, name);
    option.value = String(i);
    $("why-class").append(option);
  });
  $("why-class").addEventListener("change", refreshWhy);
  $("pre-activation").addEventListener("change", (event) => {
    state.activation = event.target.checked ? "pre" : "post";
    state.version += 1;
    document.body.dataset.settled = "0";
    refresh();
  });
  $("cell-close").addEventListener("click", () => { $("cell-panel").hidden = true; state.cell = null; });
  clearCanvas();
  setupDrawing();
  setupStrip();
  buildLayers();
  let picked = false;
  try {
    if (await loadStrip()) {
      document.querySelector("#strip figure").click();
      picked = true;
    }
  } catch (error) {
    status(error.message);
  }
  if (!picked) fromDrawing("blank: draw on the black square");
  document.body.dataset.ready = "1";
}

window.addEventListener("DOMContentLoaded", () => start().catch((error) => status(error.message)));
