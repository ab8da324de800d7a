"""cnnkit: convolutional neural networks from the article's theory to trained models, on PyTorch."""

from importlib.metadata import PackageNotFoundError, version

from cnnkit.errors import CnnkitError

try:
    __version__ = version("cnnkit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["CnnkitError", "__version__"]
