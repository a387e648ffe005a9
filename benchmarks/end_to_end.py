"""End-to-end audit time: privquant vs Privacy Meter 2 on PM2's default CIFAR-10 audit work.

    python benchmarks/end_to_end.py                                  # privquant side only
    python benchmarks/end_to_end.py --pm2 PATH                       # both, one after the other
    python benchmarks/end_to_end.py --pm2 PATH --epochs 2            # a quick check of the harness

The work (benchmarks/pm2_cifar10/config.yaml): 4 models of PM2's 62k-parameter CNN on 25,000
CIFAR-10 rows each, 100 epochs, CIFAR-10's test set as population, offline RMIA against model 0
with one reference model. PATH is a checkout (or bare git mirror) of privacytrustlab/ml_privacy_meter;
PM2 runs unmodified from a copy of it, with benchmarks/pm2_shim first on its PYTHONPATH for the
packages it imports but that are missing here (torchvision, transformers, peft, datasets; see its README).

Each side runs in its own fresh process and folder (no cache reused); the script prints JSON
with wall time, seconds per model, share of time per stage, peak RSS and the RMIA AUC of each
side, and the speed-up. PM2 is skipped when --pm2 is not given (as in CI).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from privquant.machine import machine_info
from privquant.metrics import evaluate_scores

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "pm2_cifar10" / "config.yaml"
SHIM = HERE / "pm2_shim"


def run_process(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` to completion; wall seconds, peak RSS (the process and its waited-for
    children, e.g. DataLoader workers) and the exit status. Output goes to ``log``."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "returncode": proc.returncode,
    }


def run_privquant(config: Path, work: Path, epochs: int | None) -> dict[str, Any]:
    cfg = yaml.safe_load(config.read_text())
    cfg["plugins"] = [str((config.parent / p).resolve()) for p in cfg.get("plugins", [])]
    if epochs is not None:
        cfg["train"]["epochs"] = epochs
    cfg_path = work / "privquant_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = work / "privquant_run"
    log = work / "privquant.log"
    cmd = [sys.executable, "-m", "privquant", "run", str(cfg_path), "--out", str(run_dir)]
    proc = run_process(cmd, work, dict(os.environ), log)
    if proc["returncode"] != 0:
        raise SystemExit(f"privquant run failed ({proc['returncode']}); see {log}")
    results = json.loads((run_dir / "results.json").read_text())
    timings = results["timings_seconds"]
    fp32 = results["variants"]["fp32"]
    rmia = fp32["attacks"]["rmia"]["per_target"]["0"]
    wall = proc["wall_seconds"]
    stages = {
        "train_models": timings["train_models"],
        "query_models": timings["variants_and_signals"],
        "attacks": timings["attacks"],
        "startup_data_and_report": wall - timings["train_models"] - timings["variants_and_signals"]
        - timings["attacks"],
    }  # fmt: skip
    n_models = cfg["population"]["n_models"]
    return {
        **proc,
        "seconds_per_model": wall / n_models,
        "stage_seconds": stages,
        "stage_share": {k: v / wall for k, v in stages.items()},
        "rmia_auc": rmia["auc"],
        "rmia_auc_ci95": rmia.get("ci", {}).get("auc"),
        "rmia_tpr_at_0.1%_fpr": rmia["tpr@0.1%fpr"],
        "audited_points": results["split"]["pool_size"],
        "target_test_accuracy": fp32["test_accuracy"],
        "target_train_accuracy": fp32["train_accuracy"],
        "log": str(log),
    }


def pm2_checkout(path: Path, dest: Path) -> str:
    """Copy PM2's files to ``dest`` (from a bare git mirror or a working tree); its commit."""
    git_dir = path if (path / "HEAD").is_file() and (path / "objects").is_dir() else path / ".git"
    if (git_dir / "HEAD").is_file():
        commit = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "HEAD"],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        commit = "unknown (not a git checkout)"
        shutil.copytree(path, dest)
    if not (dest / "run_mia.py").is_file():
        raise SystemExit(f"--pm2 {path}: no run_mia.py; expected a Privacy Meter 2 checkout")
    return commit


def pm2_config(epochs: int) -> dict[str, Any]:
    """PM2's configs/cifar10.yaml with its CNN, on this machine's CPU."""
    return {
        "run": {"random_seed": 12345, "log_dir": "demo_cifar10", "time_log": True,
                "num_experiments": 1},
        "audit": {"privacy_game": "privacy_loss_model", "algorithm": "RMIA", "num_ref_models": 1,
                  "device": "cpu", "report_log": "report_rmia", "batch_size": 5000,
                  "data_size": 10000},
        "train": {"model_name": "CNN", "device": "cpu", "batch_size": 256, "optimizer": "SGD",
                  "learning_rate": 0.1, "weight_decay": 0, "epochs": epochs},
        "data": {"dataset": "cifar10", "data_dir": "data"},
    }  # fmt: skip


def _seconds(pattern: str, text: str) -> float:
    found = re.findall(pattern + r" ([0-9.]+) seconds", text)
    return float(found[-1]) if found else float("nan")


def run_pm2(path: Path, work: Path, epochs: int) -> dict[str, Any]:
    root = work / "pm2"
    commit = pm2_checkout(path, root)
    (root / "bench.yaml").write_text(yaml.safe_dump(pm2_config(epochs), sort_keys=False))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SHIM), str(root), env.get("PYTHONPATH", "")])
    log = work / "pm2.log"
    proc = run_process([sys.executable, "run_mia.py", "--cf", "bench.yaml"], root, env, log)
    text = log.read_text(errors="replace")
    if proc["returncode"] != 0:
        raise SystemExit(f"Privacy Meter 2 failed ({proc['returncode']}); see {log}")
    auc = re.findall(r"Target Model 0: AUC ([0-9.]+), TPR@0.1%FPR of ([0-9.]+)", text)
    # PM2 saves its scores: score them with the same metrics (and bootstrap CI) as privquant's.
    saved = np.load(root / "demo_cifar10" / "report" / "exp" / "attack_result_0.npz")
    ours = evaluate_scores(saved["scores"], saved["memberships"], threshold=0.5, n_bootstrap=100)
    test_acc = re.findall(r"Test accuracy ([0-9.]+)", text)
    stages = {
        "load_data": _seconds("Loading dataset took", text),
        "train_models": _seconds("Model loading/training took", text),
        "query_models": _seconds("Preparing signals took", text),
        "attacks": _seconds("Auditing the privacy risks of target model 0 costs", text),
    }
    wall = proc["wall_seconds"]
    stages["startup_and_rest"] = wall - sum(v for v in stages.values() if v == v)
    return {
        **proc,
        "commit": commit,
        "seconds_per_model": wall / 4,
        "stage_seconds": stages,
        "stage_share": {k: v / wall for k, v in stages.items()},
        "rmia_auc_pm2_log": float(auc[-1][0]) if auc else None,
        "rmia_auc": ours["auc"],
        "rmia_auc_ci95": ours["ci"]["auc"],
        "rmia_tpr_at_0.1%_fpr": ours["tpr@0.1%fpr"],
        "audited_points": int(len(saved["scores"])),
        "test_accuracy_per_model": [float(a) for a in test_acc],
        "log": str(log),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG, help="privquant side's audit config")
    p.add_argument("--pm2", type=Path, help="Privacy Meter 2 checkout or bare git mirror")
    p.add_argument("--epochs", type=int, help="override both sides' epochs (harness checks only)")
    p.add_argument("--work", type=Path, help="folder for both runs (default: a temporary one)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--pm2-first", action="store_true", help="run Privacy Meter 2 before privquant")
    p.add_argument("--pm2-result", type=Path,
                   help="take Privacy Meter 2's side from this earlier output (same machine) "
                   "instead of running it again")  # fmt: skip
    args = p.parse_args()
    if args.pm2 is not None and not args.pm2.exists():
        raise SystemExit(f"--pm2 {args.pm2}: no such folder")
    work = Path(args.work or tempfile.mkdtemp(prefix="end_to_end_"))
    work.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs
    config_epochs = yaml.safe_load(args.config.read_text())["train"]["epochs"]
    out: dict[str, Any] = {
        "benchmark": "end_to_end",
        "machine": machine_info(),
        "work": {"models": 4, "rows_per_model": 25_000, "epochs": epochs or config_epochs,
                 "model": "PM2 CNN (62,006 parameters)", "attack": "offline RMIA, 1 reference",
                 "population": "CIFAR-10 test set (10,000)"},
        "command": " ".join(["python", "benchmarks/end_to_end.py", *sys.argv[1:]]),
    }  # fmt: skip
    sides = [("privquant", lambda: run_privquant(args.config, work, epochs))]
    if args.pm2 is not None:
        pm2 = ("privacy_meter_2", lambda: run_pm2(args.pm2, work, epochs or config_epochs))
        sides = [pm2, *sides] if args.pm2_first else [*sides, pm2]
    if args.pm2_result is not None:
        earlier = json.loads(args.pm2_result.read_text())
        out["privacy_meter_2"] = {**earlier["privacy_meter_2"], "from": str(args.pm2_result),
                                  "measured_at": earlier.get("finished_at")}  # fmt: skip
    for name, fn in sides:
        print(f"running {name} in {work} ...", file=sys.stderr, flush=True)
        out[name] = fn()
    out["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if "privacy_meter_2" in out:
        ours, theirs = out["privquant"], out["privacy_meter_2"]
        out["speedup"] = theirs["wall_seconds"] / ours["wall_seconds"]
        out["target_speedup"] = 5.0
        out["auc_at_least_pm2"] = (
            theirs["rmia_auc"] is not None and ours["rmia_auc"] >= theirs["rmia_auc"]
        )
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
