"""The likelihood-ratio attack (LiRA, Carlini et al. 2022), online and offline.

For each point, the target's logit-scaled confidence is compared with Gaussians fitted to the
same statistic under reference models that did (IN) and did not (OUT) train on the point, per
query view (original plus augmentations), then averaged over views.
"""

from __future__ import annotations

import numpy as np

from privquant.attacks import statistics as sig
from privquant.attacks.base import Attack, even_reference_counts, register
from privquant.signals import Signals


def _masked_gaussian(
    phi: np.ndarray, mask: np.ndarray, fixed_variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over reference models where ``mask`` [R, N] holds; phi is [R, N, Q].

    Points with no such reference fall back to the average over points, so few models still
    give a score. ``fixed_variance`` uses one std per query view (median over points), which is
    far more stable when there are few references (Carlini et al. recommend it below ~64).
    """
    w = mask[:, :, None].astype(np.float64)
    n = w.sum(0)
    mean = (phi * w).sum(0) / np.maximum(n, 1)
    var = (((phi - mean) ** 2) * w).sum(0) / np.maximum(n - 1, 1)
    empty = n[:, 0] == 0
    if empty.any():
        mean[empty] = mean[~empty].mean(0) if (~empty).any() else 0.0
    std = np.sqrt(var)
    if fixed_variance or (n < 2).any():
        has = n[:, 0] >= 2
        global_std = np.median(std[has], axis=0) if has.any() else np.std(phi, axis=(0, 1))
        std = (
            np.broadcast_to(global_std, std.shape).copy()
            if fixed_variance
            else np.where(n < 2, global_std, std)
        )
    return mean, np.maximum(std, 1e-6)


def _log_normal(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)


def lira_score(
    signals: Signals,
    target: int,
    references: np.ndarray,
    online: bool = True,
    fixed_variance: bool = False,
) -> np.ndarray:
    phi = signals.statistic("scaled_logit", sig.scaled_logit)  # [M, N, Q]
    ref_phi, ref_keep = phi[references], signals.keep[references]
    phi_t = phi[target]
    excluded = signals.n_models - len(references)
    mean_out, std_out = _masked_gaussian(
        ref_phi, even_reference_counts(~ref_keep, excluded), fixed_variance
    )
    if not online:
        # One-sided test against the OUT Gaussian. The z-score orders points like the p-value
        # but does not saturate (log_ndtr rounds to 0 for every strong member, creating ties).
        return ((phi_t - mean_out) / std_out).mean(-1)
    mean_in, std_in = _masked_gaussian(
        ref_phi, even_reference_counts(ref_keep, excluded), fixed_variance
    )
    return (_log_normal(phi_t, mean_in, std_in) - _log_normal(phi_t, mean_out, std_out)).mean(-1)


for _online in (True, False):
    for _fixed in (False, True):
        _name = "lira_" + ("online" if _online else "offline") + ("_fixed_var" if _fixed else "")
        register(Attack(
            _name,
            lambda s, t, r, _o=_online, _f=_fixed, **kw: lira_score(s, t, r, online=_o, fixed_variance=_f, **kw),
            f"Carlini et al. 2022, {'online (IN and OUT references)' if _online else 'offline (OUT references only)'}, "
            f"{'fixed' if _fixed else 'per-example'} variance, averaged over query views",
        ))  # fmt: skip
