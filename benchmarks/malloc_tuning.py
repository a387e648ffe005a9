"""glibc malloc tuning: what the tuned allocator (privquant.machine.TUNED_MALLOC) buys, per path.

Each measurement is a fresh process (glibc reads its tunables at start), alternating glibc's
defaults and the tuned setting, ``--reps`` times each: one warm-up epoch, then one timed epoch of
CIFAR-10-shaped data. Paths: DP-SGD as the size-3 study runs it (Opacus per-example gradients,
fp32; batch 128 = the vacuous point, 512 = epsilon 8), plain training in bf16 + channels_last and
in fp32, and querying (inference over the rows). Prints JSON: rows/s, minor page faults and system
CPU seconds per process, the speed-up (median rows/s against glibc's defaults), and whether the trained
weights are bit-identical under both settings (they must be: the allocator places tensors, it
does not change what they hold).

    python benchmarks/malloc_tuning.py [--rows 1536] [--reps 2] [--paths dp128 dp512 bf16 fp32 query]
        [--hugepages]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PATHS = ("dp128", "dp512", "bf16", "fp32", "query")


def _child(path: str, rows: int) -> dict:
    import torch

    from dp_throughput import _context  # this folder is on sys.path when run as a script
    from privquant.defenses.dp_sgd import DPSGD, dp_train

    ctx = _context("resnet20", rows, 128)  # fp32 NCHW; the bf16 path switches below
    if path == "bf16":
        ctx.train = ctx.train.model_copy(update={"precision": "bf16", "channels_last": True})
    x = ctx.x

    dp = {"dp128": DPSGD(noise_multiplier=0.05, lr=1.0, momentum=0.9, batch_size=128),
          "dp512": DPSGD(noise_multiplier=1.0, lr=2.0, momentum=0.0, batch_size=512)}  # fmt: skip

    def once() -> torch.nn.Module:
        if path in dp:
            return dp_train(dp[path], ctx)[0]
        if path == "query":
            model = ctx.fresh_model().eval()
            with torch.no_grad():
                for _ in range(4):  # four passes: a query is many small forward calls
                    for i in range(0, rows, 256):
                        model(torch.from_numpy(x[i : i + 256]).float() / 255)
            return model
        return ctx.train_fresh()

    once()  # warm-up: oneDNN's kernel choice, the first heap growth
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    model = once()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return {"rows_per_s": rows * (4 if path == "query" else 1) / seconds,
            "minor_faults": after.ru_minflt - before.ru_minflt,
            "system_cpu_s": after.ru_stime - before.ru_stime, "user_cpu_s": after.ru_utime - before.ru_utime,
            "weights_sha256": digest.hexdigest()}  # fmt: skip


def _measure(path: str, rows: int, tunables: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    done = subprocess.run([sys.executable, __file__, "--child", path, "--rows", str(rows)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{path} (GLIBC_TUNABLES={tunables!r}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1536, help="rows per timed epoch")
    ap.add_argument("--reps", type=int, default=2, help="processes per path and setting")
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--hugepages", action="store_true",
                    help="also measure the tuned setting plus glibc.malloc.hugetlb=1 (transparent huge "
                    "pages for the heap; glibc >= 2.35)")  # fmt: skip
    ap.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.rows)))
        return

    from privquant.machine import TUNED_MALLOC, machine_info

    settings = {"system": "", "tuned": TUNED_MALLOC}
    if args.hugepages:
        settings["tuned+hugetlb"] = f"{TUNED_MALLOC}:glibc.malloc.hugetlb=1"
    out: dict = {"rows": args.rows, "reps": args.reps, "settings": settings, "paths": {}}
    for path in args.paths:
        runs: dict[str, list[dict]] = {s: [] for s in settings}
        for _ in range(args.reps):  # alternating, so drift on a shared host hits every setting
            for name, tunables in settings.items():
                runs[name].append(_measure(path, args.rows, tunables))
        med = {s: statistics.median(r["rows_per_s"] for r in rs) for s, rs in runs.items()}
        out["paths"][path] = {
            "rows_per_s": {s: [round(r["rows_per_s"], 1) for r in rs] for s, rs in runs.items()},
            "minor_faults": {s: [r["minor_faults"] for r in rs] for s, rs in runs.items()},
            "system_cpu_s": {s: [round(r["system_cpu_s"], 2) for r in rs] for s, rs in runs.items()},
            "speedup_vs_system": {s: round(med[s] / med["system"], 3) for s in settings if s != "system"},
            "same_weights": len({r["weights_sha256"] for rs in runs.values() for r in rs}) == 1,
        }  # fmt: skip
        print(f"{path}: {out['paths'][path]['speedup_vs_system']}", file=sys.stderr)
    out["machine"] = {**machine_info(), "malloc": "per measurement, see above"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
