"""The model zoo: the article's networks, built from cnnkit.layers and looked up by name.

Importing this package imports every model family, and each family registers its models with the registry
(which itself imports no family), as torchvision's `models/__init__.py` does.
"""

from cnnkit.models import alexnet, digits, googlenet, lenet, resnet, vgg  # noqa: F401  (registers the models)
from cnnkit.models.base import TrainingOutputs, auxiliary_logits, main_logits
from cnnkit.models.registry import (
    ModelInfo,
    check_options,
    get_model,
    list_models,
    model_info,
    register_model,
    resolved_options,
)

__all__ = ["ModelInfo", "TrainingOutputs", "auxiliary_logits", "check_options", "get_model", "list_models",
           "main_logits", "model_info", "register_model", "resolved_options"]
