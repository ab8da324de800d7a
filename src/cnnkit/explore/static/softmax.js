// Softmax, flatten and dense with the current numbers: logits, exp, their sum and the probabilities at a chosen
// temperature; and, for one class, which flattened values feed its logit the most.
import {$, element, fmt, softmax, status} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {state} from "./state.js";
import {SOFTMAX_GUIDE, guideBox} from "./guidance.js";

let logits = null;
let picked = false;  // whether the learner chose a class for the dense view (until then it follows the prediction)
const SHOWN = 10;  // rows listed (the most probable): a 1000-class table would be 18,000 px tall

const dense = latestWins(
  (layer, output) => api("/api/dense", {image: state.image, layer, output}),
  {apply: showDense, fail: (error) => status(error.message)});

function denseLayer() {
  const linear = state.model.units.filter((u) => u.types[0] === "Linear");
  return linear.length ? linear[linear.length - 1] : null;
}

export function setupSoftmax() {
  const g = SOFTMAX_GUIDE;
  const guide = $("sm-guide");
  guide.append(element("strong", null, g.title), " ", element("code", null, g.formula), element("p", null, g.text));
  guide.append(guideBox(["Flatten", "Linear"]));
  $("sm-temp").addEventListener("input", showSoftmax);
  const select = $("sm-output");
  state.model.classes.forEach((name, i) => {
    const option = element("option", null, name);
    option.value = String(i);
    select.append(option);
  });
  select.addEventListener("change", () => { picked = true; refreshDense(); });
  if (!denseLayer()) $("dense-view").hidden = true;
}

export function setLogits(values) {
  logits = values;
  orderByProbability($("sm-output"), values, 0);
  if (!picked) $("sm-output").value = String(values.indexOf(Math.max(...values)));  // the predicted class until one is picked
  showSoftmax();
}

// A class menu in order of the current logits (the most probable first), each option named with its probability;
// the first `keep` options (e.g. "the predicted one") stay on top, and the chosen class stays chosen.
export function orderByProbability(select, values, keep) {
  const probabilities = softmax(values);
  const options = [...select.options];
  const fixed = options.slice(0, keep), classes = options.slice(keep);
  classes.sort((a, b) => values[Number(b.value)] - values[Number(a.value)]);
  for (const option of classes) {
    option.textContent = `${state.model.classes[Number(option.value)]} (${(100 * probabilities[Number(option.value)]).toFixed(1)}%)`;
  }
  const chosen = select.value;
  select.replaceChildren(...fixed, ...classes);
  select.value = chosen;
}

export function refreshDense() {
  const layer = denseLayer();
  if (layer && state.image) dense(layer.id, Number($("sm-output").value));
}

function showSoftmax() {
  if (!logits) return;
  const T = Number($("sm-temp").value);
  $("sm-temp-value").textContent = T.toFixed(1);
  const top = Math.max(...logits);
  const exps = logits.map((z) => Math.exp((z - top) / T));
  const sum = exps.reduce((a, b) => a + b, 0);
  const body = $("sm-rows");
  body.replaceChildren();
  const order = logits.map((_, i) => i).sort((a, b) => logits[b] - logits[a]);
  for (const i of order.slice(0, SHOWN)) {
    const row = element("tr", "sm-row");
    row.dataset.index = String(i);
    const p = exps[i] / sum;
    const bar = element("span", "sm-bar");
    bar.style.width = `${Math.round(120 * p)}px`;
    const cells = [element("td", "sm-class", state.model.classes[i]), element("td", "sm-logit", fmt(logits[i])),
      element("td", "sm-scaled", fmt((logits[i] - top) / T)), element("td", "sm-exp", fmt(exps[i])),
      element("td", "sm-p", fmt(p)), element("td")];
    cells[5].append(bar);
    row.append(...cells);
    row.addEventListener("click", () => { picked = true; $("sm-output").value = String(i); refreshDense(); });
    body.append(row);
  }
  $("sm-shown").textContent = logits.length > SHOWN ?
    `${SHOWN} of ${logits.length} classes (the most probable); the sum runs over all ${logits.length}.` : "";
  $("sm-sum").textContent = fmt(sum);
  $("sm-max").textContent = fmt(top);
  $("softmax-view").dataset.temperature = T.toFixed(1);
}

function showDense(d) {
  const box = $("dense-terms");
  box.replaceChildren();
  const name = state.model.classes[d.output] ?? String(d.output);
  const from = d.from ? `flattened from ${d.from.layer}'s ${d.from.shape.join("x")} maps` : "its input vector";
  box.append(element("p", "note", `Logit of ${name} (${d.layer}, output ${d.output}) = bias + Σ weight × input over ` +
    `${d.inputs} inputs, ${from}. The ${d.terms.length} largest terms:`));
  const table = element("table", "rows dense-table");
  const head = element("tr");
  for (const label of ["input", "from map (c, y, x)", "value", "weight", "weight × value"]) head.append(element("th", null, label));
  table.append(head);
  for (const t of d.terms) {
    const row = element("tr", t.product >= 0 ? "push-up" : "push-down");
    for (const text of [String(t.index), t.at ? `(${t.at.join(", ")})` : "-", fmt(t.input), fmt(t.weight), fmt(t.product)]) {
      row.append(element("td", null, text));
    }
    row.lastChild.classList.add("dense-product");
    table.append(row);
  }
  box.append(table);
  const equation = element("p", "equation");
  equation.append(`listed terms + the other ${d.inputs - d.terms.length} terms `, element("span", "dense-rest", fmt(d.rest)),
    " + bias ", element("span", "dense-bias", fmt(d.bias)), " = ", element("span", "dense-value", fmt(d.value)));
  box.append(equation);
  $("dense-view").dataset.output = String(d.output);
}
