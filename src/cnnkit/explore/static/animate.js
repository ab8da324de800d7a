// The animated scan: a window slides over the padded input while the output map fills in, with play / pause /
// step and speed; the current window's products (or values) and their sum are written out as it moves.
// The output values come from the server (cnnkit.tf or the model's own layer); the page only lays them out.
import {element, fmt, short} from "./util.js";

const SPEEDS = [1, 2, 5, 10, 30];  // window positions per second

// spec: {op: conv|max|avg, input_values: [H][W], kernel_values: [kh][kw] | null, kernel: [kh, kw],
// stride: [sh, sw], dilation: [dh, dw], pads: {top, bottom, left, right}, output_values: [OH][OW],
// partial_values?: [OH][OW] (a conv's share from this one input channel), bias?, counts_padding?}
export function animation(spec, {integers = false} = {}) {
  const number = integers ? short : fmt;
  const H = spec.input_values.length, W = spec.input_values[0].length;
  const OH = spec.output_values.length, OW = OH ? spec.output_values[0].length : 0;
  const {top, bottom, left, right} = spec.pads;
  const [kh, kw] = spec.kernel, [sh, sw] = spec.stride, [dh, dw] = spec.dilation;
  const root = element("div", "animation");
  if (!OH || !OW) {
    root.append(element("p", "note", "The output is empty: there is nothing to scan."));
    return {root, stop: () => {}};
  }
  // The padded input: hatched cells are padding; TF SAME's extra row / column (bottom / right) is marked.
  const inputTable = element("table", "grid scan-input");
  const cells = [];
  for (let r = -top; r < H + bottom; r++) {
    const line = element("tr");
    const row = [];
    for (let c = -left; c < W + right; c++) {
      const inside = r >= 0 && r < H && c >= 0 && c < W;
      const cell = inside ? element("td", null, number(spec.input_values[r][c])) : element("td", "pad", "0");
      if (!inside && ((r >= H && r - H >= top) || (c >= W && c - W >= left))) cell.classList.add("extra");
      line.append(cell);
      row.push(cell);
    }
    inputTable.append(line);
    cells.push(row);
  }
  const outputTable = element("table", "grid scan-output");
  const outCells = spec.output_values.map((values) => {
    const line = element("tr");
    const row = values.map(() => element("td", "empty", "·"));
    line.append(...row);
    outputTable.append(line);
    return row;
  });
  const kernelBox = element("div", "scan-kernel");
  if (spec.kernel_values) {
    const table = element("table", "grid");
    for (const values of spec.kernel_values) {
      const line = element("tr");
      for (const v of values) line.append(element("td", null, number(v)));
      table.append(line);
    }
    kernelBox.append(element("h4", null, "kernel"), table);
  }
  const figures = element("div", "scan-figures");
  const inFigure = element("div");
  inFigure.append(element("h4", null, `padded input ${H + top + bottom}x${W + left + right}`), inputTable);
  const outFigure = element("div");
  outFigure.append(element("h4", null, `output ${OH}x${OW}`), outputTable);
  figures.append(inFigure, kernelBox, outFigure);

  const where = element("span", "scan-where");
  const back = element("button", "scan-back", "◀ step");
  const play = element("button", "scan-play", "▶ play");
  const next = element("button", "scan-next", "step ▶");
  const speed = element("select", "scan-speed");
  for (const s of SPEEDS) {
    const option = element("option", null, `${s} / s`);
    option.value = String(s);
    speed.append(option);
  }
  speed.value = "2";
  const controls = element("div", "buttons scan-controls");
  controls.append(back, play, next, element("label", null, "speed "), speed, where);
  const work = element("p", "equation scan-work");
  root.append(controls, figures, work);

  let step = 0;
  let timer = null;
  let lit = [];
  const total = OH * OW;

  function windowCells(y, x) {
    const list = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const r = y * sh + i * dh, c = x * sw + j * dw;  // in padded coordinates
        list.push({i, j, r, c, real: r - top >= 0 && r - top < H && c - left >= 0 && c - left < W});
      }
    }
    return list;
  }

  function describe(y, x, inWindow) {
    work.replaceChildren();
    const value = (w) => (w.real ? spec.input_values[w.r - top][w.c - left] : 0);
    const out = spec.output_values[y][x];
    if (spec.op === "conv") {
      work.append(`window at output (${y}, ${x}): `);
      inWindow.forEach((w, n) => {
        if (n) work.append(" + ");
        work.append(element("span", w.real ? "product" : "product pad", `${number(value(w))}×${number(spec.kernel_values[w.i][w.j])}`));
      });
      const share = spec.partial_values ? spec.partial_values[y][x] : out;
      work.append(" = ", element("span", "anim-sum", number(share)));
      if (spec.partial_values) {
        work.append(element("br"), `this is input channel ${spec.input_channel}'s share; over all input channels ` +
          `${spec.input_channels[0]}..${spec.input_channels[1]} plus the bias ${fmt(spec.bias)}, the layer's output is `,
          element("span", "anim-out", fmt(out)));
      } else {
        work.append(element("br"), "output = ", element("span", "anim-out", number(out)));
      }
    } else {
      const real = inWindow.filter((w) => w.real);
      const label = spec.op === "max" ? "max" : "mean";
      work.append(`${label} of the ${real.length} real cells at output (${y}, ${x}): `,
        real.map((w) => number(value(w))).join(", "));
      if (spec.op === "avg") {
        const counted = spec.counts_padding ? inWindow.length : real.length;
        work.append(` → sum / ${counted}${spec.counts_padding ? " (padding counted)" : " (padding not counted)"}`);
      }
      work.append(" = ", element("span", "anim-out", number(out)));
    }
  }

  function show() {
    for (const cell of lit) cell.classList.remove("win");
    const y = Math.floor(step / OW), x = step % OW;
    const inWindow = windowCells(y, x);
    lit = inWindow.map((w) => cells[w.r][w.c]);
    for (const cell of lit) cell.classList.add("win");
    outCells.forEach((row, oy) => row.forEach((cell, ox) => {
      const index = oy * OW + ox;
      cell.classList.toggle("empty", index > step);
      cell.classList.toggle("current", index === step);
      cell.textContent = index > step ? "·" : number(spec.output_values[oy][ox]);
    }));
    where.textContent = ` position ${step + 1} of ${total}`;
    root.dataset.step = String(step);
    root.dataset.y = String(y);
    root.dataset.x = String(x);
    describe(y, x, inWindow);
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    play.textContent = "▶ play";
  }

  function start() {
    stop();
    play.textContent = "⏸ pause";
    timer = setInterval(() => {
      if (step >= total - 1) { stop(); return; }
      step += 1;
      show();
    }, 1000 / Number(speed.value));
  }

  play.addEventListener("click", () => {
    if (timer) { stop(); return; }
    if (step >= total - 1) step = 0;
    start();
  });
  next.addEventListener("click", () => { stop(); step = Math.min(total - 1, step + 1); show(); });
  back.addEventListener("click", () => { stop(); step = Math.max(0, step - 1); show(); });
  speed.addEventListener("change", () => { if (timer) start(); });
  const goTo = (y, x) => { stop(); step = Math.max(0, Math.min(total - 1, y * OW + x)); show(); };
  outCells.forEach((row, oy) => row.forEach((cell, ox) => cell.addEventListener("click", () => goTo(oy, ox))));
  show();
  return {root, stop, goTo};
}
