"""A variant: a named sequence of defense steps (train -> transforms -> outputs).

YAML accepts the full form ``{name, steps: [{method: ..., ...}, ...]}`` and, for one step, the
shorthand ``{name, method: ..., <that method's fields>}``; ``method: none`` means no step.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    TypeAdapter,
    field_validator,
    model_validator,
)

from privquant.defenses.base import DEFENSES, STAGE_ORDER, DefenseConfig
from privquant.errors import ConfigError


@cache
def _steps_adapter(configs: tuple[type[DefenseConfig], ...]) -> TypeAdapter:
    # Built from the registry at validation time, so a method registered later (by a user or a
    # test) is accepted with no other edit; the discriminator makes errors name the method.
    union = configs[0] if len(configs) == 1 else Union[configs]  # noqa: UP007
    return TypeAdapter(list[Annotated[union, Field(discriminator="method")]])


class VariantConfig(BaseModel):
    """One way of turning each trained model into the model an attacker queries."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="unique within a config; letters, digits, '.', '_', '-' (it names files in the "
        "run folder); 'fp32' (no steps) is the reference",
    )
    steps: list[SerializeAsAny[DefenseConfig]] = Field(
        default_factory=list, description="defense steps in stage order: train, transform, output"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_step_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "method" not in data:
            return data
        data = dict(data)
        if "steps" in data:
            raise ValueError("give either 'method' (one step) or 'steps' (a list), not both")
        method = data.pop("method")
        name = data.pop("name", None)
        if method == "none":
            if data:
                raise ValueError(f"method 'none' takes no other fields, got {sorted(data)}")
            steps: list[Any] = []
        else:
            steps = [{"method": method, **data}]
        return {"steps": steps} if name is None else {"name": name, "steps": steps}

    @field_validator("steps", mode="before")
    @classmethod
    def _validate_steps(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("expected a list of {method: NAME, ...} entries")
        configs = tuple(d.config for d in DEFENSES.values())
        items = [s.model_dump() if isinstance(s, DefenseConfig) else s for s in v]
        return _steps_adapter(configs).validate_python(items)

    @model_validator(mode="after")
    def _stage_order(self) -> VariantConfig:
        stages = [self.stage_of(s) for s in self.steps]
        ranks = [STAGE_ORDER[s] for s in stages]
        if ranks != sorted(ranks):
            raise ValueError(
                f"variant {self.name!r}: steps must run train -> transform -> output, got {stages}"
            )
        if stages.count("train") > 1:
            raise ValueError(f"variant {self.name!r}: at most one train-stage step")
        for i, step in enumerate(self.steps):  # each step's cross-field rules, before any work
            try:
                step.check()
            except ValueError as e:
                raise ConfigError(f"variants.{self.name}.steps.{i} ({step.method}): {e}") from None
        return self

    @staticmethod
    def stage_of(step: DefenseConfig) -> str:
        return DEFENSES[step.method].stage

    @property
    def train_step(self) -> DefenseConfig | None:
        return next((s for s in self.steps if self.stage_of(s) == "train"), None)

    @property
    def transform_steps(self) -> list[DefenseConfig]:
        return [s for s in self.steps if self.stage_of(s) == "transform"]

    @property
    def output_steps(self) -> list[DefenseConfig]:
        return [s for s in self.steps if self.stage_of(s) == "output"]

    def describe(self) -> str:
        return " -> ".join(s.method for s in self.steps) or "none"


def format_location(loc: tuple[Any, ...]) -> str:
    """A dotted field path; drops the method tag pydantic inserts after ``steps.N``."""
    parts: list[str] = []
    for i, p in enumerate(loc):
        if (
            isinstance(p, str)
            and i >= 2
            and isinstance(loc[i - 1], int)
            and loc[i - 2] == "steps"
            and p in DEFENSES
        ):
            continue
        parts.append(str(p))
    return ".".join(parts)
