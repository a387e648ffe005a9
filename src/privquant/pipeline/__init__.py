"""The audit pipeline: one YAML config -> populations -> variants -> signals -> attacks -> report."""

from privquant.defenses import VariantConfig
from privquant.pipeline.byo import audit_model
from privquant.pipeline.config import AuditConfig, load_config
from privquant.pipeline.run import run_audit

__all__ = ["AuditConfig", "VariantConfig", "audit_model", "load_config", "run_audit"]
