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

export function setImage(image, pixels, note) {
  state.image = image;
  state.pixels = pixels;
  $("cell-panel").dataset.current = "0";
  drawInput($("seen"));
  $("input-note").textContent = note || "";
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
      setImage({pixels: data.pixels}, data.pixels, `uploaded ${file.name}`);
      status("");
    } catch (error) {
      status(`upload refused: ${error.message}`);
    }
  });
}
