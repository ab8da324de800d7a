// The hyperparameter playground: input size, kernel, stride, dilation and padding of one window; the output size
// with its formula and pads come from the server (cnnkit explain's arithmetic, cnnkit.tf's values).
import {$, element, status} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {animation} from "./animate.js";
import {guideBox} from "./guidance.js";

const FIELDS = ["kind", "height", "width", "kernel", "stride", "dilation", "padding", "explicit"];
let playing = null;

function settings() {
  const value = (name) => $(`pg-${name}`).value;
  const padding = value("padding") === "explicit" ? Number(value("explicit")) : value("padding");
  return {kind: value("kind"), height: Number(value("height")), width: Number(value("width")),
    kernel: Number(value("kernel")), stride: Number(value("stride")), dilation: Number(value("dilation")), padding};
}

const request = latestWins((body) => api("/api/window", body), {
  apply: show,
  fail: (error) => {
    if (playing) playing.stop();
    $("pg-result").dataset.ok = "0";
    $("pg-error").textContent = error.message;
    $("pg-result").hidden = true;
    $("playground").dataset.settled = "1";
  },
});

function show(info) {
  $("pg-error").textContent = "";
  $("pg-result").hidden = false;
  $("pg-output").textContent = `${info.output[0]}x${info.output[1]}`;
  $("pg-pads").textContent = `top ${info.pad_top}, bottom ${info.pad_bottom}, left ${info.pad_left}, right ${info.pad_right}`;
  $("pg-extra").textContent = info.pad_bottom > info.pad_top || info.pad_right > info.pad_left ?
    "TF SAME pads an odd total with the extra row / column at the bottom / right (drawn in orange)." : "";
  const formulas = $("pg-formulas");
  formulas.replaceChildren(...info.formulas.map((f) => element("li", null, f)));
  if (playing) playing.stop();
  playing = animation({op: info.op, input_values: info.input_values, kernel_values: info.kernel_values,
    kernel: [info.kernel, info.kernel], stride: [info.stride, info.stride], dilation: [info.dilation, info.dilation],
    pads: {top: info.pad_top, bottom: info.pad_bottom, left: info.pad_left, right: info.pad_right},
    output_values: info.output_values, counts_padding: false}, {integers: info.op !== "avg"});
  $("pg-animation").replaceChildren(playing.root);
  $("pg-result").dataset.ok = "1";
  $("playground").dataset.settled = "1";
}

export function refreshPlayground() {
  $("playground").dataset.settled = "0";
  $("pg-explicit").disabled = $("pg-padding").value !== "explicit";
  $("pg-dilation").disabled = $("pg-kind").value !== "conv";
  if ($("pg-kind").value !== "conv") $("pg-dilation").value = "1";
  request(settings());
}

export function setupPlayground() {
  for (const name of FIELDS) $(`pg-${name}`).addEventListener("input", refreshPlayground);
  $("pg-guide").append(guideBox(["Conv2d", "MaxPool2d", "AvgPool2d"]));
  try {
    refreshPlayground();
  } catch (error) {
    status(error.message);
  }
}
