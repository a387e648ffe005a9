"""Typed audit results (results.json): one schema for the pipeline, the report and the CLI."""

from privquant.results.compare import compare_results
from privquant.results.merge import merge_results
from privquant.results.pareto import TradeoffPoint, non_dominated, tradeoff_points
from privquant.results.schema import (
    FORMAT,
    NOT_AVERAGED,
    RELATIVE_METRICS,
    SUBSETS,
    AttackResult,
    AuditResults,
    Curves,
    Findings,
    ModelRecord,
    Pooled,
    PooledTPR,
    TopPoint,
    VariantResult,
    aggregate_targets,
)

__all__ = [
    "FORMAT",
    "NOT_AVERAGED",
    "RELATIVE_METRICS",
    "AttackResult",
    "AuditResults",
    "Curves",
    "Findings",
    "ModelRecord",
    "Pooled",
    "PooledTPR",
    "SUBSETS",
    "TopPoint",
    "TradeoffPoint",
    "VariantResult",
    "aggregate_targets",
    "compare_results",
    "merge_results",
    "non_dominated",
    "tradeoff_points",
]
