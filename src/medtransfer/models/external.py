"""Any timm or torchvision classification architecture by name: ``timm:<arch>`` (a tag too, e.g.
``timm:resnet18.a1_in1k``), a model folder (``timm:local-dir:PATH``, ``timm:hf-hub:ORG/NAME``;
:mod:`medtransfer.models.folders`) and ``torchvision:<name>``, with our head API.

timm models carry the API as they are (``forward_features``, ``forward_head``,
``reset_classifier``; ``pretrained_cfg['first_conv']`` names the input conv). A torchvision model
gets it from :class:`TorchvisionHead`, mixed into its own class so its parameter names stay
torchvision's (its ImageNet weights and ``file:`` state dicts load as they are): the output layer
is its last ``nn.Linear``, ``forward_features`` is everything before it (the pre-logits), and a
grey model's first conv is rebuilt for ``in_chans`` inputs.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import timm
import torch
import torchvision.models as tvm
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models.folders import folder_model, is_folder_arch, timm_name

__all__ = ["LIBRARIES", "TorchvisionHead", "build_external", "external_names", "set_module", "split_name"]

LIBRARIES = ("timm", "torchvision")


def split_name(name: str) -> tuple[str, str] | None:
    """``("timm", "resnet18")`` for ``timm:resnet18`` (``("timm", "hf-hub:ORG/NAME")`` for
    ``hf-hub:ORG/NAME`` and ``local-dir:PATH`` too); None for a registered (unprefixed) name."""
    if is_folder_arch(name):
        return "timm", name
    lib, sep, arch = name.partition(":")
    if not sep:
        return None
    if lib not in LIBRARIES:
        raise ConfigError(f"'model.name': got {name!r}; a prefixed name is timm:<architecture>, "
                          "timm:local-dir:PATH, timm:hf-hub:ORG/NAME or torchvision:<architecture>, "
                          "or give a registered name (medtransfer models)")
    if not arch:
        raise ConfigError(f"'model.name': got {name!r}; name the architecture after '{lib}:'")
    return lib, arch


@functools.cache
def external_names(lib: str) -> tuple[str, ...]:
    """Every architecture ``lib`` can build (timm: ``timm.list_models()``)."""
    if lib == "timm":
        return tuple(timm.list_models())
    return tuple(sorted(tvm.list_models(module=tvm)))


def check_arch(lib: str, arch: str) -> None:
    """ConfigError naming the closest architectures when ``lib`` has no ``arch`` (a model
    folder: when it is missing, or its config.json names an architecture timm lacks)."""
    if lib == "timm" and is_folder_arch(arch):
        found = folder_model(arch)
        if found.architecture not in external_names("timm"):
            raise ConfigError(f"'model.name': {arch}: its config.json names architecture "
                              f"{found.architecture!r}, which timm {timm.__version__} does not have")
        return
    base = arch.split(".", 1)[0] if lib == "timm" else arch
    names = external_names(lib)
    if base in names:
        if lib == "timm" and base != arch and arch not in timm.list_pretrained(f"{base}.*"):
            tags = ", ".join(timm.list_pretrained(f"{base}.*")) or "none"
            raise ConfigError(f"'model.name': timm has no pretrained tag {arch!r}; tags of {base}: {tags}")
        return
    close = (difflib.get_close_matches(base, names, n=5, cutoff=0.6)
             or difflib.get_close_matches(base, names, n=5, cutoff=0.3))
    hint = f"; closest: {', '.join(f'{lib}:{n}' for n in close)}" if close else ""
    lister = "timm.list_models()" if lib == "timm" else "torchvision.models.list_models()"
    raise ConfigError(f"'model.name': {lib} has no architecture {base!r}{hint} ({len(names)} "
                      f"architectures; {lister} lists them)")


def _maker(lib: str, arch: str, **kwargs: Any) -> Callable[[], nn.Module]:
    if lib == "timm":
        return functools.partial(timm.create_model, timm_name(arch), pretrained=False, **kwargs)
    return functools.partial(tvm.get_model, arch, weights=None, **kwargs)


@functools.cache
def init_params(lib: str, arch: str) -> frozenset[str] | None:
    """The keyword arguments the architecture's class takes (None: it takes any); found by
    building it on the meta device (no memory, no weights)."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. torchvision's notes on default initialisation
        try:
            with torch.device("meta"):
                model = _maker(lib, arch)()
        except NotImplementedError:  # an initialiser that reads values back: build it for real
            model = _maker(lib, arch)()
    params = inspect.signature(type(model).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(p for p in params if p != "self")


def build_kwargs(lib: str, arch: str, img_size: int, dense_dropout: float,
                 options: dict[str, Any]) -> dict[str, Any]:
    """The library's keyword arguments for our options: ``dense_dropout`` → ``drop_rate`` (timm)
    or ``dropout`` (torchvision); the image size to models built for one (ViT, Swin)."""
    takes = init_params(lib, arch)
    kwargs = dict(options)
    for ours in ("num_classes", "in_chans", "pretrained", "weights"):
        if ours in kwargs:
            raise ConfigError(f"'model.options.{ours}': set by medtransfer (from the data and "
                              "model.weights); remove it")
    if takes is not None:
        unknown = sorted(set(kwargs) - takes)
        if unknown:
            raise ConfigError(f"model '{lib}:{arch}' does not take option(s) {', '.join(unknown)}; "
                              f"it takes: {', '.join(sorted(takes - {'num_classes', 'in_chans'}))}")
    drop = "drop_rate" if lib == "timm" else "dropout"
    if dense_dropout:
        if takes is not None and drop not in takes:
            raise ConfigError(f"'model.dense_dropout': model '{lib}:{arch}' has no {drop} option")
        kwargs[drop] = dense_dropout
    size_key = "img_size" if lib == "timm" else "image_size"
    if takes is not None and size_key in takes:
        kwargs.setdefault(size_key, img_size)
    if lib == "torchvision" and takes is not None:
        if "aux_logits" in takes:
            kwargs.setdefault("aux_logits", False)  # training returns logits only
        if "init_weights" in takes:
            kwargs.setdefault("init_weights", True)
    return kwargs


def build_external(name: str, *, num_classes: int, in_chans: int, img_size: int,
                   dense_dropout: float = 0.0, **options: Any) -> nn.Module:
    """Build ``timm:<arch>`` or ``torchvision:<arch>`` randomly initialised, with the head API."""
    split = split_name(name)
    if split is None:
        raise ConfigError(f"'model.name': {name!r} is not a timm: or torchvision: name")
    lib, arch = split
    check_arch(lib, arch)
    kwargs = build_kwargs(lib, arch, img_size, dense_dropout, options)
    try:
        if lib == "timm":
            model = timm.create_model(timm_name(arch), pretrained=False, num_classes=num_classes,
                                      in_chans=in_chans, **kwargs)
        else:
            model = adapt_torchvision(tvm.get_model(arch, weights=None, num_classes=num_classes,
                                                    **kwargs), num_classes, in_chans)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ConfigError(f"model '{name}' with options {kwargs}: {type(exc).__name__}: {exc}") from exc
    model.external_name = name  # type: ignore[assignment]
    model.external_kwargs = kwargs  # type: ignore[assignment]
    return model


# -- torchvision -----------------------------------------------------------------------------


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


class TorchvisionHead(nn.Module):
    """Head API for a torchvision classifier whose output layer is the ``nn.Linear`` named
    ``head_name`` (mixed in ahead of the model's own class; ``forward`` stays torchvision's)."""

    head_name: str
    first_conv: str
    num_features: int

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.head_name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The model's forward with its output layer bypassed: the output layer's input."""
        head = self.get_submodule(self.head_name)
        set_module(self, self.head_name, nn.Identity())
        try:
            out: torch.Tensor = super().forward(x)
        finally:
            set_module(self, self.head_name, head)
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.get_classifier()(x)

    def reset_classifier(self, num_classes: int) -> None:
        set_module(self, self.head_name, nn.Linear(self.num_features, num_classes))


_ADAPTED: dict[type, type] = {}


def _adapted_class(cls: type) -> type:
    """``cls`` with :class:`TorchvisionHead` mixed in; named in this module so it pickles."""
    if cls not in _ADAPTED:
        name = f"Torchvision{cls.__name__}"
        new = type(name, (TorchvisionHead, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = new
        _ADAPTED[cls] = new
    return _ADAPTED[cls]


def adapt_torchvision(model: nn.Module, num_classes: int, in_chans: int) -> nn.Module:
    """Give a torchvision classifier the head API and a first conv taking ``in_chans`` channels."""
    linears = [(n, m) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and m.out_features == num_classes]
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not linears or not convs:
        raise ConfigError(f"{type(model).__name__}: medtransfer needs a Conv2d input layer and an "
                          "nn.Linear output layer (e.g. squeezenet's conv output is not supported)")
    conv_name, conv = convs[0]
    if conv.in_channels != in_chans:
        new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
                        conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                        conv.groups, conv.bias is not None, conv.padding_mode)
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
        set_module(model, conv_name, new)
    head_name, head = linears[-1]
    model.__class__ = _adapted_class(type(model))
    model.head_name = head_name
    model.first_conv = conv_name
    model.num_features = head.in_features  # type: ignore[assignment]
    return model
