// What the views share: the model described by the server and the current image. Each view keeps its own state.

export const state = {
  model: null,
  activation: "post",
  image: null,            // {pixels: [...]} (display values 0..255, C*H*W) or {heldout: index}
  pixels: null,           // display pixels of the current image, for drawing it
  heldoutBrightness: null,  // {border, mean} of the held-out images (0..255), once the strip is loaded
  blank: false,           // every pixel of the current image is the same: nothing drawn
  version: 0,             // bumped on every new image or display mode
  listeners: [],          // called with the version whenever the image or mode changes
};

export function unitById(id) {
  return state.model.units.find((u) => u.id === id);
}

export function onImage(listener) {
  state.listeners.push(listener);
}

export function changed() {
  state.version += 1;
  document.body.dataset.settled = "0";
  for (const listener of state.listeners) listener(state.version);
}
