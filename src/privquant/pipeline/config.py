"""The audit configuration: one YAML file, validated before any work starts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from privquant.defenses import VariantConfig, format_location
from privquant.errors import ConfigError
from privquant.membership.canaries import CanaryConfig
from privquant.population.executor import ExecutorConfig
from privquant.training import TrainConfig

# Which cached stage a top-level field shapes. A field without a stage shapes the signals (the
# safe default: a new field invalidates cached signals until someone says it does not).
STAGES = ("signals", "variant", "attacks", "report", "run")


def yaml_problem(e: Exception) -> str:
    """A YAML parser error in one line: where it is (line, column) and what is wrong."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(e).split())
    context = getattr(e, "context", None)
    what = f"{context}, {problem}" if context else problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"


def _stage(name: str) -> dict[str, Any]:
    assert name in STAGES
    return {"json_schema_extra": {"stage": name}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field("fashion-mnist", description="dataset name (see `privquant data info`)")
    pool_size: int = Field(10_000, ge=10, description="population pool; each model trains on ~half")
    reference_size: int = Field(
        5_000, ge=0, description="defender-held rows, disjoint from the pool"
    )
    test_size: int | None = Field(None, ge=1, description="test rows for accuracy (None: all)")
    population_size: int = Field(
        0, ge=0, description="rows no model or defense trains on, queried as RMIA's population z"
    )
    population_source: Literal["train", "test"] = Field(
        "train",
        description="where population rows come from: the train part (disjoint from pool and "
        "reference) or the test part (as Privacy Meter 2 does)",
    )
    rows: Literal["drawn", "ordered"] = Field(
        "drawn",
        description="drawn: pool, reference and population rows drawn at random; ordered: in "
        "the data's own order (the first pool_size training rows are the pool, then the reference "
        "and population rows; the first test_size test rows), for a file laid out by its user",
    )
    canaries: CanaryConfig = Field(
        default_factory=CanaryConfig,
        description="worst-case points planted in the pool, e.g. {count: 250, kind: mislabel}",
    )


class ModelConfig(_Strict):
    name: str = Field(
        "small_cnn", description="a registered model (privquant.models.register_model)"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="builder keyword arguments")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from privquant.models import model_names

        if v not in model_names():
            raise ValueError(f"unknown model {v!r}; choose one of {model_names()}")
        return v


class PopulationConfig(_Strict):
    n_models: int = Field(9, ge=3, description="target + shadow models (any can be the target)")
    balanced: bool = Field(False, description="LiRA's exactly-half keep matrix (see make_split)")
    queries: int = Field(
        2, ge=1, le=18, description="query views: original, flip, shifts of both (LiRA; up to 18)"
    )
    query_shift: int = Field(1, ge=1, le=8, description="pixels per shift of the query views")
    noise_queries: int = Field(
        0,
        ge=0,
        le=256,
        description="label-only boundary attack: noisy copies per point and model (0: off)",
    )
    target_members: int | None = Field(
        None,
        ge=1,
        description="model 0 trains on the first N pool rows and on none of the rest (a model "
        "trained on known rows, as audit_model audits); None: coin flips as for every model",
    )


class AuditConfig(_Strict):
    name: str = Field("audit", min_length=1, max_length=200, **_stage("report"))
    seed: int = Field(0, ge=0, le=2**31 - 1, description="every draw of the audit derives from it")
    plugins: list[str] = Field(
        default_factory=list,
        description="Python files imported before validation (e.g. to register_model a user "
        "model); relative paths: next to the config file, else the working directory",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    variants: list[VariantConfig] = Field(
        default_factory=lambda: [VariantConfig(name="fp32")], **_stage("variant")
    )
    attacks: list[str] | Literal["all"] = Field(
        default_factory=lambda: [
            "loss",
            "shokri",
            "lira_online_fixed_var",
            "lira_offline_fixed_var",
            "rmia",
            "rmia_online",
            "label_only_correctness",
        ],  # fmt: skip
        description="attack names, or 'all' (every attack the signals support)",
        **_stage("attacks"),
    )
    attack_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-attack keyword arguments, e.g. {rmia_online: {temperature: 2}}",
        **_stage("attacks"),
    )
    targets: list[int] | Literal["all"] = Field(
        "all",
        description="models attacked in turn, each with every other model as a reference; "
        "'all' (every model a target, pooled ROC over them) or a list of model indices",
    )
    naive: bool = Field(
        False,
        description="also attack each variant with full-precision shadows",
        **_stage("attacks"),
    )
    bootstrap: int = Field(200, ge=0, **_stage("attacks"))
    cache_dir: str | None = Field(
        None, description="trained-model cache (default: RUN_DIR/cache)", **_stage("run")
    )
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig,
        description="where jobs run: local (default) or ray; never changes a number",
        **_stage("run"),
    )

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        """The YAML file this config was loaded from (None for a dict or a built config)."""
        return self._source

    def identity(self, stage: str) -> dict[str, Any]:
        """The fields that shape one cached stage, as JSON: its cache key's config part.

        Derived from the field declarations, so a new field enters the signals' key unless it
        is declared to shape something else."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        names = set()
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if extra.get("stage", "signals") == stage:
                names.add(name)
        return json.loads(self.model_dump_json(include=names))

    @property
    def target_indices(self) -> list[int]:
        """The attacked models: every model for ``targets: all``."""
        return (
            list(range(self.population.n_models)) if self.targets == "all" else list(self.targets)
        )

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, v: list[str] | str) -> list[str] | str:
        from privquant.attacks import resolve_attack_names

        if v != "all":
            resolve_attack_names(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> AuditConfig:
        if self.plugins and self.executor.kind == "ray":
            raise ValueError("plugins: Ray workers do not import config plugins yet; "
                             "use executor: {kind: local}")  # fmt: skip
        names = [v.name for v in self.variants]
        if "fp32" not in names or self.variants[names.index("fp32")].steps:
            raise ValueError(
                "variants: must include {name: fp32, method: none}, the reference for relative change"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        # Every step's own rules and its reference rows, before any model trains (a step that
        # needs rows the config does not hold used to fail after the whole population trained).
        for variant in self.variants:
            for i, step in enumerate(variant.steps):
                where = f"variants.{variant.name}.steps.{i} ({step.method})"
                need = step.reference_rows_needed()
                if need > self.data.reference_size:
                    raise ConfigError(f"{where}: needs {need} defender reference rows, data.reference_size "
                                      f"is {self.data.reference_size}")  # fmt: skip
        members = self.population.target_members
        if members is not None and members >= self.data.pool_size:
            raise ValueError(f"population.target_members: {members} leaves none of the "
                             f"{self.data.pool_size} pool rows as the target's non-members")  # fmt: skip
        if (
            members is not None
            and self.data.canaries.count
            and self.data.canaries.kind == "duplicate"
        ):
            raise ValueError("population.target_members: duplicate canaries share a membership "
                             "across copies, which a fixed target membership cannot keep")  # fmt: skip
        listed_targets = [] if self.targets == "all" else self.targets
        bad = [t for t in listed_targets if not 0 <= t < self.population.n_models]
        if bad:
            raise ValueError(
                f"targets: {bad} outside 0..{self.population.n_models - 1} (population.n_models)"
            )
        if self.targets != "all" and not self.targets:
            raise ValueError("targets: give at least one model index to attack, or 'all'")
        if len(set(listed_targets)) != len(listed_targets):
            raise ValueError(f"targets: each model at most once, got {listed_targets}")
        listed = self.attacks if self.attacks != "all" else []
        if not listed and self.attacks != "all":
            raise ValueError("attacks: give at least one attack name, or 'all'")
        if "label_only_noise" in listed and self.population.noise_queries == 0:
            raise ValueError("attacks: label_only_noise needs population.noise_queries > 0")
        unknown = sorted(set(self.attack_params) - set(listed or self.attack_params))
        if self.attacks != "all" and unknown:
            raise ValueError(f"attack_params: {unknown} are not in attacks")
        from privquant.attacks import get_attack

        # Typed per attack: a typo or an out-of-range value fails here, not after training.
        self.attack_params = {
            name: get_attack(name).validate_params(raw) for name, raw in self.attack_params.items()
        }
        if self.population.balanced and self.population.n_models < 4:
            raise ValueError("population.balanced: needs n_models >= 4 (with 3, LiRA's IN/OUT "
                             "reference counts would reveal the target's membership)")  # fmt: skip
        return self


def format_errors(e: ValidationError, source: str) -> str:
    """One line per error: the dotted field path, the message and the offending value."""
    lines = [f"{source}: invalid configuration"]
    for err in e.errors():
        raised = (err.get("ctx") or {}).get("error")
        loc = format_location(err["loc"]) or "(top level)"
        if isinstance(raised, ConfigError):  # privquant's own message: no pydantic prefix or dump
            text = str(raised)
            named = not err["loc"] or text.startswith(str(err["loc"][0]))  # already the full path
            lines.extend("  " + line for line in (text if named else f"{loc}: {text}").splitlines())
            continue
        lines.append(
            f"  {loc}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" else "")
        )
    return "\n".join(lines)


def load_config(source: str | os.PathLike[str] | dict[str, Any]) -> AuditConfig:
    """Validate a YAML file (or dict); errors name the field and the allowed values."""
    where = "config"
    if not isinstance(source, dict):
        where = str(source)
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            source = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({yaml_problem(e)})") from e
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
        if not isinstance(source, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    base = Path(where).parent if where != "config" else Path.cwd()
    source = {**source, "plugins": load_plugins(source.get("plugins") or [], base, where)}
    try:
        config = AuditConfig.model_validate(source)
    except ValidationError as e:
        raise ConfigError(format_errors(e, where)) from None
    except ConfigError as e:  # raised by nested validators (bits, attack names)
        raise ConfigError(f"{where}: {e}") from None
    if where != "config":
        config._source = Path(where)
    return config


def load_plugins(paths: Any, base: Path, where: str = "config") -> list[str]:
    """Import each Python file in ``paths`` once (a relative path is looked up next to the
    config file, then in the working directory); returns ``paths`` as given.

    A plugin registers what a config names (a model, a defense) before the config is validated,
    so a user model needs no edit to privquant. Files run as given: only list files you trust.
    """
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{where}: plugins: expected a list of Python file paths, got {paths!r}")
    loaded = []
    for i, entry in enumerate(paths):
        tried = [Path(entry)] if Path(entry).is_absolute() else [base / entry, Path.cwd() / entry]
        found = [p.resolve() for p in tried if p.suffix == ".py" and p.is_file()]
        if not found:
            raise ConfigError(
                f"{where}: plugins[{i}]: no Python file at {' or '.join(map(str, tried))}"
            )
        path = found[0]
        name = "privquant_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise ConfigError(f"{where}: plugins[{i}]: {path} failed to import ({e!r})") from e
        loaded.append(entry)
    return loaded
