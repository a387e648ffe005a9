"""Models by name. Every model takes float inputs in [0, 1] and normalizes them itself."""

from privquant.models.registry import MODEL_NAMES, build_model, count_parameters

__all__ = ["MODEL_NAMES", "build_model", "count_parameters"]
