"""The model zoo: the article's networks, built from cnnkit.layers and looked up by name.

Each family registers its models with the registry, which imports the families on its first lookup. Names are
imported on first use (PEP 562), so `cnnkit.models.catalog` (the `cnnkit models` table) imports without torch.
"""

from importlib import import_module

_HOMES = {
    "ModelInfo": "registry", "check_options": "registry", "get_model": "registry", "list_models": "registry",
    "model_info": "registry", "register_model": "registry", "resolved_options": "registry",
    "TrainingOutputs": "base", "auxiliary_logits": "base", "main_logits": "base",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(import_module(f"cnnkit.models.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'cnnkit.models' has no attribute {name!r}")
