// A clicked cell: receptive field on the input, the arithmetic with the real numbers, and the animated scan of its
// map. The panel follows the image: a new drawing re-explains the same cell.
import {$, element, fmt, status} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {state} from "./state.js";
import {drawInput} from "./input.js";
import {animation} from "./animate.js";
import {guideBox} from "./guidance.js";

let current = null;  // {unit, at: [channel, y, x], version}
let playing = null;  // the running animation, stopped when the panel changes

const request = latestWins(
  async (version, unit, channel, y, x) => ({version, e: await api("/api/cell", {image: state.image, layer: unit.id, channel, y, x})}),
  {
    apply: ({version, e}) => {
      renderCell(e);
      $("cell-panel").dataset.current = version === state.version ? "1" : "0";
    },
    fail: (error) => status(error.message),
  });

export function explainCell(unit, channel, y, x) {
  current = {unit, at: [channel, y, x], version: state.version};
  request(state.version, unit, channel, y, x);
}

export function followImage() {
  if (current && current.version !== state.version && !$("cell-panel").hidden) explainCell(current.unit, ...current.at);
}

export function closeCell() {
  $("cell-panel").hidden = true;
  current = null;
  if (playing) playing.stop();
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
  if (playing) playing.stop();
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
  box.append(guideBox([e.type]));
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
  shown.append(`Value in the ${mode}-activation map: `, element("span", "map-value", fmt(e.map_value[mode])));
  box.append(shown);
  box.append(scanSection(e));
  $("cell-panel").hidden = false;
}

// The animation of this cell's whole map, loaded on request (it sends the whole input plane).
function scanSection(e) {
  const section = element("section", "scan");
  section.append(element("h4", null, "Watch the window slide"));
  const controls = element("div", "buttons");
  const chooser = element("label", null, "input channel ");
  const select = element("select", "scan-channel");
  if (e.kind === "conv") {
    for (const c of e.channels) {
      const option = element("option", null, String(c.input_channel));
      option.value = String(c.input_channel);
      select.append(option);
    }
    chooser.append(select);
    controls.append(chooser);
  }
  const go = element("button", "scan-open", "animate this map");
  controls.append(go);
  const holder = element("div");
  section.append(controls, holder);
  const load = async () => {
    try {
      const body = {image: state.image, layer: e.layer, channel: e.channel};
      if (e.kind === "conv") body.input_channel = Number(select.value);
      const spec = await api("/api/scan", body);
      if (playing) playing.stop();
      playing = animation(spec);
      holder.replaceChildren(playing.root);
      playing.goTo(e.y, e.x);
    } catch (error) {
      holder.replaceChildren(element("p", "note", error.message));
    }
  };
  go.addEventListener("click", load);
  select.addEventListener("change", () => { if (holder.childElementCount) load(); });
  return section;
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
