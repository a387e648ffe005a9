"""Attack metrics: ROC, TPR at low FPR, decision metrics, bootstrap CIs, relative change."""

from privquant.metrics.decision import (
    best_threshold,
    confusion_metrics,
    decision_metrics,
    relative_change,
)
from privquant.metrics.epsilon import clopper_pearson, epsilon_lower_bound
from privquant.metrics.evaluate import (
    AUC,
    CI_METRICS,
    FPR_LEVELS,
    TPR_001,
    TPR_01,
    TPR_1,
    evaluate_scores,
    fpr_key,
)
from privquant.metrics.roc import auc, roc_curve, tpr_at_fpr

__all__ = [
    "AUC",
    "CI_METRICS",
    "FPR_LEVELS",
    "TPR_01",
    "TPR_001",
    "TPR_1",
    "fpr_key",
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
