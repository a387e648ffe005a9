"""What a defense is: a config class with a ``method`` name, a stage, and a registered handler.

Three stages, applied in this order within one variant:

- ``train``: changes how every model of the population is trained (target and every shadow,
  the same recipe). Handler: ``(config, ctx) -> trained model``.
- ``transform``: turns a trained model into the deployed one (PTQ, QAT, ...).
  Handler: ``(config, model, ctx) -> model``.
- ``output``: wraps the deployed model's outputs before anyone queries it.
  Handler: ``(config, model, ctx) -> model``.

Registering is all it takes for a method to be usable from YAML, the CLI and ``audit_model``.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from torch import nn

from privquant.artifacts.cache import source_digest
from privquant.errors import ConfigError
from privquant.training import TrainConfig, Trainer, seed_everything

Stage = Literal["train", "transform", "output"]
REFERENCE_ORDER_SEED = 0


def reference_order(n: int) -> np.ndarray:
    """Positions 0..n-1 of the defender's reference rows in the one fixed shuffled order every
    method (and the tuner's validation split) takes prefixes of."""
    return np.random.default_rng(REFERENCE_ORDER_SEED).permutation(n)


STAGE_ORDER: dict[str, int] = {"train": 0, "transform": 1, "output": 2}


class DefenseConfig(BaseModel):
    """Base of every defense method's config; subclasses set ``method: Literal["name"]``."""

    model_config = ConfigDict(extra="forbid")

    # A train-stage method that trains in one precision whatever the recipe resolved to sets this
    # (DP-SGD: per-example gradients in fp32, NCHW). Its models are keyed with it, not with what
    # ``auto`` chose on this host, so a model trained on one host is found on every other (a study
    # spread over sessions on different hosts); a pin on it would mean nothing.
    fixed_precision: ClassVar[dict[str, Any] | None] = None

    method: str

    def check(self) -> None:
        """Rules across this step's fields (raise ValueError); run with the config, before work."""

    def reference_rows_needed(self) -> int:
        """Defender reference rows this step reads (0: none); checked against data.reference_size
        before any model trains."""
        return 0


@dataclass
class DefenseContext:
    """What a handler may use for one model: its own members and the defender's reference rows.

    Every model of an audit (target and each shadow) gets a context built the same way from its
    own members, so the adaptive attacker runs the same defense on its own data. The reference
    rows are disjoint from the pool and never used by any attack.
    """

    x: np.ndarray  # the model's members (uint8 images or float features)
    y: np.ndarray
    x_reference: np.ndarray | None
    y_reference: np.ndarray | None
    num_classes: int
    train: TrainConfig  # the population's recipe; ``train.seed`` is this model's seed
    seed: int  # this model's seed for transforms (calibration sampling, fine-tuning)
    model_fn: Callable[[np.ndarray], nn.Module]  # a fresh, untrained model for inputs like x
    cache: Any = None  # an ArtifactCache for handlers that build expensive intermediates
    # What else determines a model trained here (dataset checksum, architecture, options):
    # handlers key cached intermediates on it; None (e.g. a user's own model) disables caching.
    identity: dict[str, Any] | None = None
    # Training seconds of cached intermediates this model reused, as recorded when they were
    # built (nan: an entry that did not record it): with the wall clock of the model's own
    # training, what its recipe costs from an empty cache (``privquant tune`` reports it).
    reused_seconds: float = 0.0

    def reference_order(self) -> np.ndarray:
        """Positions of the reference rows in one fixed shuffled order.

        Methods that use part of the reference rows take a prefix of this order, never the first
        rows of the array: dataset files may be sorted by class (this CIFAR-10 copy is), so the
        first rows can be a few classes. The order is the same for every model and method, so a
        control and a defense asking for the same number of rows get the same rows.
        """
        return reference_order(0 if self.x_reference is None else len(self.x_reference))

    def reference_positions(self, n: int | None, field: str) -> np.ndarray:
        """Positions (sorted) of ``n`` reference rows (None: all), a class-unbiased subset;
        errors name the config ``field`` that asked."""
        have = 0 if self.x_reference is None else len(self.x_reference)
        if have == 0 or (n is not None and n > have):
            raise ConfigError(
                f"{field}: {'all' if n is None else n} defender reference rows asked, {have} "
                "available (data.reference_size)"
            )
        if n is None or n == have:
            return np.arange(have)
        return np.sort(self.reference_order()[:n])

    def reference_rows(self, n: int | None, field: str) -> tuple[np.ndarray, np.ndarray]:
        """The rows at :meth:`reference_positions` (x, y)."""
        pick = self.reference_positions(n, field)
        assert self.x_reference is not None and self.y_reference is not None
        return self.x_reference[pick], self.y_reference[pick]

    def fresh_model(self, x: np.ndarray | None = None, seed: int | None = None) -> nn.Module:
        """A new untrained model (seeded, normalization fitted on ``x``; default the members)."""
        seed_everything(self.train.seed if seed is None else seed)
        return self.model_fn(self.x if x is None else x)

    def train_fresh(
        self,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        train: TrainConfig | None = None,
        **trainer_kwargs: Any,
    ) -> nn.Module:
        """Train a fresh model with the one trainer (default: the members and the recipe)."""
        train = train or self.train
        x = self.x if x is None else x
        y = self.y if y is None else y
        model = self.fresh_model(x, seed=train.seed)
        Trainer(train, **trainer_kwargs).fit(model, x, y, progress=False)
        return model


@dataclass(frozen=True)
class RegisteredDefense:
    method: str
    config: type[DefenseConfig]
    stage: Stage
    handler: Callable[..., nn.Module]
    code: str  # hash of the handler's source module: edits invalidate cached models

    @property
    def description(self) -> str:
        return (self.config.__doc__ or "").strip().split("\n")[0]


DEFENSES: dict[str, RegisteredDefense] = {}


def _own_source(obj: Any) -> str | None:
    """The source of ``obj``'s module, or None when no file on disk describes ``obj``.

    ``inspect.getsource`` trusts a code object's file name and line numbers: for code defined in
    an interactive session it fails, and for code exec'd under another file's name (a README
    block, a notebook cell) it returns whatever that file holds at those lines, prose included.
    So the lines it finds must parse and define ``obj`` by name before they count as its source."""
    try:
        own = inspect.getsource(obj)
        module = inspect.getmodule(obj)
        whole = inspect.getsource(module) if module is not None else own
        tree = ast.parse(textwrap.dedent(own))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return None
    name = getattr(obj, "__name__", None)
    defines = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    if not any(isinstance(n, defines) and n.name == name for n in ast.walk(tree)):
        return None
    return whole


def _const_repr(value: Any) -> bytes:
    # A set literal's order follows string hashing, which differs between processes.
    if isinstance(value, frozenset):
        return repr(sorted(repr(v) for v in value)).encode()
    return repr(value).encode()


def _code_fingerprint(code: CodeType) -> bytes:
    """What a function does, from its bytecode: its operations, names and constants, nested
    functions included, but not its file name or line numbers (moving a cell keeps the key)."""
    consts = [
        _code_fingerprint(c) if isinstance(c, CodeType) else _const_repr(c) for c in code.co_consts
    ]
    return b"\0".join([code.co_code, *consts, repr((code.co_names, code.co_varnames)).encode()])


def _fingerprint(obj: Any) -> str:
    """A stand-in for source that cannot be read: edits to the handler or the config's fields
    still change it, so a cached model is never reused for different code."""
    code = getattr(obj, "__code__", None)
    if isinstance(code, CodeType):
        return hashlib.sha256(_code_fingerprint(code)).hexdigest()
    fields = getattr(obj, "model_fields", None)
    if isinstance(fields, dict):  # a config: its fields' types and defaults (not its schema,
        # which needs every annotation resolved: a cell's may not be)
        described = {n: (repr(f.annotation), repr(f.default)) for n, f in fields.items()}
        return hashlib.sha256(repr(sorted(described.items())).encode()).hexdigest()
    return getattr(obj, "__qualname__", repr(obj))


def _source_hash(fn: Callable[..., Any], config: type) -> str:
    h = hashlib.sha256()
    for obj in (fn, config):
        source = _own_source(obj)
        h.update(
            source_digest(source).encode() if source is not None else _fingerprint(obj).encode()
        )
    return h.hexdigest()[:16]


def register_defense(
    config: type[DefenseConfig], stage: Stage, replace: bool = False
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``handler`` for ``config`` (whose ``method`` field must be a one-value Literal);
    a method name already taken is refused unless ``replace``."""
    if stage not in STAGE_ORDER:
        raise ConfigError(f"stage: {stage!r} is not one of {list(STAGE_ORDER)}")
    field = config.model_fields.get("method")
    method = field.default if field is not None else None
    if not isinstance(method, str) or not method:
        raise ConfigError(f"{config.__name__}: needs a 'method' field with a default name")

    if method in DEFENSES and not replace:
        raise ConfigError(f"defense method {method!r} is already registered "
                          f"({DEFENSES[method].config.__name__}); pass replace=True to override it")  # fmt: skip

    def wrap(handler: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        DEFENSES[method] = RegisteredDefense(
            method, config, stage, handler, _source_hash(handler, config)
        )
        return handler

    return wrap


def get_defense(method: str) -> RegisteredDefense:
    if method not in DEFENSES:
        raise ConfigError(f"method: unknown defense {method!r}; choose one of {sorted(DEFENSES)}")
    return DEFENSES[method]


def defense_names(stage: Stage | None = None) -> list[str]:
    return [m for m, d in DEFENSES.items() if stage is None or d.stage == stage]
