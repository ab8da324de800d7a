"""cnnkit: convolutional neural networks from the article's theory to trained models, on PyTorch.

The Python API (each name is imported on first use, PEP 562, so `import cnnkit` and `cnnkit --help` stay free
of torch and pydantic)::

    import cnnkit
    cnnkit.list_models()                                    # registered model names
    net = cnnkit.get_model("resnet18", num_classes=10)      # a plain torch nn.Module, fresh weights
    result = cnnkit.fit(model="digits_cnn", epochs=5, out="runs/d")   # as `cnnkit train`; any TrainConfig field
    result.test_accuracy, result.run_dir, result.best_epoch
    run = cnnkit.load("runs/d")                             # a run directory or checkpoint file
    run.predict(["digit.png"], top_k=3); run.evaluate(); run.summary(); run.model
    cnnkit.show(run)                                        # the explore page inline in Jupyter (an iframe)

Training is `cnnkit.fit` (not `cnnkit.train`, which is the trainer's subpackage). Bad input raises
`cnnkit.CnnkitError` with one line naming the value and what was expected.
"""

from importlib import import_module

from cnnkit.core.errors import CnnkitError
from cnnkit.core.version import __version__

_HOMES = {"list_models": "cnnkit.api", "get_model": "cnnkit.api", "fit": "cnnkit.api", "load": "cnnkit.api",
          "FitResult": "cnnkit.api", "TrainedModel": "cnnkit.api", "TrainConfig": "cnnkit.train.config",
          "show": "cnnkit.explore.notebook"}
__all__ = ["CnnkitError", "FitResult", "TrainConfig", "TrainedModel", "__version__", "fit", "get_model", "list_models",
           "load", "show"]


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
