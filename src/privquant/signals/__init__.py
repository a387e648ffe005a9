"""Signals: every model's outputs on every pool point plus who trained on what; and how to query them."""

from privquant.signals.format import SIGNALS_HOW, Signals
from privquant.signals.query import (
    MAX_QUERIES,
    View,
    collect_signals,
    noise_robustness,
    query_logits,
    query_views,
)

__all__ = [
    "MAX_QUERIES",
    "SIGNALS_HOW",
    "Signals",
    "View",
    "collect_signals",
    "noise_robustness",
    "query_logits",
    "query_views",
]
