// Layers: one card per unit (a layer with the batch norm and activation after it), branches side by side; the
// prediction and the maps of the cards on screen come in one request, the newest image winning.
import {$, element, floats, fmt, groupUnits, hideTooltip, legend, mapCanvas, status, tooltip} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {state, unitById} from "./state.js";
import {guideBox} from "./guidance.js";

const pages = {};           // unit id -> page of maps shown
const shown = {};           // unit id -> version its maps belong to
const visible = new Set();  // unit ids whose cards are on screen
const predictionHooks = []; // called with each prediction of the current image
const settledHooks = [];    // called once the prediction and the visible maps belong to the current image
let explainHandler = null;  // what a click on a map cell does
let failed = false;

export const onPrediction = (hook) => predictionHooks.push(hook);
export const onSettled = (hook) => settledHooks.push(hook);
export const onCellClick = (handler) => { explainHandler = handler; };

const predict = latestWins(
  async (version, layers) => ({version, result: await api("/api/predict",
    {image: state.image, layers, activation: state.activation, top_k: 5})}),
  {
    apply: ({version, result}) => {
      if (version !== state.version) return;
      failed = false;
      showTop(result.top);
      for (const hook of predictionHooks) hook(result);
      for (const [id, maps] of Object.entries(result.maps)) showMaps(id, maps, version);
      status("");
    },
    fail: (error) => { failed = true; status(error.message); },
    idle: () => {
      const missing = [...visible].some((id) => shown[id] !== state.version);
      if (missing && !failed) { refresh(); return; }
      document.body.dataset.settled = "1";
      for (const hook of settledHooks) hook();
    },
  });

export function refresh() {
  if (!state.image) return;
  const layers = {};
  for (const id of visible) layers[id] = pages[id] || 0;
  predict(state.version, layers);
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
    if (item === list.firstChild && !state.model.trained) {  // random weights: a confident "4 100.0%" means nothing
      const mark = element("span", "untrained-mark", "untrained: random weights");
      mark.title = "This network has not been trained; its prediction shows the architecture only.";
      item.append(mark);
    }
  }
}

export function buildLayers() {
  const root = $("layers");
  for (const group of groupUnits(state.model.units)) {
    if (group.unit) { root.append(card(group.unit)); continue; }
    const node = element("div", "block");
    node.append(element("h3", null, `${group.block}: branches, then their fusion`));
    const branches = element("div", "branches");
    for (const branch of group.branches) {
      const column = element("div", "branch");
      column.append(element("h4", null, `branch ${branch.name}`), ...branch.units.map(card));
      branches.append(column);
    }
    const fusion = element("div", "fusion");
    fusion.append(...group.fusion.map(card));
    node.append(branches, fusion);
    root.append(node);
  }
  const observer = new IntersectionObserver((entries) => {
    let newly = false;
    for (const entry of entries) {
      const id = entry.target.dataset.unit;
      if (entry.isIntersecting) {
        visible.add(id);
        newly = newly || shown[id] !== state.version;
      } else {
        visible.delete(id);
      }
    }
    if (newly) refresh();
  }, {rootMargin: "200px"});
  for (const node of document.querySelectorAll("#layers .card")) observer.observe(node);  // not the softmax / playground cards
}

function card(unit) {
  const node = element("div", `card${unit.explainable ? " explainable" : ""}`);
  node.dataset.unit = unit.id;
  node.dataset.kind = unit.kind;
  // Inside a branch column the block and branch are in its heading; the card names the layers below them.
  const prefix = unit.block ? `${unit.block}.${unit.branch ? `${unit.branch}.` : ""}` : "";
  const shortName = (name) => (prefix && name.startsWith(prefix) ? name.slice(prefix.length) : name);
  const title = unit.names.map((name, i) => `${shortName(name)} ${unit.types[i]}`).join(" → ");
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
  node.append(wrap, guideBox(unit.types));
  const info = element("div", "map-head");
  info.append(element("span", "which"), element("span", "range"), element("span", "pager"));
  node.append(info, element("div", "maps"));
  return node;
}

// Show the page of maps holding `channel` on the unit's card and bring the card into view.
export function showChannel(id, channel) {
  const page = Math.floor(channel / state.model.page_size);
  const node = document.querySelector(`.card[data-unit="${CSS.escape(id)}"]`);
  if ((pages[id] || 0) !== page) { pages[id] = page; shown[id] = -1; refresh(); }
  node.scrollIntoView({block: "center"});
  node.classList.add("flash");
  setTimeout(() => node.classList.remove("flash"), 1200);
}

function showMaps(id, data, version) {
  const node = document.querySelector(`.card[data-unit="${CSS.escape(id)}"]`);
  if (!node || version !== state.version) return;
  const unit = unitById(id);
  shown[id] = version;
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
    maps.append(vectorFigure(data, values, low, span));
    return;
  }
  pager(node, unit, data);
  const [h, w] = data.size;
  const px = Math.max(1, Math.floor(64 / Math.max(h, w)));  // every map about 64 pixels wide
  for (let m = 0; m < data.count; m++) {
    const canvas = mapCanvas(values, m * h * w, h, w, low, span, px);
    const channel = data.first + m;
    const at = (event) => [Math.min(h - 1, Math.floor(event.offsetY / px)), Math.min(w - 1, Math.floor(event.offsetX / px))];
    canvas.addEventListener("mousemove", (event) => {
      const [y, x] = at(event);
      const mean = data.scale > 1 ? ` (mean of ${data.scale}x${data.scale} cells)` : "";
      tooltip(event, `map ${channel}, row ${y * data.scale}, col ${x * data.scale}: ${fmt(values[m * h * w + y * w + x])}${mean}`);
    });
    canvas.addEventListener("mouseleave", hideTooltip);
    if (unit.explainable) {
      canvas.addEventListener("click", (event) => {
        const [y, x] = at(event);
        const [, H, W] = unit.shape;
        if (explainHandler) {
          explainHandler(unit, channel, Math.min(H - 1, y * data.scale + Math.floor(data.scale / 2)),
            Math.min(W - 1, x * data.scale + Math.floor(data.scale / 2)));
        }
      });
    }
    const figure = element("figure");
    figure.append(canvas, element("figcaption", null, String(channel)));
    maps.append(figure);
  }
}

function vectorFigure(data, values, low, span) {
  const columns = 32;
  const rows = Math.ceil(values.length / columns);
  const padded = new Float32Array(rows * columns).fill(low);
  padded.set(values);
  const canvas = mapCanvas(padded, 0, rows, columns, low, span, 8);
  canvas.addEventListener("mousemove", (event) => {
    const i = Math.floor(event.offsetY / 8) * columns + Math.floor(event.offsetX / 8);
    if (i < values.length) {
      const what = data.scale > 1 ? `values ${i * data.scale}..${(i + 1) * data.scale - 1} (mean)` : `value ${i}`;
      tooltip(event, `${what}: ${fmt(values[i])}`);
    }
  });
  canvas.addEventListener("mouseleave", hideTooltip);
  const figure = element("figure");
  figure.append(canvas, element("figcaption", null, `${data.length} values${data.scale > 1 ? `, shown as means of ${data.scale}` : ""}`));
  return figure;
}

function pager(node, unit, data) {
  const box = node.querySelector(".pager");
  box.replaceChildren();
  if (data.pages <= 1) {
    box.textContent = `${data.channels} maps`;
    return;
  }
  const go = (page) => { pages[unit.id] = page; shown[unit.id] = -1; refresh(); };
  const back = element("button", null, "‹");
  back.disabled = data.page === 0;
  back.addEventListener("click", () => go(data.page - 1));
  const next = element("button", null, "›");
  next.disabled = data.page >= data.pages - 1;
  next.addEventListener("click", () => go(data.page + 1));
  box.append(back, element("span", null, ` maps ${data.first}–${data.first + data.count - 1} of ${data.channels} `), next);
}
