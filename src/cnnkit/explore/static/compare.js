// Compare checkpoints: two checkpoints of the run side by side for the current image: their top classes, the first
// convolution's filters and a layer's maps, each pair on one colour scale, and which filters and maps changed most
// (relative L2 distance |B - A| / |A|, from the server).
import {$, element, floats, fmt, hideTooltip, legend, mapCanvas, status, tooltip} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {onImage, state} from "./state.js";

const MOST = 5;          // filters and maps named as changed most
const POLL_MS = 5000;    // how often a live training run's snapshots are listed again
let listing = null;
let page = 0;
let visible = false;
let shownKey = null;     // the request whose answer is on screen
let failed = false;

const panel = () => $("compare-panel");
const key = () => [state.version, $("cmp-a").value, $("cmp-b").value, $("cmp-layer").value, page].join("|");

const request = latestWins(
  async (ask, body) => ({ask, result: await api("/api/compare", body)}),
  {
    apply: ({ask, result}) => {
      failed = false;
      $("cmp-error").textContent = "";
      show(result);
      shownKey = ask;
    },
    fail: (error) => {
      failed = true;
      $("cmp-error").textContent = error.message;
    },
    idle: () => {
      if (!failed && visible && shownKey !== key()) { refreshCompare(); return; }
      panel().dataset.settled = shownKey === key() || failed ? "1" : "0";
    },
  });

export function refreshCompare() {
  if (!listing || !state.image || panel().hidden) return;
  const a = $("cmp-a").value;
  const b = $("cmp-b").value;
  $("cmp-same").hidden = a !== b;
  panel().dataset.settled = "0";
  if (!visible) return;  // asked again once the section scrolls into view
  request(key(), {image: state.image, a, b, layer: $("cmp-layer").value, page, activation: state.activation});
}

function label(name) {
  const found = listing.checkpoints.find((c) => c.name === name);
  return found ? found.label : name;
}

function showTop(list, top) {
  list.replaceChildren(...top.map((entry) => {
    const item = element("li");
    item.dataset.probability = String(entry.probability);
    const bar = element("span", "bar");
    const fill = element("span", "fill");
    fill.style.width = `${(100 * entry.probability).toFixed(1)}%`;
    bar.append(fill);
    item.append(element("span", "label", entry.class), bar, element("span", "p", `${(100 * entry.probability).toFixed(2)}%`));
    return item;
  }));
}

function hover(canvas, values, offset, h, w, name) {
  canvas.addEventListener("mousemove", (event) => {
    const x = Math.min(w - 1, Math.floor((event.offsetX / canvas.clientWidth) * w));
    const y = Math.min(h - 1, Math.floor((event.offsetY / canvas.clientHeight) * h));
    tooltip(event, `${name} [${y}, ${x}]: ${fmt(values[offset + y * w + x])}`);
  });
  canvas.addEventListener("mouseleave", hideTooltip);
}

// One figure per filter or map: A and B side by side on the pair's scale, with the change below.
function pair(index, change, draw) {
  const figure = element("figure", "cmp-pair");
  figure.dataset.index = String(index);
  const row = element("div", "cmp-sides");
  row.append(draw("A"), draw("B"));
  const caption = element("figcaption", null, `#${index} `);
  const delta = element("span", "cmp-change", change === null ? "" : change.toFixed(3));
  delta.title = "relative change |B - A| / |A|";
  caption.append(delta);
  figure.append(row, caption);
  return figure;
}

function mostChanged(changes, first = 0) {
  return changes.map((value, i) => ({index: first + i, value}))
    .sort((p, q) => q.value - p.value).slice(0, MOST);
}

function showFilters(result) {
  const info = result.filters;
  $("cmp-filters-block").hidden = !info;
  if (!info) return;
  const [count, channels, kh, kw] = result.a.filters.shape;
  const values = {A: floats(result.a.filters.data), B: floats(result.b.filters.data)};
  const span = info.high - info.low || 1;
  const planes = Math.min(channels, 3);
  const px = Math.max(2, Math.floor(42 / Math.max(kh, kw)));
  $("cmp-filters-head").textContent = `${info.layer}: ${info.count} filters of ${channels}x${kh}x${kw}` +
    (channels > planes ? ` (input channels 0-${planes - 1} drawn)` : "") +
    (count < info.count ? `; the first ${count} shown` : "") +
    `; weights ${fmt(info.low)} .. ${fmt(info.high)} on one scale`;
  const figures = [];
  for (let f = 0; f < count; f++) {
    figures.push(pair(f, info.change[f], (side) => {
      const holder = element("span", "cmp-planes");
      for (let c = 0; c < planes; c++) {
        const offset = (f * channels + c) * kh * kw;
        const canvas = mapCanvas(values[side], offset, kh, kw, info.low, span, px);
        const plane = values[side].subarray(offset, offset + kh * kw);
        canvas.title = `${side} filter ${f}${channels > 1 ? `, input channel ${c}` : ""}: ` +
          `${fmt(Math.min(...plane))} .. ${fmt(Math.max(...plane))}`;
        canvas.dataset.side = side;
        hover(canvas, values[side], offset, kh, kw, `${side} filter ${f}`);
        holder.append(canvas);
      }
      return holder;
    }));
  }
  $("cmp-filters").replaceChildren(...figures);
  const most = mostChanged(info.change);
  for (const {index} of most) $("cmp-filters").children[index]?.classList.add("cmp-most");
  $("cmp-most").textContent = `filters that changed most from A to B: ` +
    most.map(({index, value}) => `#${index} (${value.toFixed(3)})`).join(", ");
}

function showMaps(result) {
  const {a, b} = result;
  const span = result.maps.high - result.maps.low || 1;
  const values = {A: floats(a.maps.data), B: floats(b.maps.data)};
  const figures = [];
  if (a.maps.kind === "vector") {
    const n = a.maps.size[0];
    const px = Math.max(1, Math.floor(480 / n));
    figures.push(pair(0, result.maps.change[0], (side) => {
      const canvas = mapCanvas(values[side], 0, 1, n, result.maps.low, span, px);
      canvas.style.height = "24px";
      canvas.dataset.side = side;
      hover(canvas, values[side], 0, 1, n, `${side} ${result.output}`);
      return canvas;
    }));
    $("cmp-pages").textContent = `a vector of ${a.maps.length}` + (a.maps.scale > 1 ? ` (means of ${a.maps.scale})` : "");
  } else {
    const [h, w] = a.maps.size;
    const px = Math.max(1, Math.floor(64 / Math.max(h, w)));
    for (let i = 0; i < a.maps.count; i++) {
      const channel = a.maps.first + i;
      figures.push(pair(channel, result.maps.change[channel], (side) => {
        const canvas = mapCanvas(values[side], i * h * w, h, w, result.maps.low, span, px);
        canvas.dataset.side = side;
        hover(canvas, values[side], i * h * w, h, w, `${side} map ${channel}`);
        return canvas;
      }));
    }
    $("cmp-pages").textContent = `maps ${a.maps.first}-${a.maps.first + a.maps.count - 1} of ${a.maps.channels}` +
      (a.maps.scale > 1 ? ` (means of ${a.maps.scale}x${a.maps.scale} cells)` : "");
    $("cmp-prev").disabled = a.maps.page === 0;
    $("cmp-next").disabled = a.maps.page >= a.maps.pages - 1;
  }
  $("cmp-pager").hidden = a.maps.kind === "vector" || a.maps.pages === 1;
  $("cmp-maps").replaceChildren(...figures);
  const most = mostChanged(result.maps.change);
  $("cmp-maps-most").textContent = a.maps.kind === "vector" ? "" : "maps that changed most: " +
    most.map(({index, value}) => `#${index} (${value.toFixed(3)})`).join(", ");
  $("cmp-maps-head").textContent = `${result.output} for the current image, ` +
    `${fmt(result.maps.low)} .. ${fmt(result.maps.high)} on one scale`;
}

function show(result) {
  $("cmp-title-a").textContent = `A: ${label(result.a.name)}`;
  $("cmp-title-b").textContent = `B: ${label(result.b.name)}`;
  showTop($("cmp-top-a"), result.a.top);
  showTop($("cmp-top-b"), result.b.top);
  showFilters(result);
  showMaps(result);
}

function fillSelect(select, wanted) {
  const keep = select.value;
  select.replaceChildren(...listing.checkpoints.map((c) => {
    const option = element("option", null, c.label);
    option.value = c.name;
    return option;
  }));
  const names = listing.checkpoints.map((c) => c.name);
  select.value = names.includes(keep) ? keep : wanted;
}

function showListing(fresh) {
  const described = (l) => l.checkpoints.map((c) => `${c.name}\t${c.label}`).join("\n");  // a relabelled file too
  const before = listing ? described(listing) : null;
  listing = fresh;
  if (listing.checkpoints.length < 2) return;
  const first = panel().hidden;
  panel().hidden = false;
  $("cmp-note").textContent = listing.note;
  if (described(listing) === before) return;
  fillSelect($("cmp-a"), listing.a);
  fillSelect($("cmp-b"), listing.b);
  if (first) refreshCompare();
}

function buildLayerSelect(firstConv) {
  const select = $("cmp-layer");
  select.replaceChildren(...state.model.units.map((unit) => {
    const option = element("option", null, `${unit.id} (${unit.types.join(" → ")}) ${unit.shape.join("x")}`);
    option.value = unit.id;
    return option;
  }));
  select.value = firstConv || state.model.units[0].id;
}

export async function setupCompare() {
  let fresh;
  try {
    fresh = await api("/api/checkpoints");
  } catch (error) {
    status(error.message);
    return;
  }
  buildLayerSelect(fresh.first_conv);
  $("cmp-legend").replaceChildren(legend());
  for (const id of ["cmp-a", "cmp-b", "cmp-layer"]) {
    $(id).addEventListener("change", () => { page = 0; refreshCompare(); });
  }
  $("cmp-prev").addEventListener("click", () => { page = Math.max(0, page - 1); refreshCompare(); });
  $("cmp-next").addEventListener("click", () => { page += 1; refreshCompare(); });
  onImage(refreshCompare);
  new IntersectionObserver((entries) => {
    visible = entries.some((entry) => entry.isIntersecting);
    if (visible && shownKey !== key()) refreshCompare();
  }, {rootMargin: "200px"}).observe(panel());
  showListing(fresh);
  if (fresh.live) {  // a training run adds snapshots as it goes
    setInterval(() => api("/api/checkpoints").then(showListing).catch((error) => status(error.message)), POLL_MS);
  }
}
