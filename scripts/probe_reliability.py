"""Probe privquant as a new user would (issue 27's kind of probe): bad configs, bad user data,
reruns, concurrent runs, kills, output folders, the Python API. Each case states what a correct
tool does; the probe runs it on tiny digits/MLP setups and checks for data loss, silently wrong
numbers and errors that do not name the field, flag or file.

    python scripts/probe_reliability.py [--work DIR] [--out docs/results/reliability_probe.json]

Prints one line per case and a JSON summary (cases, passed, failed, by category).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CK = "train --data digits --model mlp --epochs 3 --train-size 300 --seed 1 --out ck"
BASE = """name: base
data: {name: digits, pool_size: 300, reference_size: 100}
model: {name: mlp, options: {hidden: [32]}}
train: {epochs: 3, batch_size: 32, optimizer: adam, lr: 0.003}
population: {n_models: 3, queries: 1}
variants:
  - {name: fp32}
  - {name: ptq4, method: ptq, quant: {weight_bits: 4, first_last_bits: null}}
attacks: [loss, rmia]
targets: all
bootstrap: 10
"""


@dataclass
class Outcome:
    rc: int
    out: str
    err: str
    seconds: float


def pq(work: Path, args: str, timeout: float = 600, stdin: str | None = None) -> Outcome:
    """One privquant command in ``work`` (a shell line, so pipes and quotes work as typed)."""
    start = time.perf_counter()
    p = subprocess.run(f"privquant {args}", shell=True, cwd=work, capture_output=True, text=True,
                       timeout=timeout, input=stdin)  # fmt: skip
    return Outcome(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (what must not change)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "cache" not in p.parts
            and not p.name.startswith(".")}  # fmt: skip


def one_line_error(o: Outcome, *needles: str) -> str | None:
    """None when the command failed cleanly with one error line holding every needle."""
    if o.rc == 0:
        return f"exit 0, expected an error (stdout: {o.out[-200:]!r})"
    if "Traceback" in o.err:
        return f"a traceback: {o.err[-300:]!r}"
    missing = [n for n in needles if n.lower() not in o.err.lower()]
    if missing:
        return f"error does not name {missing}: {o.err.strip()[-300:]!r}"
    return None


CASES: list[tuple[str, str, Callable[[Path], str | None]]] = []


def case(category: str, name: str) -> Callable:
    def wrap(fn: Callable[[Path], str | None]) -> Callable[[Path], str | None]:
        CASES.append((category, name, fn))
        return fn

    return wrap


def run_json(o: Outcome) -> dict[str, Any]:
    if o.rc != 0:
        raise AssertionError(f"rc {o.rc}: {o.err.strip()[-300:]}")
    return json.loads(o.out[o.out.index("{") :])


# 1. What is audited is what ships ----------------------------------------------------------------


def _shipped_matches(work: Path, folder: str, printed: float) -> str | None:
    ev = run_json(pq(work, f"eval {folder} --data digits --onnx --json"))
    if abs(ev["test_accuracy"] - printed) > 1e-9:
        return f"export evaluates to {ev['test_accuracy']}, defend printed {printed}"
    if ev["onnx"]["argmax_agreement"] < 0.999 or ev["onnx"]["max_abs_diff"] > 1e-3:
        return f"model.onnx disagrees with the export: {ev['onnx']}"
    return None


@case("1 audited = shipped", "output_coarsening step is in the export and the ONNX graph")
def _(work: Path) -> str | None:
    steps = "[{method: ptq, quant: {weight_bits: 4}}, {method: output_coarsening, levels: 2}]"
    s = run_json(pq(work, f"defend ck --steps '{steps}' --onnx --out o1"))
    bad = _shipped_matches(work, "o1", s["test_accuracy"])
    if bad:
        return bad
    import onnxruntime as ort

    from privquant.data import load_dataset

    x = load_dataset("digits").x_test[:200].astype(np.float32) / 255.0
    sess = ort.InferenceSession(str(work / "o1" / "model.onnx"))
    probs = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    levels = max(len(np.unique(np.round(r, 6))) for r in probs)
    return None if levels <= 3 else f"model.onnx releases {levels} distinct output values per row"


@case("1 audited = shipped", "hamp_output step is in the export")
def _(work: Path) -> str | None:
    steps = "[{method: ptq, quant: {weight_bits: 4}}, {method: hamp_output}]"
    o = pq(work, f"defend ck --steps '{steps}' --reference-size 200 --onnx --out o1h")
    if o.rc != 0 and "reference" in o.err:
        return None  # refused up front for want of rows: acceptable
    return _shipped_matches(work, "o1h", run_json(o)["test_accuracy"])


@case("1 audited = shipped", "int8 ONNX with an output step is refused before writing")
def _(work: Path) -> str | None:
    steps = "[{method: ptq, quant: {weight_bits: 4}}, {method: output_coarsening, levels: 2}]"
    o = pq(work, f"defend ck --steps '{steps}' --onnx-int8 --out o1i")
    if o.rc == 0:
        ev = run_json(pq(work, "eval o1i --data digits --json"))
        return None if ev else "int8 export written without its output step"
    return one_line_error(o, "int8")


@case("1 audited = shipped", "default recipe export evaluates to the printed accuracy")
def _(work: Path) -> str | None:
    s = run_json(pq(work, "defend ck --bits 4 --epochs 1 --onnx --out o1d"))
    return _shipped_matches(work, "o1d", s["test_accuracy"])


# 2. A finished run is never destroyed ---------------------------------------------------------


def _failing_rerun(
    work: Path, patch: str, *needles: str, replace: tuple[str, str] | None = None
) -> str | None:
    before = digest(work / "r")
    text = BASE.replace("name: base", "name: bad") + patch
    (work / "bad.yaml").write_text(text.replace(*replace) if replace else text)
    o = pq(work, "run bad.yaml --out r")
    if o.rc == 0:
        return "the failing config ran"
    after = digest(work / "r")
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        return f"the finished run changed: {changed}"
    return one_line_error(o, *needles)


@case("2 run folders", "rerun with loss_floor + targets self fails, the run stays")
def _(work: Path) -> str | None:
    step = "  - {name: d, method: qat, quant: {weight_bits: 4}, loss_floor: 0.5, targets: self}"
    return _failing_rerun(work, "", "loss_floor", replace=("attacks:", step + "\nattacks:"))


@case("2 run folders", "rerun with cache_dir pointing at a file fails, the run stays")
def _(work: Path) -> str | None:
    (work / "afile").write_text("x")
    return _failing_rerun(work, "cache_dir: afile\n", "afile")


@case("2 run folders", "rerun with a seed beyond 2**64 fails, the run stays")
def _(work: Path) -> str | None:
    return _failing_rerun(work, "seed: 18446744073709551616\n", "seed")


@case("2 run folders", "rerun with an unknown attack fails, the run stays")
def _(work: Path) -> str | None:
    return _failing_rerun(work, "naive: true\nattack_params: {rmia: {gama: 2}}\n", "gama")


@case("2 run folders", "the user's commented config.yaml in --out is never overwritten")
def _(work: Path) -> str | None:
    (work / "exp").mkdir(exist_ok=True)
    text = "# my notes\n" + BASE.replace("name: base", "name: exp")
    (work / "exp" / "config.yaml").write_text(text)
    o = pq(work, "run exp/config.yaml --out exp")
    if o.rc != 0:
        return f"rc {o.rc}: {o.err[-200:]}"
    if (work / "exp" / "config.yaml").read_text() != text:
        return "config.yaml rewritten"
    return None if (work / "exp" / "results.json").is_file() else "no results"


@case("2 run folders", "a second config into a finished folder: its results, its config")
def _(work: Path) -> str | None:
    shutil.copytree(work / "r", work / "r2", ignore=shutil.ignore_patterns("cache"))
    (work / "other.yaml").write_text(BASE.replace("name: base", "name: other"))
    o = pq(work, "run other.yaml --out r2")
    if o.rc != 0:
        return f"rc {o.rc}"
    res = json.loads((work / "r2" / "results.json").read_text())
    cfg = (work / "r2" / "config.yaml").read_text()
    ok = res["config"]["name"] == "other" and "name: other" in cfg
    return None if ok and not (work / "r2" / ".previous").exists() else "results/config mixed"


@case("2 run folders", "two runs into one folder at once: the second is refused")
def _(work: Path) -> str | None:
    (work / "slow.yaml").write_text(BASE.replace("epochs: 3", "epochs: 30").replace("base", "slow"))
    first = subprocess.Popen("privquant run slow.yaml --out rc", shell=True, cwd=work,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(200):  # until the first run holds the folder
        if (work / "rc" / ".lock").exists():
            break
        time.sleep(0.1)
    o = pq(work, "run base.yaml --out rc")
    first.wait(timeout=600)
    bad = one_line_error(o, "another privquant run")
    if bad:
        return bad
    res = json.loads((work / "rc" / "results.json").read_text())
    return None if res["config"]["name"] == "slow" and first.returncode == 0 else "first run hurt"


@case("2 run folders", "SIGKILL mid-run, rerun resumes and finishes")
def _(work: Path) -> str | None:
    (work / "k.yaml").write_text(BASE.replace("epochs: 3", "epochs: 20").replace("base", "k"))
    p = subprocess.Popen("exec privquant run k.yaml --out rk", shell=True, cwd=work,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(8)
    p.send_signal(signal.SIGKILL)
    p.wait()
    o = pq(work, "run k.yaml --out rk")
    return None if o.rc == 0 and (work / "rk" / "results.json").is_file() else f"rc {o.rc}"


@case("2 run folders", "SIGINT mid-run: exit 130 with a resume hint, rerun finishes")
def _(work: Path) -> str | None:
    (work / "i.yaml").write_text(BASE.replace("epochs: 3", "epochs: 20").replace("base", "i"))
    p = subprocess.Popen("exec privquant run i.yaml --out ri", shell=True, cwd=work,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(8)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode != 130 or "resume" not in err:
        return f"rc {p.returncode}: {err[-200:]!r}"
    o = pq(work, "run i.yaml --out ri")
    return None if o.rc == 0 else f"rerun rc {o.rc}"


# 3. Output folders ----------------------------------------------------------------------------


@case("3 output folders", "defend --out the checkpoint itself is refused, the checkpoint stays")
def _(work: Path) -> str | None:
    before = digest(work / "ck")
    o = pq(work, "defend ck --bits 4 --epochs 1 --out ck")
    return one_line_error(o, "ck") or (None if digest(work / "ck") == before else "ck changed")


@case("3 output folders", "quantize then defend into one folder: eval sees the new model only")
def _(work: Path) -> str | None:
    run_json(pq(work, "quantize ck --bits 2 --onnx --out o3"))
    s = run_json(pq(work, "defend ck --steps '[{method: split_distill, teachers: 2}]' --out o3"))
    if (work / "o3" / "model.onnx").exists() or (work / "o3" / "manifest.json").exists():
        return "stale model.onnx or manifest.json left beside the new model"
    ev = run_json(pq(work, "eval o3 --json"))
    return None if abs(ev["test_accuracy"] - s["test_accuracy"]) < 1e-9 else "eval reads old model"


@case("3 output folders", "train --out into an export folder leaves no stale export")
def _(work: Path) -> str | None:
    run_json(pq(work, "quantize ck --bits 2 --onnx --out o3t"))
    o = pq(work, "train --data digits --model mlp --epochs 2 --train-size 200 --out o3t")
    if o.rc != 0:
        return one_line_error(o, "o3t")
    stale = [f for f in ("manifest.json", "model.onnx") if (work / "o3t" / f).exists()]
    return f"stale {stale}" if stale else None


# 4. User data ----------------------------------------------------------------------------------


def _npz(work: Path, name: str, **arrays: np.ndarray) -> str:
    from privquant.data import load_dataset

    ds = load_dataset("digits")
    base = {"x_train": ds.x_train.astype(np.float32) / 255, "y_train": ds.y_train,
            "x_test": ds.x_test.astype(np.float32) / 255, "y_test": ds.y_test}  # fmt: skip
    base.update(arrays)
    np.savez(work / name, **base)
    return name


@case("4 user data", "float images in [0, 1] with one pixel at 1.0000001 load scaled, or fail")
def _(work: Path) -> str | None:
    from privquant.data import load_dataset

    x = load_dataset("digits").x_train.astype(np.float32) / 255
    x[0, 0, 0, 0] = 1.0000001
    name = _npz(work, "f.npz", x_train=x)
    o = pq(work, f"train --data npz:{name} --model mlp --epochs 5 --out f_ck")
    if o.rc != 0:
        return one_line_error(o, name)
    acc = run_json(o)["test_accuracy"]
    return None if acc > 0.6 else f"accuracy {acc}: pixels were not scaled"


@case("4 user data", "NaN pixels are refused naming the file")
def _(work: Path) -> str | None:
    from privquant.data import load_dataset

    x = load_dataset("digits").x_train.astype(np.float32) / 255
    x[3, 0, 2, 2] = np.nan
    name = _npz(work, "nan.npz", x_train=x)
    return one_line_error(pq(work, f"data info npz:{name}"), name)


@case("4 user data", "labels and inputs of different lengths are refused")
def _(work: Path) -> str | None:
    from privquant.data import load_dataset

    name = _npz(work, "len.npz", y_train=load_dataset("digits").y_train[:-5])
    return one_line_error(pq(work, f"data info npz:{name}"), name)


@case("4 user data", "an empty test part is refused")
def _(work: Path) -> str | None:
    name = _npz(work, "empty.npz", x_test=np.zeros((0, 1, 8, 8), np.float32),
                y_test=np.zeros(0, np.int64))  # fmt: skip
    return one_line_error(pq(work, f"data info npz:{name}"), "test")


@case("4 user data", "negative labels are refused")
def _(work: Path) -> str | None:
    from privquant.data import load_dataset

    y = load_dataset("digits").y_train.copy()
    y[0] = -1
    return one_line_error(pq(work, f"data info npz:{_npz(work, 'neg.npz', y_train=y)}"), "label")


def _csv(work: Path, name: str, bad: str | None) -> str:
    rng = np.random.default_rng(0)
    lines = ["a,b,c,label"]
    for i in range(300):
        lines.append(f"{rng.normal():.3f},{rng.normal():.3f},{rng.normal():.3f},{i % 2}")
    if bad:
        lines[17] = bad
    (work / name).write_text("\n".join(lines) + "\n")
    return name


@case("4 user data", "a CSV with inf is refused naming the column")
def _(work: Path) -> str | None:
    name = _csv(work, "inf.csv", "inf,0.1,0.2,1")
    return one_line_error(pq(work, f"data info csv:{name}"), name)


@case("4 user data", "a CSV typo in a numeric column is refused naming the row or value")
def _(work: Path) -> str | None:
    name = _csv(work, "typo.csv", "0.3O1,0.1,0.2,1")
    return one_line_error(pq(work, f"data info csv:{name}"), "0.3O1")


def _images(folder: Path, n: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", max(4, n // 4))):
        for c in ("cat", "dog"):
            (folder / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / split / c / f"{i}.png")


def _rows(o: Outcome) -> int:
    return int(run_json(o)["train_size"])


@case("4 user data", "images added to a folder are seen on the next load")
def _(work: Path) -> str | None:
    _images(work / "imgs", 6, 0)
    first = _rows(pq(work, "data info folder:imgs --json"))
    _images(work / "imgs2", 9, 1)
    for c in ("cat", "dog"):
        for i in range(6, 9):
            shutil.copy(work / "imgs2" / "train" / c / f"{i}.png", work / "imgs" / "train" / c)
    second = _rows(pq(work, "data info folder:imgs --json"))
    return None if (first, second) == (12, 18) else f"counts {first} then {second}"


@case("4 user data", "two archives with one stem in two folders load their own images")
def _(work: Path) -> str | None:
    for d, n in (("one", 5), ("two", 7)):
        _images(work / f"src_{d}", n, n)
        (work / d).mkdir(exist_ok=True)
        with zipfile.ZipFile(work / d / "imgs.zip", "w") as z:
            for p in (work / f"src_{d}").rglob("*.png"):
                z.write(p, p.relative_to(work / f"src_{d}"))
    a, b = (_rows(pq(work, f"data info folder:{d}/imgs.zip --json")) for d in ("one", "two"))
    return None if (a, b) == (10, 14) else f"rows {a} and {b}"


# 5. Audit inputs are cross-checked (Python API) ------------------------------------------------


def _api(code: str, work: Path, *needles: str) -> str | None:
    """Run a Python API snippet; it must raise one privquant error naming every needle."""
    prelude = (
        "import numpy as np, torch\nfrom torch import nn\n"
        "from privquant.data import load_dataset\nfrom privquant.models import build_model\n"
        "from privquant.training import TrainConfig, train_new_model\n"
        "from privquant.pipeline import audit_model, VariantConfig\n"
        "ds = load_dataset('digits'); x, y = ds.x_train, ds.y_train\n"
        "cfg = TrainConfig(epochs=2, batch_size=32, optimizer='adam', lr=3e-3)\n"
        "fn = lambda: build_model('mlp', [1, 8, 8], 10, hidden=(16,))\n"
        "model, _ = train_new_model('mlp', x[:150], y[:150], 10, cfg, progress=False, hidden=(16,))\n"
        "kw = dict(n_shadows=2, attacks=['loss'], n_bootstrap=0, progress=False)\n"
    )
    script = prelude + (
        "from privquant.errors import PrivquantError\ntry:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "except PrivquantError as e:\n    print('ERROR', e)\nelse:\n    print('NO ERROR')\n"
    )
    p = subprocess.run([sys.executable, "-c", script], cwd=work, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    if "Traceback" in p.stderr:
        return f"traceback: {p.stderr[-300:]!r}"
    if "ERROR" not in p.stdout or "NO ERROR" in p.stdout:
        return f"no error: {p.stdout[-200:]!r}"
    missing = [n for n in needles if n not in p.stdout]
    return f"error does not name {missing}: {p.stdout[-300:]!r}" if missing else None


@case("5 audit inputs", "a softmax-wrapped target among logit shadows is refused")
def _(work: Path) -> str | None:
    code = "audit_model(nn.Sequential(model, nn.Softmax(-1)), (x[:150], y[:150]), (x[150:300], y[150:300]), fn, cfg, **kw)"
    return _api(code, work, "model 0", "probability")


@case("5 audit inputs", "members with fewer labels than inputs are refused")
def _(work: Path) -> str | None:
    code = "audit_model(model, (x[:150], y[:140]), (x[150:290], y[150:300]), fn, cfg, **kw)"
    return _api(code, work, "members", "140 labels")


@case("5 audit inputs", "non-members equal to the members are refused")
def _(work: Path) -> str | None:
    code = "audit_model(model, (x[:150], y[:150]), (x[:150], y[:150]), fn, cfg, **kw)"
    return _api(code, work, "nonmembers")


@case("5 audit inputs", "audit_model with one shadow is refused before training")
def _(work: Path) -> str | None:
    code = "audit_model(model, (x[:150], y[:150]), (x[150:300], y[150:300]), fn, cfg, n_shadows=1)"
    return _api(code, work, "n_shadows")


@case("5 audit inputs", "a target of another architecture than model_fn is refused")
def _(work: Path) -> str | None:
    code = ("wide = nn.Sequential(nn.Flatten(), nn.Linear(64, 7), nn.ReLU(), nn.Linear(7, 10))\n"
            "audit_model(wide, (x[:150], y[:150]), (x[150:300], y[150:300]), "
            "lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 9), nn.ReLU(), nn.Linear(9, 10)), cfg, **kw)")  # fmt: skip
    return _api(code, work, "model_fn")


@case("5 audit inputs", "defend uses the rows the checkpoint records (300, seed 1)")
def _(work: Path) -> str | None:
    s = run_json(pq(work, "quantize ck --method qat --bits 4 --epochs 1 --out o5"))
    ok = s["train_rows"] == 300 and s["train_rows_seed"] == 1
    return None if ok else f"trained on {s['train_rows']} rows, seed {s['train_rows_seed']}"


# 6. Degenerate inputs and results are flagged --------------------------------------------------


def _config_error(work: Path, patch: str, *needles: str) -> str | None:
    (work / "c6.yaml").write_text(BASE + patch)
    o = pq(work, "run c6.yaml --out r6")
    bad = one_line_error(o, *needles)
    if bad is None and (work / "r6").exists():
        return "the refused run created its --out folder"
    return bad


@case("6 degenerate", "rmia temperature 0 is refused")
def _(work: Path) -> str | None:
    return _config_error(work, "attack_params: {rmia: {temperature: 0}}\n", "temperature")


@case("6 degenerate", "rmia_online gamma -1 is refused")
def _(work: Path) -> str | None:
    cfg = "attack_params: {rmia_online: {gamma: -1}}\n"
    (work / "c6.yaml").write_text(BASE.replace("[loss, rmia]", "[loss, rmia_online]") + cfg)
    return one_line_error(pq(work, "run c6.yaml --out r6g"), "gamma")


@case("6 degenerate", "targets [0, 0] are refused")
def _(work: Path) -> str | None:
    (work / "c6.yaml").write_text(BASE.replace("targets: all", "targets: [0, 0]"))
    return one_line_error(pq(work, "run c6.yaml --out r6t"), "targets")


@case("6 degenerate", "a diverged FP32 model at chance is flagged in the summary and results")
def _(work: Path) -> str | None:
    cfg = BASE.replace("lr: 0.003", "lr: 1000.0").replace("base", "div")
    (work / "div.yaml").write_text(cfg)
    o = pq(work, "run div.yaml --out rdiv")
    if o.rc != 0:
        return f"rc {o.rc}: {o.err[-200:]}"
    warnings = json.loads((work / "rdiv" / "results.json").read_text()).get("warnings") or []
    text = " ".join(warnings).lower() + o.out.lower()
    return None if "chance" in text else f"no chance-level warning: {warnings}"


@case("6 degenerate", "3 models with online attacks warn about too few references")
def _(work: Path) -> str | None:
    cfg = BASE.replace("[loss, rmia]", "[loss, rmia_online]").replace("base", "few")
    (work / "few.yaml").write_text(cfg)
    o = pq(work, "run few.yaml --out rfew")
    if o.rc != 0:
        return f"rc {o.rc}"
    warnings = json.loads((work / "rfew" / "results.json").read_text()).get("warnings") or []
    return None if any("reference" in w for w in warnings) else f"no warning: {warnings}"


# 7. Errors name the field, flag or file ---------------------------------------------------------


@case("7 error messages", "seed -1 names seed")
def _(work: Path) -> str | None:
    return _config_error(work, "seed: -1\n", "seed")


@case("7 error messages", "model.options hidden [-3] names model.options")
def _(work: Path) -> str | None:
    (work / "c7.yaml").write_text(BASE.replace("hidden: [32]", "hidden: [-3]"))
    return one_line_error(pq(work, "run c7.yaml --out r7"), "model.options")


@case("7 error messages", "a meta.json that is a list names the file")
def _(work: Path) -> str | None:
    shutil.copytree(work / "ck", work / "ck_list")
    (work / "ck_list" / "meta.json").write_text("[1, 2]")
    return one_line_error(pq(work, "eval ck_list --data digits"), "meta.json")


@case("7 error messages", "a truncated manifest.json names the file")
def _(work: Path) -> str | None:
    run_json(pq(work, "quantize ck --bits 4 --out o7"))
    text = (work / "o7" / "manifest.json").read_text()
    (work / "o7" / "manifest.json").write_text(text[: len(text) // 2])
    return one_line_error(pq(work, "eval o7 --data digits"), "manifest.json")


@case("7 error messages", "train --epochs 0 names --epochs")
def _(work: Path) -> str | None:
    o = pq(work, "train --data digits --model mlp --epochs 0 --out e0")
    return one_line_error(o, "--epochs")


@case("7 error messages", "quantize --method calibrate is not offered")
def _(work: Path) -> str | None:
    return one_line_error(pq(work, "quantize ck --method calibrate --out oc"), "--method")


@case("7 error messages", "compare | head -1 ends quietly")
def _(work: Path) -> str | None:
    o = pq(work, "compare r r | head -1")
    return None if "Traceback" not in o.err and "Error" not in o.err else o.err[-200:]


@case("7 error messages", "an unknown dataset names the choices")
def _(work: Path) -> str | None:
    return one_line_error(pq(work, "data info nosuch"), "nosuch")


@case("7 error messages", "a config file that is not YAML names the file")
def _(work: Path) -> str | None:
    (work / "broken.yaml").write_text("data: {name: digits\n  pool: [")
    return one_line_error(pq(work, "run broken.yaml --out rb"), "broken.yaml")


@case("7 error messages", "an unknown config field names it")
def _(work: Path) -> str | None:
    return _config_error(work, "trian: {epochs: 2}\n", "trian")


@case("7 error messages", "render_report on results without fp32 names fp32")
def _(work: Path) -> str | None:
    code = (
        "from privquant.results import AuditResults\nfrom privquant.report import render_report\n"
        "r = AuditResults.load('r/results.json')\nr.variants.pop('fp32')\n"
        "render_report(r, 'rep_out')"
    )
    return _api(code, work, "fp32")


@case("7 error messages", "split_distill with more teachers than members names teachers")
def _(work: Path) -> str | None:
    code = (
        "import privquant\n"
        "privquant.defend(fn, train=(x[:3], y[:3]), recipe=[{'method': 'split_distill', 'teachers': 4}], "
        "train_config=cfg, num_classes=10)"
    )
    return _api(code, work, "teachers")


@case("7 error messages", "a label out of range in defend names num_classes")
def _(work: Path) -> str | None:
    code = "import privquant\nprivquant.defend(fn, train=(x[:50], y[:50] + 5), num_classes=10, train_config=cfg)"
    return _api(code, work, "num_classes")


# 8. Static checks run before any work -----------------------------------------------------------


def _fast_refusal(
    work: Path, patch: str, *needles: str, replace: tuple[str, str] | None = None
) -> str | None:
    text = BASE + patch
    if replace:
        text = text.replace(*replace)
    (work / "c8.yaml").write_text(text)
    o = pq(work, "run c8.yaml --out r8")
    bad = one_line_error(o, *needles)
    if bad:
        return bad
    if (work / "r8").exists():
        return "the refused run created its --out folder"
    return None if o.seconds < 30 else f"took {o.seconds:.0f} s: work done before the check"


@case("8 static checks", "attack_params typo fails before training")
def _(work: Path) -> str | None:
    return _fast_refusal(work, "attack_params: {rmia: {temprature: 2}}\n", "temprature")


@case("8 static checks", "split_distill exclusions >= teachers fails before training")
def _(work: Path) -> str | None:
    step = "  - {name: d, steps: [{method: split_distill, teachers: 2, exclusions: 2}]}\nattacks:"
    return _fast_refusal(work, "", "exclusions", replace=("attacks:", step))


@case("8 static checks", "a reference step with reference_size 0 fails before training")
def _(work: Path) -> str | None:
    step = "  - {name: d, method: reference_distill}\nattacks:"
    text = ("attacks:", step)
    (work / "c8.yaml").write_text(
        BASE.replace(*text).replace("reference_size: 100", "reference_size: 0")
    )
    o = pq(work, "run c8.yaml --out r8")
    return one_line_error(o, "reference")


@case("8 static checks", "calibrate audit_rows above the reference rows fails before training")
def _(work: Path) -> str | None:
    step = ("  - {name: d, method: calibrate, audit_rows: 1000, candidates: "
            "[[{method: ptq, quant: {weight_bits: 4}}]]}\nattacks:")  # fmt: skip
    return _fast_refusal(work, "", "1000", replace=("attacks:", step))


@case("8 static checks", "an unreachable privacy_bits budget fails before training")
def _(work: Path) -> str | None:
    step = "  - {name: d, method: privacy_bits, avg_bits: 1.6, candidates: [4, 2]}\nattacks:"
    return _fast_refusal(work, "", "avg_bits", replace=("attacks:", step))


@case("8 static checks", "defend --audit --audit-shadows 1 fails before training")
def _(work: Path) -> str | None:
    o = pq(work, "defend ck --bits 4 --audit --audit-shadows 1 --out o8")
    bad = one_line_error(o, "--audit-shadows")
    return bad or (None if not (work / "o8").exists() else "created --out")


@case("8 static checks", "layer_bits naming a missing layer fails before training")
def _(work: Path) -> str | None:
    step = "  - {name: d, method: ptq, quant: {weight_bits: 4, layer_bits: {nosuch: 2}}}\nattacks:"
    return _fast_refusal(work, "", "nosuch", replace=("attacks:", step))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, help="folder to probe in (default: a temporary one)")
    p.add_argument("--out", type=Path, help="also write the JSON summary here")
    p.add_argument("--only", help="run the cases whose name contains this text")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="privquant-probe-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PRIVQUANT_MACHINE_CACHE", str(work / "machine.json"))
    start = time.perf_counter()
    for setup in (CK,):
        o = pq(work, setup)
        if o.rc != 0:
            sys.exit(f"setup failed: privquant {setup}\n{o.err}")
    (work / "base.yaml").write_text(BASE)
    o = pq(work, "run base.yaml --out r")
    if o.rc != 0:
        sys.exit(f"setup failed: privquant run base.yaml --out r\n{o.err}")
    rows = []
    for category, name, fn in CASES:
        if args.only and args.only not in name:
            continue
        t = time.perf_counter()
        try:
            problem = fn(work)
        except Exception as e:  # the probe's own expectation failed in an unexpected way
            problem = f"{type(e).__name__}: {e}"
        status = "pass" if problem is None else "FAIL"
        rows.append({"category": category, "case": name, "status": status, "problem": problem,
                     "seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
        print(f"{status:4}  [{category}] {name}" + (f"\n      {problem}" if problem else ""),
              flush=True)  # fmt: skip
    by_category: dict[str, dict[str, int]] = {}
    for r in rows:
        c = by_category.setdefault(r["category"], {"cases": 0, "passed": 0})
        c["cases"] += 1
        c["passed"] += r["status"] == "pass"
    from privquant.machine import machine_info

    summary = {"cases": len(rows), "passed": sum(r["status"] == "pass" for r in rows),
               "by_category": by_category, "seconds": round(time.perf_counter() - start),
               "machine": machine_info(), "results": rows}  # fmt: skip
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
