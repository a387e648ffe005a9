"""Membership inference attacks, all functions of saved signals (logits, labels, keep)."""

from privquant.attacks import label_only, lira, rmia, shokri, threshold  # noqa: F401 (register attacks)
from privquant.attacks.base import ATTACKS, Attack, get_attack, register, resolve_attack_names
from privquant.attacks.run import attack_scores, format_table, run_attacks
from privquant.signals import Signals

__all__ = [
    "ATTACKS",
    "Attack",
    "Signals",
    "attack_scores",
    "format_table",
    "get_attack",
    "register",
    "resolve_attack_names",
    "run_attacks",
]
