"""cnnkit: convolutional neural networks from the article's theory to trained models, on PyTorch."""

from cnnkit.core.errors import CnnkitError
from cnnkit.core.version import __version__

__all__ = ["CnnkitError", "__version__"]
