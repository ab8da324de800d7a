// The animated scan: a window slides over the padded input while the output map fills in, with play / pause /
// step, first / last, go to a cell and speed; the current window's products (or values) and their sum are written
// out as it moves. A small padded input is drawn as tables of numbers; a larger one (a 224x224 stem) as
// canvases, one pixel a cell, with the window outlined and a zoomed table of its numbers.
// The output values come from the server (cnnkit.tf or the model's own layer); the page only lays them out.
import {element, fmt, planeOf, short, viridis} from "./util.js";

const SPEEDS = [1, 2, 5, 10, 30, 100, 300, 1000];  // window positions per second
const FRAME_MS = 1000 / 60;  // past 60 positions a second, each frame moves several positions
// Padded cells a side drawn as a table of numbers: the playground's whole numbers (up to 32 + 2 x 8 pads), or a
// model's four-decimal values (wider cells: past 20 a side the table no longer fits the panel).
const GRID_SIDE = {integers: 48, decimals: 20};
const CANVAS_PX = 290;       // CSS pixels the larger side of a canvas-drawn input is shown at
const OUTPUT_PX = 200;       // and of the output map beside it

// spec: {op: conv|max|avg, input_values, kernel_values: [kh][kw] | null, kernel: [kh, kw], stride: [sh, sw],
// dilation: [dh, dw], pads: {top, bottom, left, right}, output_values, partial_values? (a conv's share from this
// one input channel), bias?, counts_padding?}; planes are nested arrays or {shape, data} (float32 base64).
export function animation(spec, {integers = false} = {}) {
  const number = integers ? short : fmt;
  const input = planeOf(spec.input_values), output = planeOf(spec.output_values);
  const partial = spec.partial_values ? planeOf(spec.partial_values) : null;
  const post = spec.post_values ? planeOf(spec.post_values) : null;  // what the post-activation map shows
  const {h: H, w: W} = input, {h: OH, w: OW} = output;
  const {top, bottom, left, right} = spec.pads;
  const [kh, kw] = spec.kernel, [sh, sw] = spec.stride, [dh, dw] = spec.dilation;
  const PH = H + top + bottom, PW = W + left + right;
  const root = element("div", "animation");
  if (!OH || !OW) {
    root.append(element("p", "note", "The output is empty: there is nothing to scan."));
    return {root, stop: () => {}, goTo: () => {}};
  }
  const total = OH * OW;
  const geometry = {H, W, OH, OW, PH, PW, top, left, kh, kw, sh, sw, dh, dw};
  const side = integers ? GRID_SIDE.integers : GRID_SIDE.decimals;
  const view = Math.max(PH, PW) <= side ? gridView(spec, input, output, geometry, number) :
    canvasView(spec, input, output, geometry);

  const where = element("span", "scan-where");
  const button = (className, text, title) => {
    const node = element("button", className, text);
    node.type = "button";
    if (title) node.title = title;
    return node;
  };
  const first = button("scan-first", "◀◀", "first position");
  const back = button("scan-back", "◀ step");
  const play = button("scan-play", "▶ play");
  const next = button("scan-next", "step ▶");
  const last = button("scan-last", "▶▶", "last position: the whole map");
  const speed = element("select", "scan-speed");
  for (const s of SPEEDS) {
    const option = element("option", null, `${s} / s`);
    option.value = String(s);
    speed.append(option);
  }
  speed.value = total > 400 ? "300" : "2";  // a 112x112 map at 2 / s would take 100 minutes
  const rowField = numberField("scan-go-y", OH - 1), colField = numberField("scan-go-x", OW - 1);
  const go = button("scan-go", "go");
  const controls = element("div", "buttons scan-controls");
  const speedLabel = element("label", null, "speed ");
  speedLabel.append(speed);
  const goTo = element("label", null, "output row ");
  goTo.append(rowField, " col ", colField, go);
  controls.append(first, back, play, next, last, speedLabel, goTo, where);
  const work = element("div", "equation scan-work");
  root.append(controls, view.figures, work);

  let step = 0;
  let timer = null;

  function windowCells(y, x) {
    const list = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const r = y * sh + i * dh, c = x * sw + j * dw;  // in padded coordinates
        const real = r - top >= 0 && r - top < H && c - left >= 0 && c - left < W;
        list.push({i, j, r, c, real, value: real ? input.at(r - top, c - left) : 0});
      }
    }
    return list;
  }

  function show() {
    const y = Math.floor(step / OW), x = step % OW;
    const inWindow = windowCells(y, x);
    view.show(step, y, x, inWindow);
    where.textContent = ` position ${step + 1} of ${total}`;
    rowField.value = String(y);
    colField.value = String(x);
    root.dataset.step = String(step);
    root.dataset.y = String(y);
    root.dataset.x = String(x);
    work.replaceChildren(...describe(spec, output, partial, number, y, x, inWindow, view.zoomed));
    if (post) work.append(element("br"), ...afterwards(spec, post, y, x));
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    play.textContent = "▶ play";
  }

  function start() {
    stop();
    play.textContent = "⏸ pause";
    const rate = Number(speed.value);
    const every = Math.max(FRAME_MS, 1000 / rate);
    const stride = Math.max(1, Math.round(rate * every / 1000));
    timer = setInterval(() => {
      if (step >= total - 1) { stop(); return; }
      step = Math.min(total - 1, step + stride);
      show();
    }, every);
  }

  const moveTo = (target) => { stop(); step = Math.max(0, Math.min(total - 1, target)); show(); };
  play.addEventListener("click", () => {
    if (timer) { stop(); return; }
    if (step >= total - 1) step = 0;
    start();
  });
  next.addEventListener("click", () => moveTo(step + 1));
  back.addEventListener("click", () => moveTo(step - 1));
  first.addEventListener("click", () => moveTo(0));
  last.addEventListener("click", () => moveTo(total - 1));
  speed.addEventListener("change", () => { if (timer) start(); });
  const cellAt = (y, x) => moveTo(Math.max(0, Math.min(OH - 1, y)) * OW + Math.max(0, Math.min(OW - 1, x)));
  go.addEventListener("click", () => cellAt(Number(rowField.value), Number(colField.value)));
  for (const field of [rowField, colField]) {
    field.addEventListener("keydown", (event) => { if (event.key === "Enter") go.click(); });
  }
  view.onPick(cellAt);
  show();
  return {root, stop, goTo: cellAt};
}

function numberField(className, max) {
  const field = element("input", className);
  field.type = "number";
  field.min = "0";
  field.max = String(max);
  field.step = "1";
  return field;
}

// The layers after the head, by name ("BatchNorm2d and ReLU"): what turns the animated output into the map shown.
function after(spec) {
  const names = (spec.after || []).filter((t) => t !== "Dropout");
  return names.length ? names.join(" and ") : "the layers after it";
}

// The current cell after the unit's batch norm and activation: the value its post-activation map shows.
function afterwards(spec, post, y, x) {
  return [`after ${after(spec)}, the post-activation map shows `, element("span", "anim-post", fmt(post.at(y, x))),
    ` at (${y}, ${x})`];
}

// What the animated output grid is: the head's own output, or, without layers after it, the map itself.
function outputCaption(spec, g) {
  return spec.post_values ? `the layer's own output ${g.OH}x${g.OW}, before ${after(spec)}` : `output ${g.OH}x${g.OW}`;
}

// The work for one window: the products (or values) and their sum, or, when the window has a zoomed table, the
// table and the sum alone.
function describe(spec, output, partial, number, y, x, inWindow, zoomed) {
  const parts = [];
  const out = output.at(y, x);
  if (spec.op === "conv") {
    const share = partial ? partial.at(y, x) : out;
    if (zoomed) {
      parts.push(zoomTable(inWindow, spec, true),
        `sum of the ${inWindow.length} products at output (${y}, ${x}) = `, element("span", "anim-sum", number(share)));
    } else {
      parts.push(`window at output (${y}, ${x}): `);
      inWindow.forEach((w, n) => {
        if (n) parts.push(" + ");
        parts.push(element("span", w.real ? "product" : "product pad",
          `${number(w.value)}×${number(spec.kernel_values[w.i][w.j])}`));
      });
      parts.push(" = ", element("span", "anim-sum", number(share)));
    }
    if (partial) {
      parts.push(element("br"), `this is input channel ${spec.input_channel}'s share; over all input channels ` +
        `${spec.input_channels[0]}..${spec.input_channels[1]} plus the bias ${fmt(spec.bias)}, the layer's own output is `,
        element("span", "anim-out", fmt(out)));
    } else {
      parts.push(element("br"), "output = ", element("span", "anim-out", number(out)));
    }
    return parts;
  }
  const real = inWindow.filter((w) => w.real);
  const label = spec.op === "max" ? "max" : "mean";
  if (zoomed) parts.push(zoomTable(inWindow, spec, false));
  parts.push(`${label} of the ${real.length} real cells at output (${y}, ${x})`);
  if (!zoomed) parts.push(": ", real.map((w) => number(w.value)).join(", "));
  if (spec.op === "avg") {
    const counted = spec.counts_padding ? inWindow.length : real.length;
    parts.push(` → sum / ${counted}${spec.counts_padding ? " (padding counted)" : " (padding not counted)"}`);
  }
  parts.push(" = ", element("span", "anim-out", number(out)));
  return parts;
}

// The current window zoomed in: each cell's input value, and for a conv its weight and product.
function zoomTable(inWindow, spec, products) {
  const table = element("table", "grid scan-zoom");
  const kw = spec.kernel[1];
  const best = spec.op === "max" ? Math.max(...inWindow.filter((w) => w.real).map((w) => w.value)) : null;
  let line = null;
  for (const w of inWindow) {
    if (w.j === 0) { line = element("tr"); table.append(line); }
    const cell = element("td", w.real ? null : "pad");
    if (products) {
      const weight = spec.kernel_values[w.i][w.j];
      cell.append(element("span", "zoom-in", compact(w.value)), element("span", "zoom-weight", `×${compact(weight)}`),
        element("span", "zoom-product", compact(w.value * weight)));
    } else {
      cell.textContent = w.real ? compact(w.value) : "pad";
      if (w.real && w.value === best) cell.classList.add("picked");
    }
    line.append(cell);
  }
  table.dataset.columns = String(kw);
  const box = element("div", "scan-zoom-box");
  box.append(element("h4", null, products ? "this window, zoomed: input, × weight, = product (3 digits)" :
    "this window, zoomed (3 digits)"), table);
  return box;
}

// Three significant digits: a 7x7 window's 49 products fit the panel; the sums keep four decimals.
function compact(value) {
  return Number.isInteger(value) ? String(value) : Number(value).toPrecision(3);
}

// Tables of numbers: the padded input (hatched padding, TF SAME's extra row / column marked) and the output.
function gridView(spec, input, output, g, number) {
  const cells = [];
  const inputTable = element("table", "grid scan-input");
  for (let r = -g.top; r < g.PH - g.top; r++) {
    const line = element("tr");
    const row = [];
    for (let c = -g.left; c < g.PW - g.left; c++) {
      const inside = r >= 0 && r < g.H && c >= 0 && c < g.W;
      const cell = inside ? element("td", null, number(input.at(r, c))) : element("td", "pad", "0");
      if (!inside && ((r >= g.H && r - g.H >= g.top) || (c >= g.W && c - g.W >= g.left))) cell.classList.add("extra");
      line.append(cell);
      row.push(cell);
    }
    inputTable.append(line);
    cells.push(row);
  }
  const outputTable = element("table", "grid scan-output");
  const outCells = [];
  for (let y = 0; y < g.OH; y++) {
    const line = element("tr");
    const row = [];
    for (let x = 0; x < g.OW; x++) row.push(element("td", "empty", "·"));
    line.append(...row);
    outputTable.append(line);
    outCells.push(row);
  }
  const figures = element("div", "scan-figures");
  figures.append(figure(`padded input ${g.PH}x${g.PW}`, inputTable), kernelBox(spec, number),
    figure(outputCaption(spec, g), outputTable));
  let lit = [];
  return {
    figures,
    zoomed: false,
    show(step, y, x, inWindow) {
      for (const cell of lit) cell.classList.remove("win");
      lit = inWindow.map((w) => cells[w.r][w.c]);
      for (const cell of lit) cell.classList.add("win");
      outCells.forEach((row, oy) => row.forEach((cell, ox) => {
        const index = oy * g.OW + ox;
        cell.classList.toggle("empty", index > step);
        cell.classList.toggle("current", index === step);
        cell.textContent = index > step ? "·" : number(output.at(oy, ox));
      }));
    },
    onPick(pick) {
      outCells.forEach((row, oy) => row.forEach((cell, ox) => cell.addEventListener("click", () => pick(oy, ox))));
    },
  };
}

// Canvases, one pixel a cell: the padded input with the window outlined, and the output map filling in.
function canvasView(spec, input, output, g) {
  const scale = CANVAS_PX / Math.max(g.PH, g.PW);
  const colour = (plane) => {
    const span = plane.high > plane.low ? plane.high - plane.low : 1;
    return (v) => viridis((v - plane.low) / span);
  };
  const inputColour = colour(input), outputColour = colour(output);
  const base = new ImageData(g.PW, g.PH);
  for (let r = 0; r < g.PH; r++) {
    for (let c = 0; c < g.PW; c++) {
      const y = r - g.top, x = c - g.left;
      const inside = y >= 0 && y < g.H && x >= 0 && x < g.W;
      const extra = !inside && ((y >= g.H && y - g.H >= g.top) || (x >= g.W && x - g.W >= g.left));
      const [red, green, blue] = inside ? inputColour(input.at(y, x)) : extra ? [246, 199, 154] : [215, 215, 215];
      base.data.set([red, green, blue, 255], 4 * (r * g.PW + c));
    }
  }
  const hasExtra = g.PH - g.H - g.top > g.top || g.PW - g.W - g.left > g.left;
  const picture = element("canvas", "scan-picture");
  picture.width = g.PW;
  picture.height = g.PH;
  picture.getContext("2d").putImageData(base, 0, 0);
  const overlay = element("canvas", "scan-overlay");
  overlay.width = Math.round(g.PW * scale);
  overlay.height = Math.round(g.PH * scale);
  const stack = element("div", "scan-stack");
  for (const node of [picture, overlay]) {
    node.style.width = `${Math.round(g.PW * scale)}px`;
    node.style.height = `${Math.round(g.PH * scale)}px`;
  }
  stack.append(picture, overlay);

  const outScale = OUTPUT_PX / Math.max(g.OH, g.OW);
  const outImage = new ImageData(g.OW, g.OH);
  outImage.data.fill(238);
  const outCanvas = element("canvas", "scan-output-map");
  outCanvas.width = g.OW;
  outCanvas.height = g.OH;
  outCanvas.style.width = `${Math.round(g.OW * outScale)}px`;
  outCanvas.style.height = `${Math.round(g.OH * outScale)}px`;
  const outOverlay = element("canvas", "scan-overlay");
  outOverlay.width = Math.round(g.OW * outScale);
  outOverlay.height = Math.round(g.OH * outScale);
  outOverlay.style.width = outCanvas.style.width;
  outOverlay.style.height = outCanvas.style.height;
  const outStack = element("div", "scan-stack");
  outStack.append(outCanvas, outOverlay);

  const figures = element("div", "scan-figures");
  figures.append(
    figure(`padded input ${g.PH}x${g.PW} (one pixel a cell; grey: padding${hasExtra ? ", orange: TF SAME's extra " +
      "row / column" : ""})`, stack),
    figure(`${outputCaption(spec, g)}, filled in up to the window (click a cell to jump there)`, outStack));
  let filled = -1;  // output cells painted: 0..filled
  const paint = (index, on) => {
    const oy = Math.floor(index / g.OW), ox = index % g.OW;
    const rgb = on ? outputColour(output.at(oy, ox)) : [238, 238, 238];
    outImage.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * index);
  };
  return {
    figures,
    zoomed: true,
    show(step, y, x, inWindow) {
      for (let i = filled + 1; i <= step; i++) paint(i, true);
      for (let i = step + 1; i <= filled; i++) paint(i, false);
      filled = step;
      outCanvas.getContext("2d").putImageData(outImage, 0, 0);
      const ctx = overlay.getContext("2d");
      ctx.clearRect(0, 0, overlay.width, overlay.height);
      const extentH = (g.kh - 1) * g.dh + 1, extentW = (g.kw - 1) * g.dw + 1;
      ctx.fillStyle = "rgba(255, 59, 48, 0.25)";
      for (const w of inWindow) ctx.fillRect(w.c * scale, w.r * scale, Math.max(1, scale), Math.max(1, scale));
      ctx.strokeStyle = "#ff3b30";
      ctx.lineWidth = 2;
      ctx.strokeRect(x * g.sw * scale - 1, y * g.sh * scale - 1, extentW * scale + 2, extentH * scale + 2);
      const octx = outOverlay.getContext("2d");
      octx.clearRect(0, 0, outOverlay.width, outOverlay.height);
      octx.strokeStyle = "#ff3b30";
      octx.lineWidth = 2;
      octx.strokeRect(x * outScale - 1, y * outScale - 1, Math.max(outScale, 2) + 2, Math.max(outScale, 2) + 2);
    },
    onPick(pick) {
      outOverlay.addEventListener("click", (event) => {
        pick(Math.floor(event.offsetY / outScale), Math.floor(event.offsetX / outScale));
      });
    },
  };
}

function figure(caption, content) {
  const node = element("div");
  node.append(element("h4", null, caption), content);
  return node;
}

function kernelBox(spec, number) {
  const box = element("div", "scan-kernel");
  if (!spec.kernel_values) return box;
  const table = element("table", "grid");
  for (const values of spec.kernel_values) {
    const line = element("tr");
    for (const v of values) line.append(element("td", null, number(v)));
    table.append(line);
  }
  box.append(element("h4", null, "kernel"), table);
  return box;
}
