"""Tune a train-stage defense the way its user could: on a validation split of the reference rows.

A baseline is only as strong as its hyperparameters (Aerni et al. 2024 re-tune DP-SGD before
comparing). Tuning here never looks at membership: each grid point trains one population model
(``model_index``, on exactly the members, seed and recipe the audit gives it) and is scored by its
accuracy on validation rows drawn from the defender's reference rows, which no model of the audit
trains on. The rest of the reference rows stay available to the defense. Every point is cached
(one JSON each, written atomically), so an interrupted sweep resumes where it stopped, and a sweep
run as several calls into one folder (a grid refined point by point) is summarized as one: every
point recorded there for the same model, members, validation rows and code lands in ``sweep``.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from tqdm.auto import tqdm

from privquant.artifacts import ArtifactCache, atomic_write_json
from privquant.artifacts.cache import code_version, content_hash
from privquant.defenses import VariantConfig, train_model
from privquant.defenses.base import reference_order
from privquant.errors import ConfigError
from privquant.metrics.epsilon import accuracy_interval, paired_accuracy_difference_interval
from privquant.models.info import model_info
from privquant.models.registry import model_code
from privquant.pipeline.config import AuditConfig, format_errors


def grid_points(step: dict[str, Any], grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the ``grid`` values laid over ``step``, each validated as a step."""
    if not isinstance(step, dict) or "method" not in step:
        raise ConfigError(f"step: expected a mapping with a method, got {step!r}")
    for field, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{field}: expected a non-empty list of values, got {values!r}")
    fields = sorted(grid)
    points = [{**step, **dict(zip(fields, combo, strict=True))}
              for combo in itertools.product(*(grid[f] for f in fields))]  # fmt: skip
    for i, point in enumerate(points):
        try:
            variant = VariantConfig(name="tune", steps=[point])
        except ValidationError as e:
            raise ConfigError(format_errors(e, f"grid point {i} {point}")) from None
        if variant.train_step is None:
            raise ConfigError(f"step: {step['method']} is not a train-stage method")
    return points


def tune_step(
    config: AuditConfig,
    step: dict[str, Any],
    grid: dict[str, list[Any]],
    validation_rows: int,
    out: str | Path,
    model_index: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``step`` at every grid point on model ``model_index``'s members; score each on
    ``validation_rows`` reference rows, beside the same model trained without a defense
    (``plain``). Returns (and writes to ``out/tune.json``) the points ranked by validation
    accuracy, each with its accuracy cost and training time relative to ``plain``, the exact 95%
    interval of its accuracy (``validation_ci``) and of its cost, paired on the same rows
    (``accuracy_cost_ci``), and how far it trails the sweep's best (``behind_best_ci``, paired
    too); ``sweep`` ranks this call's points together with those earlier calls recorded in
    ``out`` for the same model, members, validation rows and code.
    ``seconds`` is a point's wall clock as run (a point that reused sub-teachers an earlier point
    trained counts only its own training); ``recipe_seconds`` adds the recorded training time of
    what it reused: the recipe's cost from an empty cache (``recipe_cost_vs_plain``)."""
    from privquant.pipeline.run import _preflight, prepared_split
    from privquant.population import model_factory
    from privquant.population.jobs import context_for, intermediates_identity
    from privquant.population.train import population_jobs
    from privquant.training import predict_logits

    points = grid_points(step, grid)  # every point checked before anything trains
    if not 0 <= model_index < config.population.n_models:
        raise ConfigError(f"model_index: {model_index} (the population has {config.population.n_models} models)")  # fmt: skip
    if validation_rows < 1 or validation_rows >= config.data.reference_size:
        raise ConfigError(
            f"validation_rows: {validation_rows}; expected 1 to data.reference_size - 1 "
            f"({config.data.reference_size - 1}): the validation split comes from the reference rows"
        )
    ds, split = prepared_split(config)
    config = _preflight(config, ds)
    order = reference_order(len(split.reference))  # the prefix order every method uses
    validation = split.reference[np.sort(order[:validation_rows])]
    rest = split.reference[np.sort(order[validation_rows:])]
    job = population_jobs(split, config.model.name, config.train, config.model.options)[model_index]
    model_fn = model_factory(config.model.name, ds.num_classes, config.model.options)
    out = Path(out)
    (out / "points").mkdir(parents=True, exist_ok=True)
    identity = {"dataset": ds.checksum, "model": config.model.model_dump(mode="json"),
                "train": job.train.model_dump(mode="json"), "members": job.members,
                "validation": validation, "code": code_version()}  # fmt: skip
    user_code = model_code(config.model.name)
    if user_code is not None:  # a plugin's model: an edit to its file is another model
        identity["model_code"] = user_code
    # Points that differ only in how a defense uses its intermediates (a distillation's
    # temperature, say) share them: sub-teachers train once per teacher set, not once per point.
    cache = ArtifactCache(config.cache_dir or out / "cache")
    shared = intermediates_identity(ds, config.model.name, config.model.options)

    def point_path(name: str, step: dict[str, Any] | None) -> Path:
        return out / "points" / f"{name}{content_hash({**identity, 'step': step})[:16]}.json"

    def scored(name: str, step: dict[str, Any] | None) -> dict[str, Any]:
        path = point_path(name, step)
        if path.exists():
            return _read_point(path)
        train_step = None if step is None else VariantConfig(name="tune", steps=[step]).train_step
        ctx = context_for(ds, job.members, rest, job.train, job.train.seed, model_fn, cache, shared)
        start = time.perf_counter()
        model = train_model(train_step, ctx)
        seconds = time.perf_counter() - start
        correct = predict_logits(model, ds.x_train[validation]).argmax(1) == ds.y_train[validation]
        from_scratch = seconds + ctx.reused_seconds  # nan: a reused entry did not record its time
        row = {"step": step, "validation_accuracy": float(correct.mean()),
               "validation_correct": np.packbits(correct).tobytes().hex(),
               "seconds": seconds, "recipe_seconds": None if np.isnan(from_scratch) else from_scratch,
               "defense_info": model_info(model).defense_info}  # fmt: skip
        atomic_write_json(path, row)
        return row

    # The undefended model on the same members and validation rows: what each point's accuracy
    # and training time are relative to (a defense's cost is measured, not assumed).
    plain = scored("plain-", None)
    rows = [
        scored("", point) for point in tqdm(points, desc="tune", unit="point", disable=not progress)
    ]
    # Earlier calls' points of the same identity: their file name is the hash of it and their step.
    here = {point_path("", row["step"]) for row in rows}
    earlier = []
    for f in sorted((out / "points").glob("*.json")):
        if f.name.startswith("plain-") or f in here:
            continue
        row = _read_point(f)
        if point_path("", row.get("step")) == f:  # else another model, validation split or code
            earlier.append(row)
    for row in [plain, *rows, *earlier]:
        row["validation_ci"] = list(accuracy_interval(row["validation_accuracy"], validation_rows))
    for row in [*rows, *earlier]:
        row["accuracy_cost_vs_plain"] = plain["validation_accuracy"] - row["validation_accuracy"]
        # Paired on the same rows (absent from points recorded before rows were kept): only
        # the rows the two models disagree on count, so a cost can be resolved while the two
        # accuracy intervals still overlap.
        row["accuracy_cost_ci"] = _paired_gap(plain, row, validation_rows)
        row["seconds_vs_plain"] = row["seconds"] / plain["seconds"]
        recipe = row.get("recipe_seconds")  # absent from points recorded before it was
        row["recipe_cost_vs_plain"] = None if recipe is None else recipe / plain["seconds"]
    rows.sort(key=lambda r: -r["validation_accuracy"])
    sweep = sorted([*rows, *earlier], key=lambda r: -r["validation_accuracy"])
    # Is the sweep's best resolved over each other point? Paired on the same rows, as the costs.
    for row in sweep:
        row["behind_best_ci"] = _paired_gap(sweep[0], row, validation_rows)
    summary = {"config": config.name, "model_index": model_index, "members": int(len(job.members)),
               "validation_rows": int(validation_rows), "grid": grid, "plain": plain, "points": rows,
               "best": rows[0], "sweep": sweep}  # fmt: skip
    atomic_write_json(out / "tune.json", summary)
    return summary


def _paired_gap(a: dict[str, Any], b: dict[str, Any], rows: int) -> list[float] | None:
    """95% interval of accuracy(a) - accuracy(b) paired on the validation rows each recorded
    getting right (packed bits); None where either point predates that record."""
    bits = [row.get("validation_correct") for row in (a, b)]
    if None in bits:
        return None
    correct = [np.unpackbits(np.frombuffer(bytes.fromhex(h), dtype=np.uint8))[:rows].astype(bool)
               for h in bits]  # fmt: skip
    return list(paired_accuracy_difference_interval(*correct))


def _read_point(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:  # a torn file cannot exist (atomic writes); a hand edit can
        raise ConfigError(
            f"{path}: not a tuning point record ({e}); delete it to retrain the point"
        ) from None
