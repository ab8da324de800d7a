// Input: drawing, upload, invert, clear; and drawing the current image onto any canvas.
import {$, element, smallCanvas, status} from "./util.js";
import {changed, state} from "./state.js";

// An ImageData of display pixels (C*H*W values 0..255, channel-major) at the model's size.
export function pixelImage(pixels) {
  const [C, H, W] = state.model.input_shape;
  const image = new ImageData(W, H);
  for (let i = 0; i < H * W; i++) {
    for (let k = 0; k < 3; k++) image.data[4 * i + k] = pixels[(C === 3 ? k : 0) * H * W + i];
    image.data[4 * i + 3] = 255;
  }
  return image;
}

// Draw the current input, scaled without smoothing, onto a display canvas.
export function drawInput(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(smallCanvas(pixelImage(state.pixels)), 0, 0, canvas.width, canvas.height);
  return ctx;
}

const drawCanvas = () => $("draw");

function canvasPixels() {
  const [C, H, W] = state.model.input_shape;
  const small = element("canvas");
  small.width = W;
  small.height = H;
  const ctx = small.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(drawCanvas(), 0, 0, W, H);
  const rgba = ctx.getImageData(0, 0, W, H).data;
  const pixels = new Array(C * H * W);
  for (let i = 0; i < H * W; i++) {
    const grey = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3;
    for (let c = 0; c < C; c++) pixels[c * H * W + i] = C === 3 ? rgba[4 * i + c] : grey;
  }
  return pixels;
}

// Border and overall mean brightness (0..255) of display pixels, over every channel.
export function brightness(pixels) {
  const [C, H, W] = state.model.input_shape;
  let border = 0, cells = 0, all = 0;
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = pixels[(c * H + y) * W + x];
        all += v;
        if (y === 0 || x === 0 || y === H - 1 || x === W - 1) { border += v; cells += 1; }
      }
    }
  }
  return {border: border / cells, mean: all / (C * H * W)};
}

const FAR = 96;  // brightness apart (of 255) past which an upload looks inverted against the held-out images

// A warning under the input: an empty one (every pixel alike), or an upload whose border is far brighter or
// darker than the held-out images' (digits are light on dark: white = high values).
function guidance(pixels, uploaded) {
  state.blank = pixels.every((v) => v === pixels[0]);
  const digits = state.model.classes.length === 10 && state.model.classes.every((name, i) => name === String(i));
  if (state.blank) return `The input is empty: ${digits ? "draw a digit" : "draw or upload an image"}.`;
  const held = state.heldoutBrightness;
  if (!uploaded || !held) return "";
  const own = brightness(pixels);
  if (Math.abs(own.border - held.border) < FAR) return "";
  const [mine, theirs] = own.border > held.border ? ["bright", "dark"] : ["dark", "bright"];
  return `This image's border is ${mine} (mean ${own.border.toFixed(0)} of 255) while the held-out images' is ` +
    `${theirs} (${held.border.toFixed(0)}): the network was trained on ${theirs} backgrounds. Try Invert.`;
}

export function setImage(image, pixels, note, {uploaded = false} = {}) {
  state.image = image;
  state.pixels = pixels;
  $("cell-panel").dataset.current = "0";
  drawInput($("seen"));
  $("input-note").textContent = note || "";
  const warning = guidance(pixels, uploaded);
  $("input-warning").textContent = warning;
  $("input-warning").hidden = !warning;
  for (const card of document.querySelectorAll(".card")) card.classList.add("stale");
  changed();
}

export function paintDrawCanvas(pixels) {
  const ctx = drawCanvas().getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(smallCanvas(pixelImage(pixels)), 0, 0, drawCanvas().width, drawCanvas().height);
}

export function fromDrawing(note) {
  const pixels = canvasPixels();
  setImage({pixels}, pixels, note || "drawn");
}

export function clearCanvas() {
  const ctx = drawCanvas().getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, drawCanvas().width, drawCanvas().height);
}

export function setupDrawing() {
  const canvas = drawCanvas();
  const [, H, W] = state.model.input_shape;
  const ctx = canvas.getContext("2d");
  let last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  const stroke = (to) => {
    ctx.strokeStyle = "#fff";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Math.max(8, 1.5 * canvas.width / Math.max(H, W));  // about one and a half input pixels
    ctx.beginPath();
    ctx.moveTo(...(last || to));
    ctx.lineTo(...to);
    ctx.stroke();
    last = to;
    fromDrawing();
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = null;
    stroke(point(event));
  });
  canvas.addEventListener("pointermove", (event) => { if (last) stroke(point(event)); });
  const end = () => { last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => { clearCanvas(); fromDrawing("cleared"); });
  $("invert").addEventListener("click", () => {
    ctx.globalCompositeOperation = "difference";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.globalCompositeOperation = "source-over";
    fromDrawing("inverted");
  });
  $("upload").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    try {
      const response = await fetch("/api/upload", {method: "POST", body: file,
        headers: {"Content-Type": file.type || "application/octet-stream"}});
      const data = await response.json();
      if (!response.ok) throw new Error(data.error);
      paintDrawCanvas(data.pixels);
      setImage({pixels: data.pixels}, data.pixels, `uploaded ${file.name}`, {uploaded: true});
      status("");
    } catch (error) {
      status(`upload refused: ${error.message}`);
    }
  });
}
