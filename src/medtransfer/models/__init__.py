"""Architectures and the registry that builds them by name."""

from medtransfer.models import alexnet as _alexnet  # noqa: F401  (registers builders)
from medtransfer.models.registry import (
    ModelConfig,
    build_model,
    create_model,
    list_models,
    register_model,
)

__all__ = ["ModelConfig", "build_model", "create_model", "list_models", "register_model"]
