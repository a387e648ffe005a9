"""Compare two caches of the same split-distillation population trained in different precisions.

Part 5 of the size-3 study trains one recipe on two tracks (bf16 autocast on hosts with fast bf16, fp32
elsewhere) whose models never share a cache key. Where both tracks have finished the same step (a model's
k-th sub-teacher, a model's student), the pair differs only by the training precision (and the noise it
brings), so the pairs measure what the precision changes in accuracy: the confound of an fp32-trained
defense compared with the bf16-trained FP32 reference.

- Sub-teachers: each cache entry holds a teacher's logits on its held-out members and on the defender's
  reference rows (seen by no model). Two entries are the same step when their held-out logits are on the same
  rows. Predicted labels cannot tell (the rows follow the dataset's class order, so two teachers of one model
  agree on ~55-60% of *different* rows); how confident each is, row by row, can: the correlation of the
  top-2 logit margins is ~0.75-0.8 on the same images and ~0.1-0.16 on different ones (part 5, session 34).
  The script refuses a pairing that is not clearly separated. Accuracy is read on the reference rows.
- Students: checkpoints of the same model have the same member count; each is evaluated in fp32 on the
  split's test rows and reference rows.

  python scripts/compare_tracks.py configs/cifar10_regime_12500_teachers8_fp32.yaml \\
      runs/cache_regime_12500 runs/cache_regime_12500_fp32 --names bf16 fp32 --out compare.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats

# A pairing is accepted when its held-out margins correlate at least this much and every other
# candidate of that shape correlates at least SEPARATION less (same images vs different images).
MIN_CORRELATION = 0.5
SEPARATION = 0.3


def teacher_entries(cache: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(entry name, held-out logits, reference logits) of every sub-teacher entry in ``cache``."""
    out = []
    for f in sorted(cache.glob("*/*/logits.npz")):
        if not (f.parent / "COMPLETE").is_file():
            continue
        with np.load(f) as z:
            if {"held_out", "reference"} <= set(z.files):
                out.append((f.parent.name, z["held_out"], z["reference"]))
    return out


def top2_margin(logits: np.ndarray) -> np.ndarray:
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]


def pair_teachers(a: list, b: list) -> list[tuple[int, int, float, float]]:
    """(index in a, index in b, margin correlation, runner-up's) for each entry of ``a`` whose step is in ``b``."""
    pairs = []
    for i, (name, held_a, _) in enumerate(a):
        margin_a = top2_margin(held_a)
        scores = sorted(
            ((float(np.corrcoef(margin_a, top2_margin(held_b))[0, 1]), j)
             for j, (_, held_b, _) in enumerate(b) if held_b.shape == held_a.shape),
            reverse=True,
        )  # fmt: skip
        if not scores or scores[0][0] < MIN_CORRELATION:
            continue  # this step has not been trained on the other track
        runner_up = scores[1][0] if len(scores) > 1 else 0.0
        if scores[0][0] - runner_up < SEPARATION:
            sys.exit(f"{name}: no clear partner (correlations {scores[0][0]:.3f}, {runner_up:.3f})")
        pairs.append((i, scores[0][1], scores[0][0], runner_up))
    if len({j for _, j, _, _ in pairs}) != len(pairs):
        sys.exit("two entries of one cache paired with the same entry of the other")
    return pairs


def paired_interval(diff: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean of paired differences with a t interval (the pairs are few)."""
    n = len(diff)
    mean = float(diff.mean())
    if n < 2:
        return {"n": n, "mean": mean, "low": float("nan"), "high": float("nan")}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n))
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def script_commit() -> str:
    """This script's checkout: the privquant on the path may be another (a study's pinned worktree)."""
    return subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def student_dirs(cache: Path) -> dict[int, Path]:
    """Split-distillation student checkpoints by member count (one per model of the population).

    Two students with the same member count cannot be told apart by it: refused, not overwritten.
    """
    out: dict[int, Path] = {}
    for meta in sorted(cache.glob("*/*/meta.json")):
        if not (meta.parent / "COMPLETE").is_file():
            continue
        m = json.loads(meta.read_text())
        if (m.get("defense") or {}).get("method") != "split_distill":
            continue
        members = int(m["n_members"])
        if members in out:
            sys.exit(
                f"{cache}: two students with {members} members ({out[members].name[:12]}, "
                f"{meta.parent.name[:12]}): the member count does not identify the model"
            )
        out[members] = meta.parent
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "config", help="the run's config (its data, split and seed give the rows' labels)"
    )
    p.add_argument("cache_a")
    p.add_argument("cache_b")
    p.add_argument(
        "--names", nargs=2, default=["a", "b"], help="what the two caches are, e.g. bf16 fp32"
    )
    p.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = p.parse_args(argv)
    caches = [Path(args.cache_a), Path(args.cache_b)]
    for c in caches:
        if not c.is_dir():
            sys.exit(f"{c}: not a cache folder")
    na, nb = args.names

    # Imported here: torch is needed only past the argument checks.
    from privquant.artifacts.atomic import atomic_write_json
    from privquant.artifacts.checkpoint import load_checkpoint
    from privquant.machine import machine_info
    from privquant.metrics.epsilon import paired_accuracy_difference_interval
    from privquant.pipeline.config import load_config
    from privquant.pipeline.run import prepared_split
    from privquant.training.trainer import predict_logits

    ds, split = prepared_split(load_config(args.config))
    y_ref = ds.y_train[split.reference]

    a, b = (teacher_entries(c) for c in caches)
    teachers = []
    for i, j, corr, runner_up in pair_teachers(a, b):
        acc = [float((e[2].argmax(1) == y_ref).mean()) for e in (a[i], b[j])]
        teachers.append({na: a[i][0], nb: b[j][0], "held_out_rows": len(a[i][1]), "margin_correlation": corr,
                         "runner_up_correlation": runner_up, f"reference_accuracy_{na}": acc[0],
                         f"reference_accuracy_{nb}": acc[1]})  # fmt: skip
    diff = np.array(
        [t[f"reference_accuracy_{nb}"] - t[f"reference_accuracy_{na}"] for t in teachers]
    )

    rows = {"test": (ds.x_test[split.test], ds.y_test[split.test]),
            "reference": (ds.x_train[split.reference], y_ref)}  # fmt: skip
    sa, sb = (student_dirs(c) for c in caches)
    students = []
    for members in sorted(set(sa) & set(sb)):
        preds = []
        for d in (sa[members], sb[members]):
            model, _ = load_checkpoint(d)
            model.eval()
            preds.append(
                {k: predict_logits(model, x, device="cpu").argmax(1) for k, (x, _) in rows.items()}
            )
        entry = {na: sa[members].name, nb: sb[members].name, "members": members}
        for k, (_, y) in rows.items():
            right_a, right_b = (pr[k] == y for pr in preds)
            # Exact McNemar interval of accuracy(b) - accuracy(a) on the same rows.
            low, high = paired_accuracy_difference_interval(right_b, right_a)
            entry[k] = {"rows": len(y), f"accuracy_{na}": float(right_a.mean()), f"accuracy_{nb}": float(right_b.mean()),
                        "difference": float(right_b.mean() - right_a.mean()), "low": low, "high": high,
                        f"rows_only_{nb}_right": int((right_b & ~right_a).sum()),
                        f"rows_only_{na}_right": int((right_a & ~right_b).sum()),
                        "prediction_agreement": float((preds[0][k] == preds[1][k]).mean())}  # fmt: skip
        students.append(entry)

    result = {"config": args.config, "caches": {na: str(caches[0]), nb: str(caches[1])},
              "teachers": teachers, f"teacher_reference_accuracy_{nb}_minus_{na}": paired_interval(diff),
              "students": students, "machine": machine_info(), "script_commit": script_commit()}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
