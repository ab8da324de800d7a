// Why: saliency and Grad-CAM for the chosen class.
import {$, floats, heat, smallCanvas, status} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {state} from "./state.js";
import {drawInput} from "./input.js";

const request = latestWins(
  (chosen) => api("/api/why", {image: state.image, class_index: chosen === "" ? null : Number(chosen)}),
  {apply: show, fail: (error) => status(error.message)});

export function refreshWhy() {
  if (state.image) request($("why-class").value);
}

function show(r) {
  const [, H, W] = state.model.input_shape;  // named HxW, as the page's CxHxW sizes are
  overlay($("saliency"), floats(r.saliency.data), r.saliency.size, r.saliency.high, false);
  if (r.grad_cam) {
    overlay($("grad-cam"), floats(r.grad_cam.data), r.grad_cam.size, r.grad_cam.high, true);
    $("grad-cam-caption").textContent = `Grad-CAM on ${r.grad_cam.layer} (${r.grad_cam.size.join("x")})`;
  }
  const warnings = [];
  if (!state.model.trained) warnings.push("Untrained: the weights are random, so this explains noise, not a learned decision.");
  if (state.blank) warnings.push("The input is empty: the network still picks a class, and this explains a guess on nothing.");
  $("why-note").textContent = [`Explaining class ${r.class} (probability ${(100 * r.probability).toFixed(1)}%) ` +
    `for the ${H}x${W} input.`, ...warnings].join(" ");
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
