// Guidance per layer type, written for cnnkit: what the layer computes, its formula, and what to look for.

const GUIDES = {
  Conv2d: {
    title: "Convolution",
    formula: "out[o, y, x] = bias[o] + Σ_c Σ_i Σ_j in[c, y·s + i·d − pad_top, x·s + j·d − pad_left] · w[o, c, i, j]",
    text: "Each output map has one kernel per input channel. The kernel slides over the (padded) input; at each " +
      "stop the window's values are multiplied by the kernel's and summed, over every input channel, plus one bias. " +
      "Output size per axis: SAME ceil(n / s); VALID ceil((n − k_eff + 1) / s); explicit floor((n + 2p − k_eff) / s) + 1, " +
      "with k_eff = (k − 1)·d + 1. Look for maps that light up on edges or strokes in early layers and on larger " +
      "parts in later ones; a map that is flat for every image is a filter the network does not use.",
  },
  MaxPool2d: {
    title: "Max pooling",
    formula: "out[c, y, x] = max over the k×k window of in[c, ·, ·]",
    text: "Each channel is pooled on its own: the output keeps the largest value of each window, so the map shrinks " +
      "by the stride and small shifts of a feature do not change it. Padding cells never win (they count as −∞). " +
      "Look at which cell of a window was picked: it is the strongest response nearby.",
  },
  AvgPool2d: {
    title: "Average pooling",
    formula: "out[c, y, x] = (Σ window cells) / (number of cells counted)",
    text: "Each channel is pooled on its own by the mean of each window. With TF SAME padding only the real cells " +
      "are counted, so border windows divide by fewer cells; torch's explicit padding counts the padding zeros too.",
  },
  BatchNorm2d: {
    title: "Batch normalisation",
    formula: "y = (x − mean) / √(var + ε) · γ + β",
    text: "At test time each channel is shifted and scaled with the statistics gathered during training (population " +
      "mean and variance) and two learned numbers γ and β. It keeps the next layer's inputs in a steady range; the " +
      "pre-activation toggle shows the map before it.",
  },
  ReLU: {
    title: "ReLU",
    formula: "y = max(0, x)",
    text: "Negative values become 0, positive ones pass unchanged. Dark areas of a post-activation map are where " +
      "the filter's response was negative; compare with the pre-activation maps.",
  },
  Flatten: {
    title: "Flatten",
    formula: "v[c·H·W + y·W + x] = in[c, y, x]",
    text: "No arithmetic: the C×H×W maps are laid out as one long vector, channel after channel, row after row, " +
      "so that a dense layer can weigh every value. The dense view names the map cell each value came from.",
  },
  Dropout: {
    title: "Dropout",
    formula: "test time: y = x",
    text: "During training it zeroes random values (and scales the rest up); when exploring a trained network it " +
      "does nothing, so its output equals its input.",
  },
  Linear: {
    title: "Dense (fully connected)",
    formula: "out[o] = bias[o] + Σ_j w[o, j] · in[j]",
    text: "Every output is a weighted sum of every input. In the last layer the outputs are the logits, one per " +
      "class; the softmax view turns them into probabilities. Click an output in the softmax view to see which " +
      "inputs pushed it up or down the most.",
  },
  Fuse: {
    title: "Merge of branches",
    formula: "residual: y = branch(x) + shortcut(x); inception: y = concat(branch outputs, channels)",
    text: "The branches of a block see the same input and are merged here: a residual block adds its two paths " +
      "(the shortcut lets the block learn a correction), an Inception block stacks the branches' maps as channels.",
  },
  LocalResponseNorm: {
    title: "Local response normalisation",
    formula: "y = x / (k + α/n · Σ_{nearby channels} x²)^β",
    text: "Each value is divided by the energy of the same position in neighbouring channels, so strong responses " +
      "damp their neighbours (AlexNet, GoogLeNet).",
  },
  Identity: {
    title: "Identity shortcut",
    formula: "y = x",
    text: "The residual block's input passed through unchanged, to be added to the branch's output.",
  },
  AdaptiveAvgPool2d: {
    title: "Global average pooling",
    formula: "out[c] = mean of in[c, ·, ·]",
    text: "Each map becomes one number, its mean, whatever the map's size.",
  },
};
GUIDES.GlobalAvgPool2d = GUIDES.AdaptiveAvgPool2d;

export const SOFTMAX_GUIDE = {
  title: "Softmax",
  formula: "p_i = exp(z_i / T) / Σ_j exp(z_j / T)",
  text: "The logits z (the last dense layer's outputs) become probabilities that add up to 1. Only differences " +
    "between logits matter. The temperature T divides every logit: T > 1 flattens the distribution, T < 1 " +
    "sharpens it; the network itself uses T = 1.",
};

export function guide(type) {
  return GUIDES[type] || {title: type, formula: "", text: "A layer cnnkit has no guidance for yet."};
}

// A <details> box with the guidance for each layer type of a unit.
export function guideBox(types, open = false) {
  const box = document.createElement("details");
  box.className = "guide";
  box.open = open;
  const summary = document.createElement("summary");
  summary.textContent = "what this computes";
  box.append(summary);
  for (const type of [...new Set(types)]) {
    const g = guide(type);
    const part = document.createElement("div");
    const head = document.createElement("strong");
    head.textContent = g.title;
    const formula = document.createElement("code");
    formula.textContent = g.formula;
    const text = document.createElement("p");
    text.textContent = g.text;
    part.append(head, " ", formula, text);
    box.append(part);
  }
  return box;
}
