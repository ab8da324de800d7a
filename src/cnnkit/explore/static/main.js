// cnnkit explore: draw or pick an image, see the prediction, the network at a glance, every layer's maps, a cell's
// arithmetic (animated), softmax and dense with the current numbers, why, and a hyperparameter playground.
// Plain ES modules; the page talks only to the server that served it (/api/...), and names images by their pixels
// or by their index in the held-out strip, never by a file path.
import {$, element, keepAspect, status} from "./util.js";
import {api} from "./api.js";
import {changed, onImage, state} from "./state.js";
import {clearCanvas, fromDrawing, setupDrawing} from "./input.js";
import {buildLayers, onCellClick, onPrediction, onSettled, refresh, showChannel} from "./layers.js";
import {closeCell, explainCell, followImage} from "./cell.js";
import {refreshWhy} from "./why.js";
import {loadStrip, setupStrip} from "./strip.js";
import {buildOverview, onOverviewClick, refreshOverview} from "./overview.js";
import {orderByProbability, refreshDense, setLogits, setupSoftmax} from "./softmax.js";
import {setupPlayground} from "./playground.js";
import {setupCompare} from "./compare.js";
import {setupLearn} from "./learn.js";

function describeModel(model) {
  const [C, H, W] = model.input_shape;
  $("title").textContent = `${model.title} (${model.model})`;
  document.title = `cnnkit explore: ${model.title}`;
  $("untrained").hidden = model.trained;
  $("input-size").textContent = `${C}x${H}x${W}`;
  keepAspect($("seen"), [H, W], Math.max(H, W), 96);  // one canvas pixel an input pixel, the larger side 96 px
  keepAspect($("draw"), [H, W], 280, 240);  // drawn in the input's shape, so nothing is squeezed on the way in
  for (const id of ["saliency", "grad-cam"]) keepAspect($(id), [H, W], 140);
  $("totals").textContent = `${model.units.length} units; trainable parameters ${model.totals.trainable.toLocaleString()}; ` +
    `multiply-adds per image ${model.totals.macs.toLocaleString()}`;
  model.classes.forEach((name, i) => {
    const option = element("option", null, name);
    option.value = String(i);
    $("why-class").append(option);
  });
}

function wire() {
  $("why-class").addEventListener("change", refreshWhy);
  $("pre-activation").addEventListener("change", (event) => {
    state.activation = event.target.checked ? "pre" : "post";
    changed();
  });
  $("cell-close").addEventListener("click", closeCell);
  onImage(() => { refresh(); refreshOverview(); });
  onPrediction((result) => {
    setLogits(result.logits);
    orderByProbability($("why-class"), result.logits, 1);  // "the predicted one", then the classes by probability
  });
  onSettled(() => { followImage(); refreshWhy(); refreshDense(); });
  onCellClick(explainCell);
  onOverviewClick((unit, channel) => {
    showChannel(unit.id, channel);
    if (unit.explainable) explainCell(unit, channel, Math.floor(unit.shape[1] / 2), Math.floor(unit.shape[2] / 2));
  });
}

async function start() {
  state.model = await api("/api/model");
  describeModel(state.model);
  wire();
  clearCanvas();
  setupDrawing();
  setupStrip();
  buildOverview();
  buildLayers();
  setupSoftmax();
  setupPlayground();
  setupCompare();
  setupLearn(state.model);
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
