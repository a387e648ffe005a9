"""One table from audits run in parts: a study too long for one session is split by variants.

Each part is a full audit of the same data, split, models and attacks (so each has its own FP32
population and every variant is attacked with its own references); only the variants differ.
Merging checks that, refuses parts that disagree, and requires a variant present in several
parts (at least FP32) to be the same: the runs are deterministic, so a difference means they did
not train the same models. "The same" is exact for everything but floats, which may differ in
their last bits (relative 1e-9): a part run on another CPU with the models and signals carried
recomputes the attacks' statistics in another summation order (measured: 5.6e-13 between the
AMX Intel and Zen 3 hosts on the same signals), while another model moves them far more (one
test row of 5,000 is 2e-4 of accuracy).
"""

from __future__ import annotations

import json
import math
from typing import Any

from privquant.errors import PrivquantError
from privquant.results.schema import AuditResults, trained_on_counts

# Floats this close are the same measurement (another CPU's summation order, not another model).
FLOAT_RTOL = 1e-9

# Config fields that must agree (the variants are what the parts split; the rest says how).
SHARED_CONFIG = ("seed", "data", "model", "train", "population", "attacks", "attack_params",
                 "targets", "naive", "bootstrap")  # fmt: skip


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def measured(value: Any) -> Any:
    """``value`` without its timings (``seconds`` keys): what a rerun must reproduce."""
    if isinstance(value, dict):
        return {k: measured(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [measured(v) for v in value]
    return value


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The path of the first value that differs between two JSON-like values (None: equal;
    floats within a relative ``FLOAT_RTOL`` count as equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}"
            found = first_difference(a[k], b[k], f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path} (length {len(a)} vs {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=FLOAT_RTOL):
        return None
    return None if _canonical(a) == _canonical(b) else f"{path} ({a!r} vs {b!r})"


def merge_results(parts: list[AuditResults], names: list[str] | None = None) -> AuditResults:
    """The variants of every part in one :class:`AuditResults` (first appearance order).

    ``names`` label the parts in errors (default: part 0, part 1, ...).
    """
    if len(parts) < 2:
        raise PrivquantError(f"merge: needs at least two results, got {len(parts)}")
    names = names or [f"part {i}" for i in range(len(parts))]
    first = parts[0]
    for name, part in zip(names[1:], parts[1:], strict=True):
        for field in ("dataset", "split"):
            if _canonical(getattr(part, field)) != _canonical(getattr(first, field)):
                raise PrivquantError(f"merge: {name} audits another {field} than {names[0]}")
        for field in SHARED_CONFIG:
            a, b = first.config.get(field), part.config.get(field)
            if _canonical(a) != _canonical(b):
                raise PrivquantError(
                    f"merge: config.{field} differs between {names[0]} and {name} "
                    f"({_canonical(a)[:120]} vs {_canonical(b)[:120]})"
                )
    variants: dict[str, Any] = {}
    came_from: dict[str, str] = {}
    for name, part in zip(names, parts, strict=True):
        for vname, v in part.variants.items():
            if vname in variants:
                where = first_difference(measured(variants[vname].model_dump(mode="json")),
                                         measured(v.model_dump(mode="json")))  # fmt: skip
                if where:
                    raise PrivquantError(
                        f"merge: variant {vname} differs between {came_from[vname]} and {name} at {where}: "
                        "the parts did not train the same models (another code commit, precision or host?)"
                    )  # fmt: skip
                continue
            variants[vname] = v
            came_from[vname] = name
    if "fp32" not in variants:
        raise PrivquantError("merge: no part has the fp32 variant, the reference of every table")
    config = dict(first.config)
    steps = {v["name"]: v for p in parts for v in p.config.get("variants", [])}
    config["variants"] = [steps[n] for n in variants if n in steps]
    timings: dict[str, float] = {}
    for part in parts:
        for k, seconds in part.timings_seconds.items():
            timings[k] = timings.get(k, 0.0) + seconds
    machine = dict(first.machine)
    if "trained_on" in machine:  # the first part's models alone otherwise
        machine["trained_on"] = trained_on_counts(variants)
    machine["parts"] = [{"name": n, "variants": [v for v in p.variants if came_from[v] == n],
                         "machine": p.machine, "timings_seconds": p.timings_seconds}
                        for n, p in zip(names, parts, strict=True)]  # fmt: skip
    warnings = list(dict.fromkeys(w for p in parts for w in p.warnings))
    findings = next((p.findings for p in parts if p.findings), None)
    if findings is not None:  # its thumbnails stay in the part's run folder
        findings = findings.model_copy(update={"image": None})
    merged = first.model_copy(update={"config": config, "variants": variants, "timings_seconds": timings,
                                      "machine": machine, "warnings": warnings, "findings": findings})  # fmt: skip
    return AuditResults.model_validate(merged.model_dump(mode="json"))
