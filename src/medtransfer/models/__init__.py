"""Architectures, the registry that builds them by name, and their pretrained weights."""

from medtransfer.models import alexnet as _alexnet  # noqa: F401  (registers builders)
from medtransfer.models import densenet as _densenet  # noqa: F401
from medtransfer.models import efficientnet as _efficientnet  # noqa: F401
from medtransfer.models import inception as _inception  # noqa: F401
from medtransfer.models import mobilenet as _mobilenet  # noqa: F401
from medtransfer.models import resnet as _resnet  # noqa: F401
from medtransfer.models import transformers as _transformers  # noqa: F401
from medtransfer.models import vgg as _vgg  # noqa: F401
from medtransfer.models.adapt import InChansPolicy, first_conv_name
from medtransfer.models.chain import Step, forward_chain, register_chain
from medtransfer.models.check import check_model, check_weights_spec
from medtransfer.models.config import MODEL_ALIASES, ModelConfig
from medtransfer.models.factory import create_model
from medtransfer.models.head import HeadConfig
from medtransfer.models.pretrained import BuiltModel, build_pretrained, open_weights
from medtransfer.models.registry import (
    ModelInfo,
    build_model,
    import_modules,
    list_models,
    model_info,
    register_model,
)
from medtransfer.models.weights import (
    PretrainedWeights,
    WeightsError,
    get_imagenet_weights,
    imagenet_weights,
)

__all__ = [
    "MODEL_ALIASES",
    "BuiltModel",
    "HeadConfig",
    "InChansPolicy",
    "ModelConfig",
    "ModelInfo",
    "PretrainedWeights",
    "Step",
    "WeightsError",
    "build_model",
    "build_pretrained",
    "check_model",
    "check_weights_spec",
    "create_model",
    "first_conv_name",
    "forward_chain",
    "get_imagenet_weights",
    "imagenet_weights",
    "import_modules",
    "list_models",
    "model_info",
    "open_weights",
    "register_chain",
    "register_model",
]
