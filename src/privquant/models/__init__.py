"""Models by name. Every model takes float inputs in [0, 1] and normalizes them itself."""

from privquant.models.registry import (
    MODELS,
    build_model,
    check_model_name,
    count_parameters,
    model_code,
    model_from_spec,
    model_names,
    register_model,
)

__all__ = [
    "MODELS",
    "build_model",
    "check_model_name",
    "count_parameters",
    "model_code",
    "model_from_spec",
    "model_names",
    "register_model",
]
