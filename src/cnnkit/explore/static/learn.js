// Watch it learn (`cnnkit explore --train`): Start / Pause / Resume, the run's curves, its first layer's filters, and
// after every epoch the whole page (overview, layers, prediction, strip) redrawn with the new weights through
// changed(). The page polls /api/train/status (same origin; no sockets needed under the CSP).
import {$, floats, smallCanvas, svgElement} from "./util.js";
import {api} from "./api.js";
import {changed, state as appState} from "./state.js";
import {loadStrip} from "./strip.js";

const RUNNING_MS = 500;   // status polls while training
const WAITING_MS = 3000;  // while idle or paused (another tab may press Start)
const LOSS = [{key: "train_loss", name: "train-loss", label: "train objective"},
  {key: "val_loss", name: "val-loss", label: "validation cross-entropy"}];
const ACCURACY = [{key: "val_accuracy", name: "val-acc", label: "validation accuracy"}];

const records = new Map();  // epoch -> its record in metrics.jsonl
let shown = null;           // the epoch whose weights the page shows; null before the first status
let version = null;         // the server's model_version: a new one means another network, so reload
let timer = null;

export function setupLearn(model) {
  if (!model.training) return;
  $("learn-panel").hidden = false;
  $("learn-start").addEventListener("click", () => act("/api/train/start"));
  $("learn-resume").addEventListener("click", () => act("/api/train/start"));
  $("learn-pause").addEventListener("click", () => act("/api/train/pause"));
  poll();
}

async function act(path) {
  try {
    show(await api(path, {}));
  } catch (error) {
    $("learn-error").textContent = error.message;
  }
}

async function poll() {
  timer = null;
  try {
    const since = records.size ? Math.max(...records.keys()) : 0;
    show(await api(`/api/train/status?since=${since}`));
  } catch (error) {
    $("learn-error").textContent = error.message;
    schedule(WAITING_MS);
  }
}

function schedule(ms) {
  if (timer !== null) clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

function show(status) {
  if (version !== null && status.model_version !== version) {
    window.location.reload();  // the trained network's layers differ from those the page was built on
    return;
  }
  version = status.model_version;
  for (const record of status.records) records.set(record.epoch, record);
  showState(status);
  const first = shown === null;
  if (first || status.epoch !== shown) {
    shown = status.epoch;
    drawCurves(status.epochs);
    if (status.epoch > 0) loadFilters();
    if (!first) {
      $("untrained").hidden = true;
      appState.model.trained = true;  // the prediction and Why drop their "untrained" marks
      loadStrip().catch(() => {});  // the held-out mistakes of the new weights (the split opens with epoch 1)
      changed();  // every view asks again, with the new weights
    }
  }
  const panel = $("learn-panel");
  panel.dataset.state = status.state;
  panel.dataset.epoch = String(status.epoch);
  if (status.state === "running") schedule(RUNNING_MS);
  else if (status.state === "idle" || status.state === "paused") schedule(WAITING_MS);
}

// Why the training curve can sit above the validation one: the two are not the same measurement.
export function lossCaption(status, units) {
  const dropout = units.some((u) => u.types.includes("Dropout"));
  const objective = status.loss === "article" ? "the article's clipped one-hot loss" :
    status.label_smoothing > 0 ? `cross-entropy with label smoothing ${status.label_smoothing}` : "cross-entropy";
  return `The train objective is ${objective}, averaged over the epoch's batches in training mode` +
    `${dropout ? " (dropout on)" : ""} while the weights change; the validation curve is plain cross-entropy in ` +
    `eval mode${dropout ? " (no dropout)" : ""} after the epoch: validation can sit below training without ` +
    "the network doing better on unseen images.";
}

function showState(status) {
  $("learn-caption").textContent = lossCaption(status, appState.model.units);
  const {state} = status;
  $("learn-start").hidden = state !== "idle";
  $("learn-pause").hidden = state !== "running";
  $("learn-pause").disabled = status.pausing;
  $("learn-resume").hidden = state !== "paused";
  $("learn-state").textContent = status.pausing ? "pausing after this epoch" : state;
  $("learn-epoch").textContent = `epoch ${status.epoch} of ${status.epochs}`;
  $("learn-run").textContent = status.run_dir;
  $("learn-error").textContent = status.error || "";
  $("learn-log").textContent = status.log.length ? `trainer: ${status.log[status.log.length - 1]}` : "";
  const last = records.get(status.epoch) || [...records.values()].pop();
  $("learn-val-acc").textContent = last && last.val_accuracy != null ? `${(100 * last.val_accuracy).toFixed(2)}%` : "–";
  $("learn-final").textContent = status.final && status.final.test_accuracy != null ?
    `done: test accuracy ${(100 * status.final.test_accuracy).toFixed(2)}% (the best epoch's weights, in ` +
    `${status.run_dir}/best); the page shows the last epoch's.` : "";
}

function drawCurves(epochs) {
  const rows = [...records.values()].sort((a, b) => a.epoch - b.epoch);
  const losses = rows.flatMap((r) => LOSS.map((s) => r[s.key])).filter((v) => v != null);
  chart($("learn-loss"), rows, LOSS, epochs, [0, Math.max(1e-6, ...losses)]);
  chart($("learn-acc"), rows, ACCURACY, epochs, [0, 1]);
}

// One chart: a line and a dot per series and epoch; x runs over the whole run, so the curve grows to the right.
function chart(box, rows, series, epochs, [low, high]) {
  const W = 300, H = 150, L = 40, R = 8, T = 8, B = 22;
  const x = (epoch) => L + (W - L - R) * (epochs > 1 ? (epoch - 1) / (epochs - 1) : 0.5);
  const y = (value) => T + (H - T - B) * (1 - (value - low) / (high - low));
  box.replaceChildren();
  box.setAttribute("viewBox", `0 0 ${W} ${H}`);
  box.append(svgElement("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}),
    svgElement("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}),
    svgElement("text", {x: L - 4, y: T + 8, class: "tick end"}, high.toPrecision(2)),
    svgElement("text", {x: L - 4, y: H - B, class: "tick end"}, String(low)),
    svgElement("text", {x: L, y: H - 6, class: "tick"}, "epoch 1"),
    svgElement("text", {x: W - R, y: H - 6, class: "tick end"}, String(epochs)));
  for (const s of series) {
    const points = rows.filter((r) => r[s.key] != null);
    box.append(svgElement("polyline", {class: `curve ${s.name}`,
      points: points.map((r) => `${x(r.epoch)},${y(r[s.key])}`).join(" ")}));
    for (const r of points) {
      const dot = svgElement("circle", {cx: x(r.epoch), cy: y(r[s.key]), r: 2.5, class: `point ${s.name}`});
      dot.append(svgElement("title", {}, `epoch ${r.epoch}: ${s.label} ${r[s.key].toFixed(4)}`));
      box.append(dot);
    }
  }
}

async function loadFilters() {
  let filters;
  try {
    filters = await api("/api/train/filters");
  } catch (error) {
    $("learn-filters-note").textContent = error.message;
    return;
  }
  const [O, I, kh, kw] = filters.shape;
  const values = floats(filters.data);
  const span = Math.max(Math.abs(filters.low), Math.abs(filters.high)) || 1;
  const px = Math.max(4, Math.floor(36 / Math.max(kh, kw)));
  const box = $("learn-filters");
  box.replaceChildren();
  for (let o = 0; o < O; o++) {
    const canvas = smallCanvas(filterImage(values, o, I, kh, kw, span));
    canvas.style.width = `${kw * px}px`;
    canvas.style.height = `${kh * px}px`;
    canvas.title = `filter ${o}`;
    box.append(canvas);
  }
  const colours = I === 3 ? "as RGB, grey = 0" : `blue negative, red positive${I > 1 ? `, mean of ${I} inputs` : ""}`;
  $("learn-filters-note").textContent = `${filters.layer}: ${O} filters ${kh}x${kw} after epoch ${filters.epoch} ` +
    `(${colours}; one scale, ±${span.toPrecision(2)})`;
}

// Filter o of weights (O, I, kh, kw): RGB for three input channels, else their mean on a blue-white-red scale.
function filterImage(values, o, I, kh, kw, span) {
  const image = new ImageData(kw, kh);
  const plane = kh * kw;
  for (let i = 0; i < plane; i++) {
    const at = (c) => values[(o * I + c) * plane + i] / span;
    let rgb;
    if (I === 3) {
      rgb = [0, 1, 2].map((c) => 128 + 127 * at(c));
    } else {
      let mean = 0;
      for (let c = 0; c < I; c++) mean += at(c) / I;
      const t = Math.min(1, Math.abs(mean));
      rgb = mean >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 - t), 255 * (1 - t), 255];
    }
    image.data.set([...rgb, 255], 4 * i);
  }
  return image;
}
