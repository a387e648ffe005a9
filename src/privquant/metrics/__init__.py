"""Attack metrics: ROC, TPR at low FPR, decision metrics, bootstrap CIs, relative change."""

from privquant.metrics.decision import (
    best_threshold,
    confusion_metrics,
    decision_metrics,
    relative_change,
)
from privquant.metrics.epsilon import clopper_pearson, epsilon_lower_bound
from privquant.metrics.evaluate import FPR_LEVELS, evaluate_scores
from privquant.metrics.roc import auc, roc_curve, tpr_at_fpr

__all__ = [
    "FPR_LEVELS",
    "auc",
    "best_threshold",
    "clopper_pearson",
    "confusion_metrics",
    "decision_metrics",
    "epsilon_lower_bound",
    "evaluate_scores",
    "relative_change",
    "roc_curve",
    "tpr_at_fpr",
]
