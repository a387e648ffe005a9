"""The shadow-model attack's classifiers, fit in parallel worker processes.

A module of its own, outside ``privquant.attacks``, so that a worker process imports numpy and
scikit-learn only: importing the attacks package loads torch (3-6 s per worker on a 2-core host).
Each fit is single-threaded and deterministic, so the scores do not depend on how many workers
share the fits (tests/test_attacks.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# One fit per task: (features of shadow rows, their membership, features of the target's rows, seed).
FitTask = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def fit_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_target: np.ndarray, seed: int
) -> np.ndarray:
    """P(member) of each target row from a boosted-tree classifier of the shadow rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    if y_train.all() or not y_train.any():  # shadows show only one outcome: no information
        return np.full(len(x_target), 0.5)
    clf = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=31, random_state=seed
    )
    # One thread: OpenMP spin-waiting makes small fits 4x slower when training runs alongside,
    # and the parallelism is over fits (processes), not inside one.
    with threadpool_limits(1):
        clf.fit(x_train, y_train)
        return clf.predict_proba(x_target)[:, 1]


def fit_predict_all(tasks: Sequence[FitTask], jobs: int | None = None) -> list[np.ndarray]:
    """:func:`fit_predict` of every task, in order, over ``jobs`` processes (None: every core
    this process may use; 1: in this process). The fits are independent (one per true class in
    Shokri et al.'s attack) and each is Python-bound, so threads would serialize on the GIL."""
    if jobs is None:
        # Only the parent gets here (it has torch loaded already), never a worker.
        from privquant.population.executor import available_cores

        jobs = available_cores()
    jobs = min(jobs, len(tasks))
    if jobs < 2:  # one fit, or one core: a pool would only add its start-up
        return [fit_predict(*task) for task in tasks]
    from joblib import Parallel, delayed

    # loky keeps its workers for later calls (every target of every variant reuses them).
    return Parallel(n_jobs=jobs, backend="loky")(delayed(fit_predict)(*task) for task in tasks)
