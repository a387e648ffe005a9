"""The audit pipeline, top to bottom: data -> models -> variants -> signals -> attacks -> report.

Every expensive step is cached on disk (models and deployed variants by content hash, signals
and attack results per variant), so an interrupted run resumes where it stopped and ends with
the same numbers.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

import privquant
from privquant.artifacts import ArtifactCache, atomic_write_json, code_version, content_hash
from privquant.artifacts.atomic import atomic_write_bytes, remove_stale_temps
from privquant.artifacts.cache import MODEL_CODE_ROOTS
from privquant.attacks import run_attacks
from privquant.data import Dataset, load_dataset
from privquant.defenses import DefenseConfig, VariantConfig, get_defense
from privquant.errors import PrivquantError
from privquant.machine import machine_info
from privquant.membership import MembershipSplit, choose_canaries, make_split, plant_in_dataset
from privquant.metrics import evaluate_scores
from privquant.metrics.pooled import pooled_metrics
from privquant.pipeline.budget import step_progress
from privquant.pipeline.config import AuditConfig
from privquant.pipeline.pins import (
    Pin,
    pinned_config,
    population_key,
    resolve_pins,
    save_pins,
    slow_pin_warnings,
)
from privquant.population import DeployJob, Executor, QueryJob, query_one, train_population
from privquant.results import (
    AttackResult,
    AuditResults,
    Curves,
    Findings,
    ModelRecord,
    Pooled,
    TopPoint,
    VariantResult,
    aggregate_targets,
)
from privquant.results.schema import trained_on_counts
from privquant.signals import Signals
from privquant.training import TrainConfig
from privquant.training import precision as auto_precision
from privquant.training.precision import resolve_train_config

SIGNALS_CODE = (*MODEL_CODE_ROOTS, "privquant.signals")
ATTACK_CODE = ("privquant.attacks", "privquant.metrics", "privquant.results")
TOP_POINTS = 16  # most vulnerable points kept per attack and target


def _read_if_key(path: Path, key: str) -> dict | None:
    """A cached JSON whose recorded key matches, else None (stale entries are recomputed)."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return cached if cached.get("key") == key else None


def _steps_identity(variant: VariantConfig) -> list[Any]:
    return [[s.model_dump(mode="json"), get_defense(s.method).code] for s in variant.steps]


_population_key = population_key  # the name plan and the stages below use


def population_train(train: TrainConfig, step: DefenseConfig | None) -> TrainConfig:
    """The recipe a population under train-stage defense ``step`` is trained and keyed with."""
    # DP-SGD's models are keyed with the precision it trains in whatever ``auto`` chose here
    # (DefenseConfig.fixed_precision), so they are found on every host.
    fixed = step.fixed_precision if step is not None else None
    return train if fixed is None else train.model_copy(update=fixed)


def _train_populations(
    config: AuditConfig,
    ds: Dataset,
    split: MembershipSplit,
    cache: ArtifactCache,
    executor: Executor,
    progress: bool,
    only: Collection[str] | None = None,
    pins: dict[str, Pin] | None = None,
    before: Callable[[VariantConfig], None] | None = None,
) -> dict[str, list[Path]]:
    """One population per distinct train stage, in the config's order; variants share them.
    ``only``: the populations of these variants alone; ``pins``: precisions pinned per variant;
    ``before``: called with a population's first variant before it trains."""
    populations: dict[str, list[Path]] = {}
    for variant in config.variants:
        key = _population_key(variant)
        if key not in populations and (only is None or variant.name in only):
            if before is not None:
                before(variant)
            recipe = pinned_config(config, variant, pins or {}).train
            train = population_train(recipe, variant.train_step)
            populations[key] = train_population(ds, split, config.model.name, train, cache, config.model.options,
                                                defense=variant.train_step, executor=executor, progress=progress,
                                                stack=config.executor.stack_size(config.train.device))  # fmt: skip
    return populations


def signals_key(
    config: AuditConfig, variant: VariantConfig, ds: Dataset, split: MembershipSplit
) -> str:
    """Everything that determines a variant's signals: an edited config never reuses stale ones."""
    return content_hash({"code": code_version(SIGNALS_CODE), "config": config.identity("signals"),
                         "steps": _steps_identity(variant), "data": ds.checksum, "pool": split.pool,
                         "keep": split.keep, "reference": split.reference, "test": split.test,
                         "population": split.population, "population_part": split.population_part})  # fmt: skip


def signals_cached(
    config: AuditConfig, variant: VariantConfig, ds: Dataset, split: MembershipSplit, run_dir: Path
) -> bool:
    """Whether ``run_dir`` holds this variant's signals for exactly this config and code."""
    sig_path = run_dir / "signals" / f"{variant.name}.npz"
    meta = _read_if_key(sig_path.with_suffix(".json"), signals_key(config, variant, ds, split))
    return meta is not None and sig_path.is_file()


def _signals_for_variant(
    config: AuditConfig,
    variant: VariantConfig,
    ds: Dataset,
    split: MembershipSplit,
    checkpoints: list[Path],
    cache: ArtifactCache,
    executor: Executor,
    run_dir: Path,
    progress: bool,
) -> tuple[Signals, dict]:
    sig_path = run_dir / "signals" / f"{variant.name}.npz"
    meta_path = sig_path.with_suffix(".json")
    key = signals_key(config, variant, ds, split)
    meta = _read_if_key(meta_path, key)
    if meta is not None and sig_path.is_file():
        try:
            return Signals.load(sig_path), meta
        except PrivquantError:  # damaged (e.g. truncated by a full disk): recompute it
            pass
    jobs = []
    for m, checkpoint in enumerate(checkpoints):
        seed = config.seed + m
        train = config.train.model_copy(update={"seed": seed})
        deploy = DeployJob(index=m, checkpoint=checkpoint, members=split.members(m), train=train, seed=seed,
                           model=config.model.name, model_options=config.model.options,
                           transforms=tuple(variant.transform_steps), reference=split.reference)  # fmt: skip
        jobs.append(QueryJob(deploy, tuple(variant.output_steps), split.pool, split.population,
                             split.test if m in config.target_indices else None, config.population.queries,
                             config.population.query_shift, config.population.noise_queries,
                             split.population_part))  # fmt: skip
    start = time.perf_counter()
    outs = executor.map(query_one, jobs, desc=f"variant {variant.name}", progress=progress,
                        shared={"ds": ds, "cache": cache})  # fmt: skip
    has_population = outs[0]["population"] is not None
    population_labels = (ds.y_test if split.population_part == "test" else ds.y_train)[
        split.population
    ]
    extras = (
        {"noise_robustness": np.stack([o["robustness"] for o in outs])}
        if outs[0]["robustness"] is not None
        else {}
    )
    signals = Signals(np.stack([o["logits"] for o in outs]), ds.y_train[split.pool], split.keep,
                      np.stack([o["population"] for o in outs]) if has_population else None,
                      population_labels if has_population else None, extras)  # fmt: skip
    meta = {
        "key": key,
        "per_model": [o["record"] for o in outs],
        "seconds": time.perf_counter() - start,
    }
    signals.save(sig_path)
    atomic_write_json(meta_path, meta)
    return signals, meta


def _attack_variant(
    config: AuditConfig,
    signals: Signals,
    reference: Signals | None,
    out_path: Path,
    progress: bool,
    subsets: dict[str, np.ndarray],
) -> dict[str, AttackResult]:
    """Attack results for one variant; with ``reference``, shadows are its (full-precision) rows.

    Every target is attacked with the other models as references; each attack's scores are
    then pooled over targets on each subset of the pool (``subsets``: name -> mask)."""
    targets = config.target_indices
    key = content_hash({"code": code_version(ATTACK_CODE), "config": config.identity("attacks"),
                        "seed": config.seed, "targets": targets, "subsets": subsets, "logits": signals.logits,
                        "population": signals.population_logits, "extras": signals.extras,
                        "reference": None if reference is None else reference.logits, "keep": signals.keep})  # fmt: skip
    cached = _read_if_key(out_path, key)
    if cached is not None:
        return {a: AttackResult.model_validate(r) for a, r in cached["results"].items()}
    collected: dict[str, dict[str, Any]] = {}
    for target in tqdm(
        targets, desc=f"attack {out_path.stem}", unit="target", disable=not progress
    ):
        sig = signals if reference is None else _naive(signals, reference, target)
        res = run_attacks(sig, [target], config.attacks, params=config.attack_params, n_bootstrap=config.bootstrap,
                          seed=config.seed, progress=False, keep_scores=True)  # fmt: skip
        for name, entry in res["attacks"].items():
            slot = collected.setdefault(
                name,
                {"description": entry["description"], "per_target": {}, "curves": {}, "top": {},
                 "scores": {}},
            )  # fmt: skip
            scores, members = entry["scores"][str(target)], signals.keep[target]
            slot["per_target"][str(target)] = entry["per_target"][str(target)]
            slot["curves"][str(target)] = Curves.from_scores(scores, members)
            slot["top"][str(target)] = TopPoint.top(scores, members, TOP_POINTS)
            slot["scores"][target] = scores
    results = {}
    for name, s in collected.items():
        pooled, means = _pooled_subsets(config, signals.keep, s, subsets)
        results[name] = AttackResult.from_targets(s["description"], s["per_target"], s["curves"], s["top"],
                                                  pooled, means)  # fmt: skip
    atomic_write_json(out_path, {"key": key, "results": {a: r.model_dump(mode="json") for a, r in results.items()}},
                      sort_keys=False)  # fmt: skip
    return results


def _pooled_subsets(
    config: AuditConfig, keep: np.ndarray, slot: dict[str, Any], subsets: dict[str, np.ndarray]
) -> tuple[dict[str, Pooled], dict[str, dict[str, float]]]:
    """Per subset: metrics pooled over targets, and per-target metrics averaged over targets."""
    pooled, means = {}, {}
    targets = list(slot["scores"])
    for subset, mask in subsets.items():
        scores = [slot["scores"][t][mask] for t in targets]
        members = [keep[t][mask] for t in targets]
        thresholds = [slot["per_target"][str(t)]["threshold"] for t in targets]
        predicted = [s >= thr for s, thr in zip(scores, thresholds, strict=True)]
        flat_s, flat_m = np.concatenate(scores), np.concatenate(members)
        metrics = pooled_metrics(
            scores, members, predicted, n_bootstrap=config.bootstrap, seed=config.seed
        )
        roc = Curves.from_scores(flat_s, flat_m) if flat_m.any() and not flat_m.all() else None
        pooled[subset] = Pooled(**metrics, roc=roc)
        if subset != "all":
            per = {str(t): evaluate_scores(s, m, thr, n_bootstrap=0)
                   for t, s, m, thr in zip(targets, scores, members, thresholds, strict=True)
                   if m.any() and not m.all()}  # fmt: skip
            if per:
                means[subset] = aggregate_targets(per)[0]
    return pooled, means


def _naive(signals: Signals, reference: Signals, target: int) -> Signals:
    """The naive attacker: the target under the variant, every shadow at full precision."""
    logits = reference.logits.copy()
    logits[target] = signals.logits[target]
    population = None
    if reference.population_logits is not None and signals.population_logits is not None:
        population = reference.population_logits.copy()
        population[target] = signals.population_logits[target]
    extras = {}
    for k in signals.extras.keys() & reference.extras.keys():
        extras[k] = reference.extras[k].copy()
        extras[k][target] = signals.extras[k][target]
    return Signals(
        logits, signals.labels, signals.keep, population, signals.population_labels, extras
    )


def _findings(
    results: AuditResults, ds: Dataset, split: MembershipSplit, run_dir: Path
) -> Findings | None:
    """The most vulnerable points of the first target under the strongest attack on FP32."""
    attack, fp = results.headline_attack(), results.variants.get("fp32")
    target = str(results.targets[0])
    if fp is None or attack not in fp.attacks or target not in fp.attacks[attack].top_points:
        return None
    top = fp.attacks[attack].top_points[target]
    rows = [int(split.pool[p.index]) for p in top]
    image = None
    if ds.kind == "image":
        from privquant.report.plots import thumbnails_figure

        image = "figures/vulnerable.png"
        atomic_write_bytes(run_dir / image, thumbnails_figure(ds.x_train[rows], [ds.classes[ds.y_train[r]] for r in rows],
                                                              [p.member for p in top], [p.score for p in top]))  # fmt: skip
    return Findings(attack=attack, variant="fp32", target=int(target), image=image,
                    points=[{"pool_index": p.index, "dataset_row": r, "label": int(ds.y_train[r]), "member": p.member,
                             "score": p.score} for p, r in zip(top, rows, strict=True)])  # fmt: skip


def _preflight(config: AuditConfig, ds: Dataset) -> AuditConfig:
    """Checks that need the data: everything that would otherwise fail after hours of training.

    Returns the config to compute with: ``precision: auto`` resolved once, here, by measuring the
    model's training step (workers then all train alike, and the choice enters every cache key).
    """
    from privquant.errors import ConfigError
    from privquant.population import model_factory
    from privquant.quant.apply import layer_bits_map
    from privquant.training.device import resolve_device

    try:
        resolve_device(config.train.device)
    except RuntimeError as e:
        raise ConfigError(f"train.device: {e}") from None
    model = model_factory(config.model.name, ds.num_classes, config.model.options)(ds.x_train[:2])
    for variant in config.variants:
        for i, step in enumerate(variant.steps):
            quant = getattr(step, "quant", None)
            if quant is not None and quant.layer_bits:
                try:
                    layer_bits_map(model, quant)
                except ConfigError as e:
                    raise ConfigError(f"variants.{variant.name}.steps.{i}.quant.{e}") from None
    known = set(auto_precision.CHOICES)
    train = resolve_train_config(config.train, model, *_timing_sample(ds), config.model.name)
    for key, choice in auto_precision.CHOICES.items():
        if key not in known and choice.source == "measured" and choice.timed_on_shared_cpu:
            # Another job slows fp32 and bf16 unequally: this run keeps the choice (its models
            # train alike), the machine cache marks it, and the next run times again.
            print(f"privquant: warning: precision: auto was timed while the CPU was shared (other processes left "
                  f"this one {choice.cpu_share:.0%} of its threads' time) and chose {train.precision}; the next run "
                  f"times it again, and a timing on an idle machine replaces it in "
                  f"{auto_precision.cache_path()}", file=sys.stderr)  # fmt: skip
    return config.model_copy(update={"train": train})


def _timing_sample(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A few training rows as the model sees them, to time its training step on."""
    x = torch.as_tensor(ds.x_train[:64])
    return (x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()), torch.as_tensor(
        ds.y_train[:64]
    )


def _build_executor(config: AuditConfig, ds: Dataset) -> tuple[Executor, dict[str, Any]]:
    """The run's executor; ``workers: auto`` measured for this model on this machine."""
    from privquant.population import model_factory
    from privquant.population.workers import choose_workers

    ex = config.executor
    if ex.kind != "local" or ex.workers != "auto":
        n = ex.workers if ex.kind == "local" else None
        return ex.build(), {"workers": n, "source": "configured"}
    model = model_factory(config.model.name, ds.num_classes, config.model.options)(ds.x_train[:2])
    choice = choose_workers(config.train, model, *_timing_sample(ds), config.model.name)
    return ex.build(workers=choice.workers), choice.to_dict()


def _mean_info(infos: list[dict[str, float]]) -> dict[str, float] | None:
    """Each recorded quantity averaged over the targets that recorded it (a calibration may ship
    different candidates to different targets, each with its own record)."""
    keys = sorted({k for i in infos for k in i})
    return {k: float(np.mean([i[k] for i in infos if k in i])) for k in keys} or None


RESULT_FILES = ("results.json", "report.md", "report.html")
PREVIOUS = ".previous"  # the last complete results, kept until a new set is complete


def _start_run_folder(config: AuditConfig, run_dir: Path, split: MembershipSplit) -> None:
    """Record config and split. Results of a different earlier config are moved aside (not
    deleted): they come back if this run fails, and go only once its results are complete. A
    config file the user keeps in the folder (``privquant run exp/config.yaml --out exp``) is
    never overwritten; the normalized config then goes to ``config.normalized.yaml``."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    record = _config_record(config, run_dir)
    previous = run_dir / record
    if previous.is_file() and previous.read_bytes() != text:
        aside = run_dir / PREVIOUS
        aside.mkdir(exist_ok=True)
        for name in (*RESULT_FILES, record, "split.npz"):
            if (run_dir / name).is_file() and not (aside / name).exists():
                (run_dir / name).replace(aside / name)
    remove_stale_temps(run_dir)
    atomic_write_bytes(run_dir / record, text)
    split.save(run_dir / "split.npz")


def _config_record(config: AuditConfig, run_dir: Path) -> str:
    source = config.source_path
    mine = source is not None and source.resolve() == (run_dir / "config.yaml").resolve()
    return "config.normalized.yaml" if mine else "config.yaml"


def _restore_previous(run_dir: Path) -> None:
    """After a failed run: the earlier complete results (and their config) back in place."""
    aside = run_dir / PREVIOUS
    if not aside.is_dir():
        return
    for f in aside.iterdir():
        f.replace(run_dir / f.name)
    aside.rmdir()


def _drop_previous(run_dir: Path) -> None:
    aside = run_dir / PREVIOUS
    if aside.is_dir():
        for f in aside.iterdir():
            f.unlink()
        aside.rmdir()


class RunLock:
    """One run at a time per folder: a second ``privquant run`` into it stops with who holds it.

    The lock names its process and host; one left by a killed run (process gone) is taken over.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"

    def __enter__(self) -> RunLock:
        import os
        import socket

        from privquant.artifacts.atomic import process_alive
        from privquant.errors import ConfigError

        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    held = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    held = {}
                pid, host = held.get("pid"), held.get("host")
                if isinstance(pid, int) and (host != me["host"] or process_alive(pid)):
                    raise ConfigError(
                        f"{self.path.parent}: another privquant run (pid {pid} on {host}) is "
                        f"writing this folder; wait for it or choose another --out (if no run is "
                        f"active, delete {self.path})"
                    ) from None
                self.path.unlink(missing_ok=True)  # left by a run that was killed
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise ConfigError(f"{self.path}: could not take the run folder's lock")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def prepared_split(
    config: AuditConfig, dataset: Dataset | None = None
) -> tuple[Dataset, MembershipSplit]:
    """The dataset (canaries planted) and membership split that ``config`` audits: what every
    stage, and anything tuned for the run (:mod:`privquant.pipeline.tune`), trains on."""
    ds = dataset if dataset is not None else load_dataset(config.data.name)
    split = make_split(len(ds.y_train), len(ds.y_test), config.data.pool_size, config.population.n_models,
                       config.data.reference_size, config.data.test_size, seed=config.seed,
                       balanced=config.population.balanced, population_size=config.data.population_size,
                       population_part=config.data.population_source,
                       ordered=config.data.rows == "ordered")  # fmt: skip
    if config.population.target_members is not None:
        split = split.with_target_members(config.population.target_members)
    canaries = choose_canaries(
        config.data.canaries, ds.y_train[split.pool], ds.num_classes, config.seed
    )
    ds = plant_in_dataset(ds, split.pool, canaries, config.seed)
    return ds, split.with_canaries(canaries)


def run_audit(
    config: AuditConfig,
    run_dir: str | Path,
    progress: bool = True,
    *,
    dataset: Dataset | None = None,
    target: nn.Module | None = None,
    pins: dict[str, Pin] | None = None,
) -> AuditResults:
    """Run the whole audit described by ``config`` into ``run_dir``; return its results.

    Nothing in ``run_dir`` is touched until the data loads, the split is drawn and the config
    passes the checks that need the data (model options, device, layer names). ``dataset``
    replaces loading ``config.data.name`` (in-memory data, as :func:`audit_model` passes).
    ``target`` is an already trained model 0 (of the config's architecture, trained on the
    first ``population.target_members`` pool rows): it stands in for model 0 of the plain
    population instead of being trained here; train-stage variants still retrain model 0.
    ``pins``: precisions pinned per variant (:mod:`privquant.pipeline.pins`), added to those
    ``run_dir`` already records, and recorded there.
    """
    from privquant.errors import ConfigError

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    if target is not None and config.population.target_members is None:
        raise ConfigError("target: a trained model 0 needs population.target_members (its rows)")
    if target is not None and config.data.canaries.count:
        raise ConfigError("data.canaries: a model trained beforehand never saw planted canaries; "
                          "audit it with canaries: {count: 0}")  # fmt: skip
    ds, split = prepared_split(config, dataset)
    user_config, config = config, _preflight(config, ds)
    pins = resolve_pins(config, run_dir, pins)
    _warn_slow_pins(pins, config.train.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        _start_run_folder(user_config, run_dir, split)
        save_pins(run_dir, pins)
        try:
            results = _run_stages(
                user_config, config, ds, split, run_dir, progress, t0, target, pins
            )
        except BaseException:
            _restore_previous(run_dir)
            raise
        _drop_previous(run_dir)
    return results


def _warn_slow_pins(pins: dict[str, Pin], device: str) -> None:
    for warning in slow_pin_warnings(pins, device):
        print(f"privquant: warning: {warning}", file=sys.stderr)


def _budget_estimates(
    config: AuditConfig, ds: Dataset, run_dir: str | Path, pins: dict[str, Pin]
) -> dict[str, tuple[float, float, str]]:
    """Per variant, what one step and one model of its population should take here, and why
    (``privquant plan``'s prices, from training steps timed now in the precision the population
    trains in): a time budget told them starts none that cannot finish in time."""
    from privquant.pipeline.plan import plan_run

    plan = plan_run(config, run_dir, dataset=ds, pins=pins)
    return {
        name: (p.step_seconds, p.model_seconds,
               f"{p.precision} timed at {p.train_images_per_second:,.0f} img/s")
        for p in plan.populations for name in p.variants
    }  # fmt: skip


def train_only(
    config: AuditConfig,
    run_dir: str | Path,
    variants: Collection[str] | None = None,
    progress: bool = True,
    hours: float | None = None,
    pins: dict[str, Pin] | None = None,
) -> dict[str, list[Path]]:
    """Train (or find in the cache) the models of ``variants`` (default: every variant) and stop.

    For a study longer than a session: each session adds finished models to the cache (an
    interrupted model is not kept), ``scripts/carry_cache.py`` carries them to the next, and a
    final ``run_audit`` finds them all. Writes nothing in ``run_dir`` but its default cache and
    its pins. ``hours``: train within this much time, judged per step that lands in the cache
    (a defense's teacher, a model): no model starts unless the slowest step so far fits (before
    one has run, its price from training steps timed here, as ``privquant plan`` prices it), and
    a model stops right after a step once the next would not fit
    (:class:`privquant.pipeline.budget.BudgetReached` then says what is left; the finished steps
    are in the cache). ``pins``: as for
    :func:`run_audit`. Returns each variant's checkpoint folders.
    """
    from privquant.errors import ConfigError
    from privquant.training.device import resolve_device

    names = [v.name for v in config.variants]
    unknown = sorted(set(variants or ()) - set(names))
    if unknown:
        raise ConfigError(
            f"variants: {', '.join(unknown)} not in the config (it has {', '.join(names)})"
        )
    ds, split = prepared_split(config)
    user_config, config = config, _preflight(config, ds)
    pins = resolve_pins(config, run_dir, pins)
    if pins:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_pins(run_dir, pins)
    _warn_slow_pins(pins, config.train.device)
    cache = ArtifactCache(config.cache_dir or Path(run_dir) / "cache")
    # Priced before the budget's clock starts (the timings take seconds, on a slow host a minute),
    # and only for a run on the CPU: plan times steps on the CPU, which would price a GPU's
    # models at many times what they take there.
    estimates: dict[str, tuple[float, float, str]] = {}
    if hours is not None and resolve_device(config.train.device).type == "cpu":
        estimates = _budget_estimates(user_config, ds, run_dir, pins)
    executor, _ = _build_executor(config, ds)
    before = None
    if hours is not None:
        from privquant.pipeline.budget import BudgetExecutor

        budget = BudgetExecutor(
            executor, hours * 3600, getattr(executor, "workers", 1), watch=cache.root
        )

        def before(variant: VariantConfig) -> None:
            if variant.name in estimates:
                budget.expect(*estimates[variant.name])

        executor = budget
    elif progress:
        executor = step_progress(executor, cache.root)
    try:
        populations = _train_populations(
            config, ds, split, cache, executor, progress, only=variants, pins=pins, before=before
        )
    finally:
        if hasattr(executor, "close"):
            executor.close()
    return {v.name: populations[_population_key(v)] for v in config.variants
            if _population_key(v) in populations}  # fmt: skip


def _place_target(
    config: AuditConfig,
    ds: Dataset,
    split: MembershipSplit,
    cache: ArtifactCache,
    target: nn.Module,
) -> None:
    """Put a model trained beforehand where the pipeline looks for model 0 of the plain
    population, so every later stage treats it like a model it trained. An entry already there
    (a cache shared with an earlier audit) must hold these very weights."""
    from privquant.artifacts import load_checkpoint, save_checkpoint
    from privquant.errors import ConfigError
    from privquant.population import population_jobs
    from privquant.population.jobs import checkpoint_meta, job_key

    job = population_jobs(split, config.model.name, config.train, config.model.options)[0]
    key = job_key(job, ds, cache)
    state = {k: v.detach().cpu() for k, v in target.state_dict().items()}
    found = cache.get(key)
    if found is not None:
        cached, _ = load_checkpoint(found)
        same = cached.state_dict().keys() == state.keys() and all(
            torch.equal(cached.state_dict()[k], v) for k, v in state.items()
        )
        if not same:
            raise ConfigError(f"cache_dir: {found} holds another model 0 for these rows and "
                              "recipe; audit into a fresh cache_dir")  # fmt: skip
        return
    cache.get_or_create(
        key, lambda folder: save_checkpoint(folder, target, checkpoint_meta(job, ds, target))
    )


def _run_stages(user_config: AuditConfig, config: AuditConfig, ds: Dataset, split: MembershipSplit,
                run_dir: Path, progress: bool, t0: float, target: nn.Module | None = None,
                pins: dict[str, Pin] | None = None) -> AuditResults:  # fmt: skip
    """Train, query, attack, report: everything after the run folder is set up."""
    pins = pins or {}
    timings: dict[str, float] = {}
    cache = ArtifactCache(config.cache_dir or run_dir / "cache")
    if target is not None:
        plain = next(v for v in config.variants if v.train_step is None)  # the config requires one
        _place_target(pinned_config(config, plain, pins), ds, split, cache, target)

    start = time.perf_counter()
    executor, workers = _build_executor(config, ds)
    trainer = step_progress(executor, cache.root) if progress else executor
    populations = _train_populations(config, ds, split, cache, trainer, progress, pins=pins)
    timings["train_models"] = time.perf_counter() - start

    variants: dict[str, VariantResult] = {}
    signals: dict[str, Signals] = {}
    start = time.perf_counter()
    for variant in config.variants:
        checkpoints = populations[_population_key(variant)]
        signals[variant.name], meta = _signals_for_variant(pinned_config(config, variant, pins), variant, ds, split,
                                                           checkpoints, cache, executor, run_dir, progress)  # fmt: skip
        per_model = [ModelRecord(**r) for r in meta["per_model"]]
        targets = [per_model[t] for t in config.target_indices]
        infos = [r.defense_info for r in targets if r.defense_info]
        scored = [r.test_accuracy for r in targets]
        scored = None if None in scored else scored  # no test rows (audit_model without test)
        variants[variant.name] = VariantResult(
            steps=[s.model_dump(mode="json") for s in variant.steps],
            description=variant.describe(),
            bits=targets[0].bits,
            size_bytes=targets[0].size_bytes,
            test_accuracy=None if scored is None else float(np.mean(scored)),
            test_accuracy_std=None if scored is None else float(np.std(scored)),
            train_accuracy=float(np.mean([r.train_accuracy for r in targets])),
            per_model=per_model,
            defense_info=_mean_info(infos),
        )
    timings["variants_and_signals"] = time.perf_counter() - start
    if hasattr(executor, "close"):  # worker processes are not needed for the attacks
        executor.close()

    start = time.perf_counter()
    subsets = split.canaries.masks(len(split.pool))
    if not split.canaries.count:
        subsets = {"all": subsets["all"]}
    for variant in config.variants:
        out = run_dir / "attacks" / f"{variant.name}.json"
        v = variants[variant.name]
        v.attacks = _attack_variant(config, signals[variant.name], None, out, progress, subsets)
        if config.naive and variant.name != "fp32":
            naive = out.with_suffix(".naive.json")
            v.attacks_naive_fp32_shadows = _attack_variant(
                config, signals[variant.name], signals["fp32"], naive, progress, subsets
            )
    timings["attacks"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - t0

    results = AuditResults(
        privquant_version=privquant.__version__,
        config=user_config.model_dump(mode="json"),
        dataset={k: v for k, v in ds.info().items() if k != "extra"},
        split=split.summary(),
        machine={
            **machine_info(),
            "workers": workers,
            "stack": config.executor.stack_size(config.train.device),
            "trained_on": trained_on_counts(variants),
            # This run's own resolution: machine.precision lists every decision of the process,
            # and a notebook or a test suite audits many models in one
            "train_precision": {
                "precision": config.train.precision,
                "channels_last": config.train.channels_last,
            },
            **({"precision_pins": pins} if pins else {}),
        },
        timings_seconds=timings,
        variants=variants,
    )
    results.fill_relative_changes()
    results.warnings = results.degenerate_warnings()
    results.findings = _findings(results, ds, split, run_dir)
    results.save(run_dir / "results.json")
    from privquant.report import render_report

    render_report(results, run_dir)
    return results
