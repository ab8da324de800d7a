"""The model zoo: the article's networks, built from cnnkit.layers and looked up by name."""

from cnnkit.models.registry import ModelInfo, get_model, list_models, model_info, register_model, resolved_options

__all__ = ["ModelInfo", "get_model", "list_models", "model_info", "register_model", "resolved_options"]
