"""The audit pipeline: one YAML config -> populations -> variants -> signals -> attacks -> report."""

from privquant.defenses import VariantConfig
from privquant.pipeline.byo import audit_model
from privquant.pipeline.config import AuditConfig, load_config
from privquant.pipeline.run import run_audit
from privquant.pipeline.ship import Owner, defend_from_data, deploy_checkpoint
from privquant.pipeline.tune import tune_step

__all__ = ["AuditConfig", "Owner", "VariantConfig", "audit_model", "defend_from_data", "deploy_checkpoint",
           "load_config", "run_audit", "tune_step"]  # fmt: skip
