"""From data to signals to report: training populations of models, variants, audits."""

from privquant.pipeline.byo import audit_model
from privquant.pipeline.config import AuditConfig, VariantConfig, load_config
from privquant.pipeline.population import collect_signals, query_views, train_population
from privquant.pipeline.run import run_audit

__all__ = [
    "AuditConfig",
    "VariantConfig",
    "audit_model",
    "collect_signals",
    "load_config",
    "query_views",
    "run_audit",
    "train_population",
]
