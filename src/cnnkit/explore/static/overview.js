// The overview: every unit as a column of small maps from the input to the class probabilities, with the
// connections drawn; branches of a block are drawn side by side (one row each) and merge into the fusion.
// Hovering a map highlights the maps that feed it; clicking opens its detail below.
import {$, element, floats, fmt, groupUnits, hideTooltip, keepAspect, mapCanvas, softmax, status, svgElement, tooltip} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {state} from "./state.js";
import {drawInput} from "./input.js";

const PER_COLUMN = 6;  // maps drawn per unit
const SIDE = 16;       // cells a side before a map is averaged down
const PX = 30;         // CSS pixels a map is drawn at
// Layers that read one channel to make the same channel (the others read every input map).
const PER_CHANNEL = new Set(["MaxPool2d", "AvgPool2d", "BatchNorm2d", "ReLU", "Identity", "LocalResponseNorm", "Dropout"]);
let clickHandler = null;

export const onOverviewClick = (handler) => { clickHandler = handler; };

const request = latestWins(
  async (version) => ({version, result: await api("/api/predict", {image: state.image, layers: allLayers(),
    activation: state.activation, top_k: 1, page_size: PER_COLUMN, max_side: SIDE})}),
  {apply: ({version, result}) => { if (version === state.version) paint(result); }, fail: (e) => status(e.message)});

function allLayers() {
  return Object.fromEntries(state.model.units.map((u) => [u.id, 0]));
}

export function refreshOverview() {
  if (state.image) request(state.version);
}

function column(unit) {
  const col = element("div", "ov-col");
  col.dataset.unit = unit.id;
  col.dataset.inputs = JSON.stringify(unit.inputs);
  const kind = unit.types.filter((t) => t !== "Dropout").join("+") || unit.types[0];
  const label = element("div", "ov-label", kind.replaceAll("+", "+\u200b"));  // may break after each "+"
  label.title = `${unit.id}: ${unit.types.join(" → ")}, output ${unit.shape.join("x")}`;
  col.append(label, element("div", "ov-maps"), element("div", "ov-shape", unit.shape.join("x")));
  return col;
}

export function buildOverview() {
  const box = $("overview");
  const row = element("div", "ov-row");
  const inputCol = element("div", "ov-col ov-input");
  inputCol.dataset.unit = "";
  const canvas = element("canvas");
  keepAspect(canvas, state.model.input_shape.slice(1), 2 * PX);
  inputCol.append(element("div", "ov-label", "input"), canvas, element("div", "ov-shape", state.model.input_shape.join("x")));
  row.append(inputCol);
  for (const group of groupUnits(state.model.units)) {
    if (group.unit) { row.append(column(group.unit)); continue; }
    const node = element("div", "ov-block");
    node.title = group.block;
    const branches = element("div", "ov-branches");
    for (const branch of group.branches) {
      const line = element("div", "ov-branch");
      line.append(...branch.units.map(column));
      branches.append(line);
    }
    const fusion = element("div", "ov-fusion");
    fusion.append(...group.fusion.map(column));
    node.append(branches, fusion);
    row.append(node);
  }
  const svg = svgElement("svg", {class: "ov-lines"});
  box.replaceChildren(row, svg);  // the lines over the columns: they stay visible where a curve crosses one
  new ResizeObserver(() => { drawEdges(); fitNote(); }).observe(box);
  new ResizeObserver(drawEdges).observe(row);
  let queued = false;  // the pinned column moves as the row scrolls: its lines follow, once a frame
  box.addEventListener("scroll", () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; drawEdges(); });
  });
  box.addEventListener("mouseleave", clearHighlight);
}

const GAPS = [26, 20, 14];  // px between columns, widest first: the narrowest that still shows the arrows

// Fit the row to its panel: the widest gap between columns that fits; past the narrowest the row scrolls
// sideways (a narrow window, a notebook's frame) with the probabilities pinned, and a note says so.
function fitNote() {
  const box = $("overview");
  const row = box.querySelector(".ov-row");
  for (const gap of GAPS) {
    box.style.setProperty("--ov-gap", `${gap}px`);
    if (row.scrollWidth <= box.clientWidth) break;
  }
  const wide = row.scrollWidth > box.clientWidth + 1;
  $("overview-scroll").hidden = !wide;
  box.classList.toggle("scrolls", wide);
}

function colOf(id) {
  return document.querySelector(`#overview .ov-col[data-unit="${CSS.escape(id)}"]`);
}

function anchor(node, side) {
  const base = $("overview").getBoundingClientRect();
  const box = node.getBoundingClientRect();
  const scroll = $("overview");
  return [(side === "right" ? box.right : box.left) - base.left + scroll.scrollLeft,
    box.top + box.height / 2 - base.top + scroll.scrollTop];
}

// A curve from `from` to `to`; with `via`, a straight run along the source's row to x = via first.
function line(svg, from, to, className, via = from[0]) {
  const mid = (via + to[0]) / 2;
  const path = svgElement("path", {
    d: `M${from[0]},${from[1]} L${via},${from[1]} C${mid},${from[1]} ${mid},${to[1]} ${to[0]},${to[1]}`,
    class: className});
  svg.append(path);
  return path;
}

// An arrowhead for the end of each connection, so a merge reads as two lines flowing into one column.
function arrowhead() {
  const marker = svgElement("marker", {id: "ov-arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 4.5,
    markerHeight: 4.5, orient: "auto"});
  marker.append(svgElement("path", {d: "M0,0 L8,4 L0,8 z", class: "ov-arrow"}));
  const defs = svgElement("defs");
  defs.append(marker);
  return defs;
}

const nameOf = (id) => id || "the input";

// Where a branch's last column meets the fusion, its line runs straight along its own row to the end of the
// block's branches before it curves: a short branch's line never crosses a longer branch's columns.
function runTo(source, target, x) {
  const branches = source.closest(".ov-branches");
  if (!branches || !target.closest(".ov-fusion") || branches.parentNode !== target.closest(".ov-block")) return x;
  return anchor(branches, "right")[0];
}

// One curve from each input column to each column it feeds; hovering a curve lights it and names both ends.
function drawEdges() {
  const box = $("overview");
  const svg = box.querySelector(".ov-lines");
  const row = box.querySelector(".ov-row");
  svg.setAttribute("width", row.scrollWidth);
  svg.setAttribute("height", row.scrollHeight);
  svg.replaceChildren(arrowhead());
  for (const unit of state.model.units) {
    const target = colOf(unit.id);
    for (const source of (unit.inputs.length ? unit.inputs : [""])) {
      const start = anchor(colOf(source), "right");
      const path = line(svg, start, anchor(target, "left"), "edge", runTo(colOf(source), target, start[0]));
      path.dataset.from = source;
      path.dataset.to = unit.id;
      path.addEventListener("mouseenter", () => lightEdges((e) => e.dataset.from === source && e.dataset.to === unit.id));
      path.addEventListener("mousemove", (event) => tooltip(event, `${nameOf(source)} → ${unit.id}`));
      path.addEventListener("mouseleave", () => { lightEdges(() => false); hideTooltip(); });
    }
  }
  lightEdges(lighting);  // a redraw (the page resized, new maps) keeps what is lit
}

let lighting = () => false;  // which connections are lit now

// Light the connections `chosen` picks (and the columns at their ends); dim the rest.
function lightEdges(chosen) {
  lighting = chosen;
  for (const node of document.querySelectorAll("#overview .ov-col.ends")) node.classList.remove("ends");
  let any = false;
  for (const edge of document.querySelectorAll("#overview .ov-lines .edge:not(.hot)")) {
    const lit = chosen(edge);
    edge.classList.toggle("lit", lit);
    if (lit) {
      any = true;
      colOf(edge.dataset.from).classList.add("ends");
      colOf(edge.dataset.to).classList.add("ends");
    }
  }
  $("overview").classList.toggle("lighting", any);
}

// Highlight the maps that feed map `channel` of `unit` and draw their connections.
function highlight(unit, channel, figure) {
  clearHighlight();
  const svg = $("overview").querySelector(".ov-lines");
  figure.classList.add("hot");
  const perChannel = PER_CHANNEL.has(unit.types[0]) || ["add", "sub", "mul", "max"].includes(unit.merge);
  const stacked = unit.merge === "concat" ? concatSource(unit, channel) : null;
  for (const source of (unit.inputs.length ? unit.inputs : [""])) {
    const maps = [...colOf(source).querySelectorAll(".ov-map, canvas")];
    const feeding = stacked ? maps.filter((m) => source === stacked.id && m.dataset.channel === String(stacked.channel))
      : perChannel ? maps.filter((m) => m.dataset.channel === String(channel)) : maps;
    for (const map of feeding) {
      map.classList.add("feeds");
      line(svg, anchor(map, "right"), anchor(figure, "left"), "edge hot");
    }
  }
  lightEdges((edge) => edge.dataset.to === unit.id || edge.dataset.from === unit.id);
  $("overview").dataset.hovered = unit.id;
}

// Which input, and which of its maps, map `channel` of a depth concatenation comes from (inputs stacked in order).
function concatSource(unit, channel) {
  let offset = 0;
  for (const id of unit.inputs) {
    const depth = state.model.units.find((u) => u.id === id).shape[0];
    if (channel < offset + depth) return {id, channel: channel - offset};
    offset += depth;
  }
  return null;
}

function clearHighlight() {
  for (const node of document.querySelectorAll("#overview .hot, #overview .feeds")) {
    if (node.tagName === "path") node.remove(); else node.classList.remove("hot", "feeds");
  }
  lightEdges(() => false);
}

function paint(result) {
  drawInput(document.querySelector("#overview .ov-input canvas"));
  const probabilities = softmax(result.logits);
  for (const unit of state.model.units) {
    const data = result.maps[unit.id];
    const holder = colOf(unit.id).querySelector(".ov-maps");
    holder.replaceChildren();
    const values = floats(data.data);
    const span = data.high > data.low ? data.high - data.low : 1;
    if (data.kind === "maps") {
      const [h, w] = data.size;
      const px = PX / Math.max(h, w);
      for (let m = 0; m < data.count; m++) {
        const canvas = mapCanvas(values, m * h * w, h, w, data.low, span, px);
        canvas.classList.add("ov-map");
        canvas.dataset.channel = String(m);
        canvas.addEventListener("mouseenter", () => highlight(unit, m, canvas));
        canvas.addEventListener("mousemove", (event) => tooltip(event, `${unit.id}, map ${m} of ${data.channels}`));
        canvas.addEventListener("mouseleave", hideTooltip);
        canvas.addEventListener("click", () => clickHandler && clickHandler(unit, m));
        holder.append(canvas);
      }
      if (data.channels > data.count) {
        const more = element("div", "ov-more", `+${data.channels - data.count} more`);
        more.title = `${data.channels - data.count} more maps not drawn: the first ${data.count} of ${data.channels} ` +
          "are; open the layer below for all of them";
        holder.append(more);
      }
    } else if (unit === state.model.units[state.model.units.length - 1] && data.length === probabilities.length) {
      holder.append(classList(probabilities));
      colOf(unit.id).classList.add("ov-pinned");  // the probabilities stay in view while the layers scroll
    } else {
      holder.append(vectorStrip(unit, values, data, span));
    }
  }
  drawEdges();
  fitNote();
  $("overview").dataset.settled = String(result.logits.length);
}


const MAX_CLASSES = 10;  // classes listed in the last column (the most probable, when there are more)

function classList(probabilities) {
  const list = element("ol", "ov-classes");
  const best = probabilities.indexOf(Math.max(...probabilities));
  let shown = probabilities.map((p, i) => i);
  if (shown.length > MAX_CLASSES) shown = shown.sort((a, b) => probabilities[b] - probabilities[a]).slice(0, MAX_CLASSES);
  for (const i of shown) {
    const p = probabilities[i];
    const item = element("li", i === best ? "best" : null);
    const bar = element("span", "ov-bar");
    bar.style.width = `${Math.round(40 * p)}px`;
    item.append(element("span", "ov-class", state.model.classes[i]), bar, element("span", "ov-p", `${(100 * p).toFixed(1)}%`));
    item.title = `${state.model.classes[i]}: ${fmt(p)}`;
    list.append(item);
  }
  if (shown.length < probabilities.length) {
    list.append(element("li", "ov-more", `top ${shown.length} of ${probabilities.length} classes`));
  }
  return list;
}

function vectorStrip(unit, values, data, span) {
  const rows = Math.min(values.length, 4 * PX);
  const sampled = new Float32Array(rows);
  for (let i = 0; i < rows; i++) sampled[i] = values[Math.floor(i * values.length / rows)];
  const canvas = mapCanvas(sampled, 0, rows, 1, data.low, span, 8);
  canvas.style.height = `${rows}px`;
  canvas.classList.add("ov-vector");
  canvas.dataset.channel = "0";
  canvas.addEventListener("mouseenter", () => highlight(unit, 0, canvas));
  canvas.addEventListener("click", () => clickHandler && clickHandler(unit, 0));
  canvas.title = `${unit.id}: ${data.length} values`;
  return canvas;
}

