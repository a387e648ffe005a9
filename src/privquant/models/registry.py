"""Models by name: one registry from which config validation and CLI choices are built.

A registered builder takes ``(input_shape, num_classes, **options)`` and returns the network;
:func:`build_model` always prepends a :class:`Normalize` layer and records a spec, so a
checkpoint can rebuild the exact architecture from JSON alone.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from privquant.artifacts.cache import source_digest
from privquant.errors import ConfigError
from privquant.models.cnn import small_cnn
from privquant.models.info import model_info
from privquant.models.layers import Normalize, batchnorm_to_groupnorm
from privquant.models.mlp import mlp
from privquant.models.resnet import resnet18, resnet20

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    build: Builder  # (input_shape: list[int], num_classes: int, **options) -> nn.Module
    images_only: bool
    description: str
    # False for a user's own nn.Module (audit_model, defend): it takes inputs as they come, so
    # its Normalize layer stays the identity instead of being fitted on each model's members.
    fit_normalization: bool = True


MODELS: dict[str, RegisteredModel] = {}


def register_model(
    name: str, *, images_only: bool = True, description: str = "", replace: bool = False
) -> Callable[[Builder], Builder]:
    """Register ``builder(input_shape, num_classes, **options)`` under ``name``.

    Registered names are accepted by YAML configs, ``audit_model`` and every CLI ``--model``.
    A name already taken is refused unless ``replace``.
    """
    if name in MODELS and not replace:
        raise ConfigError(f"model {name!r} is already registered; pass replace=True to override it")

    def wrap(builder: Builder) -> Builder:
        MODELS[name] = RegisteredModel(name, builder, images_only, description)
        return builder

    return wrap


def model_names() -> list[str]:
    return list(MODELS)


def register_user_model(model_fn: Callable[[], nn.Module]) -> str:
    """Register ``model_fn`` (no arguments: a fresh, untrained ``nn.Module``) for this process,
    under a name derived from the architecture it builds; returns the name.

    This is how ``audit_model`` and ``defend`` run a user's own module through the pipeline:
    every model of the audit is ``Normalize(identity)`` followed by ``model_fn()``.
    """
    probe = model_fn()
    if not isinstance(probe, nn.Module):
        raise ConfigError(f"model_fn: must return a torch nn.Module, got {type(probe).__name__}")
    layout = repr(probe) + repr([(k, tuple(v.shape)) for k, v in probe.state_dict().items()])
    name = f"user.{type(probe).__name__}.{hashlib.sha256(layout.encode()).hexdigest()[:12]}"
    builder = lambda shape, num_classes, **options: model_fn()  # noqa: E731
    builder.__module__ = "privquant.models.user"  # its weights come from the user, not a file
    MODELS[name] = RegisteredModel(name, builder, False, "a user's nn.Module", False)
    return name


def fits_normalization(name: str) -> bool:
    return MODELS[check_model_name(name)].fit_normalization


def model_code(name: str) -> str | None:
    """sha256 of the source file defining a model registered outside privquant, else None.

    privquant's own models are covered by the cache's code version; a user model (a config
    plugin) is not, so an edit to its file must change the trained-model cache key.
    """
    builder = MODELS[check_model_name(name)].build
    module = sys.modules.get(builder.__module__)
    if builder.__module__.startswith("privquant.") or module is None:
        return None
    try:
        return source_digest(inspect.getsource(module))
    except (OSError, TypeError):  # defined interactively: key on the builder's bytecode instead
        return hashlib.sha256(repr(builder.__code__.co_code).encode()).hexdigest()


def check_model_name(name: str) -> str:
    if name not in MODELS:
        raise ConfigError(f"model: unknown name {name!r}; choose one of {model_names()}")
    return name


def _flat_features(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@register_model(
    "mlp", images_only=False, description="multi-layer perceptron (tables or flattened images)"
)
def _mlp(shape: list[int], num_classes: int, **options: Any) -> nn.Module:
    net = mlp(_flat_features(shape), num_classes, **options)
    return nn.Sequential(nn.Flatten(), net) if len(shape) == 3 else net


@register_model(
    "small_cnn", description="two conv-pool blocks + 128-unit layer (Shokri / ML-Leaks)"
)
def _small_cnn(shape: list[int], num_classes: int, **options: Any) -> nn.Module:
    c, h, w = shape
    if h != w or h % 4:
        raise ConfigError(
            f"model: small_cnn needs square inputs with side divisible by 4, got {h}x{w}"
        )
    return small_cnn(c, num_classes, image_size=h, **options)


@register_model("resnet20", description="ResNet-20 for 32x32 inputs (0.27M parameters)")
def _resnet20(shape: list[int], num_classes: int, **options: Any) -> nn.Module:
    return resnet20(shape[0], num_classes, **options)


@register_model("resnet18", description="ResNet-18 adapted to 32x32 inputs (11M parameters)")
def _resnet18(shape: list[int], num_classes: int, **options: Any) -> nn.Module:
    return resnet18(shape[0], num_classes, **options)


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options: Any,
) -> nn.Sequential:
    """A model for inputs of ``input_shape`` ([C, H, W] images or [F] features).

    ``mean``/``std`` (per channel or per feature) are folded into a leading :class:`Normalize`
    layer; defaults are 0 and 1. ``options`` go to the network constructor (e.g. ``hidden`` for
    the MLP, ``width`` for the small CNN); unknown options are an error naming the model.
    """
    shape = [int(d) for d in input_shape]
    image = len(shape) == 3
    entry = MODELS[check_model_name(name)]
    if entry.images_only and not image:
        raise ConfigError(
            f"model: {name} needs image input [C, H, W], got shape {shape}; use 'mlp'"
        )
    try:
        net = entry.build(shape, int(num_classes), **options)
    except TypeError as e:  # an option the builder does not take
        raise ConfigError(f"model.options: {name} rejected {sorted(options)} ({e})") from e
    except (ValueError, RuntimeError) as e:  # a value it cannot build with (e.g. a negative width)
        raise ConfigError(f"model.options: {name} cannot be built with {options} ({e})") from e
    n_norm = shape[0]  # channels for images, features for tables
    mean = list(mean) if mean is not None else [0.0] * n_norm
    std = list(std) if std is not None else [1.0] * n_norm
    model = nn.Sequential(Normalize(mean, std, image=image), net)
    model_info(model).spec = {
        "name": name,
        "kwargs": {
            "input_shape": shape,
            "num_classes": int(num_classes),
            "mean": mean,
            "std": std,
            **options,
        },
    }
    return model


def model_from_spec(spec: dict[str, Any]) -> nn.Sequential:
    """Rebuild the (untrained) model a checkpoint's spec describes, conversions included."""
    model = build_model(spec["name"], **spec.get("kwargs", {}))
    if spec.get("norm") == "group":
        batchnorm_to_groupnorm(model)
        model_info(model).spec = spec
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
