"""Write docs/explore.ipynb (the article's network, trained and explored in a notebook) and execute it with nbclient,
so the committed notebook holds real outputs.

    PYTHONPATH=src python docs/make_notebook.py            # writes and executes docs/explore.ipynb

The notebook runs in a temporary folder, so its run directory does not land in the repository.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "explore.ipynb"
SRC = HERE.parent / "src"
RUN = "runs/digitsnet"

CELLS = [
    ("md", """# The article's network, trained and explored in a notebook

The article (section 5) classifies scikit-learn's 8x8 digits with a small CNN, cnnkit's `digitsnet`:

| layer | what | output (H x W x maps) |
|---|---|---|
| conv1 | 3x3, 10 kernels, stride 1, SAME, ReLU | 8 x 8 x 10 |
| conv2 | 3x3, 5 kernels, stride 2, SAME, batch norm, ReLU | 4 x 4 x 5 |
| pool2 | max 3x3, stride 2, SAME | 2 x 2 x 5 |
| fc1, out | flatten 20 -> 50 (ReLU) -> 10 classes, softmax | 10 |

This notebook trains it for a few seconds, checks it on the held-out test split, and opens the explore page
inline (`cnnkit.show`). See [explore.md](explore.md) for what the page shows."""),
    ("md", "## Train briefly\n\n`cnnkit.fit` is `cnnkit train`: the model's own recipe, here cut to 20 epochs "
           "(about a second on a CPU). The run directory keeps the checkpoints for `cnnkit.load` and the page."),
    ("code", f"""import cnnkit

result = cnnkit.fit(model="digitsnet", epochs=20, seed=0, out="{RUN}", overwrite=True, verbose=False)
print(f"held-out test accuracy: {{result.test_accuracy:.4f}}")
print(f"best epoch {{result.best_epoch}} of {{result.epochs_run}}, {{result.seconds:.1f}} s of training")"""),
    ("md", "## Load the run: its layers\n\nOne row per layer: output shape (maps x H x W), parameters with the "
           "article's formula, multiply-adds and the receptive field on the input."),
    ("code", """run = cnnkit.load(result.run_dir)
print(run.summary().table())"""),
    ("md", "## A prediction\n\nThe last image of the digits set, in the data's stored scale (0..16), as a "
           "(1, 8, 8) tensor."),
    ("code", """import torch
from sklearn.datasets import load_digits

digits = load_digits()
image = torch.tensor(digits.images[-1], dtype=torch.float32)[None]
answer = run.predict(image)[0]
print(f"true class {digits.target[-1]}, predicted {answer['class']} ({answer['probability']:.1%})")
print("top 3:", [(t["class"], round(t["probability"], 3)) for t in answer["top"]])"""),
    ("md", """## The arithmetic of a layer's output size

TensorFlow's SAME padding gives `out = ceil(in / stride)` whatever the kernel; VALID gives
`ceil((in - k + 1) / stride)`. conv2 slides a 3x3 kernel with stride 2 over conv1's 8x8 maps, so its maps are
ceil(8 / 2) = 4 a side; pool2 (3x3, stride 2, SAME) halves that again to 2, and flattening 5 maps of 2x2 gives the
20 inputs of fc1. The summary's rows agree."""),
    ("code", """import math

from cnnkit.core.arithmetic import output_size

rows = {row.name: row for row in run.summary().rows}
print("conv2: ceil(8 / 2) =", math.ceil(8 / 2), "| output_size(8, 3, 2, 'same') =", output_size(8, 3, 2, "same"),
      "| summary:", rows["features.conv2"].output_shape)
print("pool2: ceil(4 / 2) =", math.ceil(4 / 2), "| output_size(4, 3, 2, 'same') =", output_size(4, 3, 2, "same"),
      "| summary:", rows["features.pool2"].output_shape)
print("VALID instead: ceil((8 - 3 + 1) / 2) =", math.ceil((8 - 3 + 1) / 2), "=", output_size(8, 3, 2, "valid"))
print("flatten: 5 * 2 * 2 =", 5 * 2 * 2, "| summary:", rows["head.flatten"].output_shape)"""),
    ("md", """## The explore page, inline

`cnnkit.show` serves the page from this kernel on 127.0.0.1 (a free port) and Jupyter shows it in an iframe:
draw a digit, watch every layer's maps, click a cell of conv2 for its arithmetic with the real numbers, animate
the kernel sliding over the input. Running the cell again reuses the same server; `view.url` opens it in a
browser tab and `view.stop()` stops it. (A saved notebook shows the frame only while its kernel runs.)"""),
    ("code", """view = cnnkit.show(run, height=900)
view"""),
    ("md", "The page is live: its API answers from this kernel, with the model it explores."),
    ("code", """import json
import urllib.request

with urllib.request.urlopen(view.url + "api/model") as response:
    described = json.load(response)
print("title:", described["title"])
print("model:", described["model"], "| input:", described["input_shape"], "| classes:", len(described["classes"]))
print("units:", [unit["id"] for unit in described["units"]])"""),
]


def build() -> nbformat.NotebookNode:
    """The notebook, unexecuted."""
    cells = [new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in CELLS]
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})


def execute(notebook: nbformat.NotebookNode, folder: Path, timeout: int = 120) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel whose working folder is `folder`, with this checkout's src importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env=env)
    return notebook


def main() -> int:
    notebook = build()
    with tempfile.TemporaryDirectory() as folder:
        execute(notebook, Path(folder))
    nbformat.write(notebook, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
