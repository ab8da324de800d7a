// The hyperparameter playground: input size, kernel, stride, dilation and padding of one window; the output size
// with its formula and pads come from the server (cnnkit explain's arithmetic, cnnkit.tf's values).
import {$, element, status} from "./util.js";
import {api} from "./api.js";
import {latestWins} from "./latest.js";
import {animation} from "./animate.js";
import {guideBox} from "./guidance.js";

const FIELDS = ["kind", "height", "width", "kernel", "stride", "dilation", "padding", "explicit"];
// The number fields as the page names them; each one's range is its input's min and max (one source).
const NUMBERS = {height: "input height", width: "width", kernel: "kernel", stride: "stride", dilation: "dilation",
  explicit: "pad"};
let playing = null;

// The settings, or {problem} naming the first field that is empty, not a whole number or out of range, or a
// window the server would refuse: a half-typed field never becomes a request.
function settings() {
  const value = (name) => $(`pg-${name}`).value;
  const numbers = {};
  for (const node of document.querySelectorAll("#playground .pg-controls input")) node.removeAttribute("aria-invalid");
  for (const [name, label] of Object.entries(NUMBERS)) {
    const field = $(`pg-${name}`);
    if (field.disabled) continue;
    const text = field.value.trim();
    const number = Number(text);
    if (text === "" || !Number.isInteger(number) || number < Number(field.min) || number > Number(field.max)) {
      field.setAttribute("aria-invalid", "true");
      const got = text === "" ? "it is empty" : `received ${text}`;
      return {problem: `${label} must be a whole number from ${field.min} to ${field.max}; ${got}`};
    }
    numbers[name] = number;
  }
  const kind = value("kind");
  const padding = value("padding") === "explicit" ? numbers.explicit : value("padding");
  const body = {kind, height: numbers.height, width: numbers.width, kernel: numbers.kernel, stride: numbers.stride,
    dilation: kind === "conv" ? numbers.dilation : 1, padding};
  return {body, problem: windowProblem(body)};
}

// What the server's arithmetic would refuse, said before asking it: a pool padded past half its window, or a
// window wider than the (padded) input.
function windowProblem({kind, height, width, kernel, dilation, padding}) {
  if (padding === "same") return null;
  const pad = padding === "valid" ? 0 : padding;
  if (kind !== "conv" && pad > Math.floor(kernel / 2)) {
    return `pad must be at most half the ${kernel}x${kernel} window (${Math.floor(kernel / 2)}) for a pool; received ${pad}`;
  }
  const extent = (kernel - 1) * dilation + 1;
  const side = Math.min(height, width) + 2 * pad;
  if (extent > side) {
    const what = dilation > 1 ? `kernel ${kernel} with dilation ${dilation} spans ${extent} cells` : `kernel ${kernel}`;
    return `${what}: larger than the ${pad ? "padded " : ""}input side ${side}; make the input larger, the ` +
      "kernel smaller or pick SAME";
  }
  return null;
}

function refuse(message) {
  if (playing) playing.stop();
  $("pg-result").dataset.ok = "0";
  $("pg-error").textContent = message;
  $("pg-result").hidden = true;
  $("playground").dataset.settled = "1";
}

let asked = 0;  // the newest settings; an answer to older ones (a field has been made invalid since) is dropped
const request = latestWins((body) => api("/api/window", body), {
  apply: (info, body, ask) => { if (ask === asked) show(info); },
  fail: (error) => refuse(error.message),
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
  const {body, problem} = settings();
  asked += 1;
  if (problem) refuse(problem); else request(body, asked);
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
