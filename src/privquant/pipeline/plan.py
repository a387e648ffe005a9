"""What a run still has to compute, and about how long that takes on this machine, before it starts.

A long audit is sized from a per-model time measured on the machine that runs it (hosts here
have differed 3x). :func:`plan_run` draws the run's split, looks up every model, sub-teacher,
deployed model and signals file the run would use (under the keys the run uses, so what it
finds is what the run will find), times one training step and one inference batch of the
config's model here, and prices what is missing in units of one plain model's training.

The prices are a model, not a measurement of the run: on the hosts measured, training as
runs do it took 0.8-1.05x the time the step timing predicts (data augmentation, evaluation).
DP-SGD is priced from its own steps timed here (per-example gradients in fp32 with GroupNorm, as
dp_sgd trains), since its cost against plain training differs by host (8x where bf16 is fast,
2-3x on a host where plain training is fp32 too); without Opacus, from one host's measurement
(docs/results/dp_throughput.md). A population pinned to another precision than the one chosen
here (:mod:`privquant.pipeline.pins`) is priced from that precision's own steps timed here: bf16
trained ResNet-20 about 10x slower than fp32 on an AVX2-only host, 2-3x faster on an AVX512-BF16
one. Attacks (minutes) are not priced.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privquant.artifacts import ArtifactCache
from privquant.data import Dataset
from privquant.defenses import DefenseConfig
from privquant.membership import MembershipSplit
from privquant.pipeline.config import AuditConfig
from privquant.pipeline.pins import Pin, pinned_config, resolve_pins
from privquant.pipeline.run import (
    _population_key,
    _preflight,
    _timing_sample,
    population_train,
    prepared_split,
    signals_cached,
)

# Plain-model trainings per model for train-stage methods that cost about one; the others are
# priced in _train_units from their own fields.
ONE_TRAINING = {"relaxloss", "hamp", "label_smoothing", "weight_decay", "early_stopping"}
# DP-SGD's per-example gradients against plain bf16 training, rows/s on the AMX host
# (docs/results/dp_throughput.md): 8.1x at augmentation multiplicity 1, 44x at 4. Used only
# where Opacus is missing (nothing to time).
DP_FACTOR = {1: 8.1, 4: 44.0}
# Per-example gradients per second fell to 0.73x at multiplicity 4 on that host (98 vs 134):
# K copies of a row cost K gradients and this much more.
DP_MULTIPLICITY_OVERHEAD = {1: 1.0, 4: 1.36}
# A QAT epoch against a plain one: fake quantization with BatchNorm kept live (27% more per
# epoch than folded in docs/results/defense.md's probe); a guess on the high side.
QAT_FACTOR = 1.25
TRAIN_SECONDS = 2.0  # timing budget of each measurement


@dataclass
class PopulationPlan:
    """One population (plain, or one train-stage defense) and what of it is missing."""

    train_step: str
    variants: list[str]
    models: int
    cached: int
    units_per_model: float  # plain-model trainings one missing model costs
    teachers_cached: int = 0  # split_distill: sub-teachers of missing models already cached
    teacher_units: float = 0.0  # what one cached teacher saves
    seconds: float = 0.0
    precision: str = ""  # what its missing models train in (a pin, or the run's choice here)
    train_images_per_second: float = 0.0  # that precision's training speed here
    model_seconds: float = 0.0  # one model of it here, from scratch
    step_seconds: float = 0.0  # its longest step that lands in the cache alone (a sub-teacher...)
    notes: list[str] = field(default_factory=list)


@dataclass
class VariantPlan:
    """One variant's deployment (transform steps) and queries."""

    name: str
    signals_cached: bool
    transforms_to_run: int
    transform_units: float  # plain-model trainings per transformed model
    query_images: int  # images the variant's queries still have to run through a model
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class RunPlan:
    name: str
    cache_dir: str
    run_dir: str
    members_per_model: float
    epochs: int
    precision: str
    train_images_per_second: float
    infer_images_per_second: float
    plain_model_seconds: float
    cpu_share: float  # of its threads' time, what other processes left this one while timing
    populations: list[PopulationPlan]
    variants: list[VariantPlan]
    total_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [
            f"plan: {self.name} (cache {self.cache_dir}, run folder {self.run_dir})",
            f"measured here: training {self.precision} {self.train_images_per_second:,.0f} img/s, "
            f"inference {self.infer_images_per_second:,.0f} img/s; one plain model "
            f"({self.members_per_model:,.0f} members x {self.epochs} epochs) ~ "
            f"{_duration(self.plain_model_seconds)}",
            "",
            f"{'population':<22} {'models':>6} {'cached':>6} {'cost/model':>10} {'to do':>9}"
            "  variants",
        ]
        for p in self.populations:
            extra = f" ({p.teachers_cached} sub-teachers cached)" if p.teachers_cached else ""
            if p.precision != self.precision and p.train_images_per_second:
                extra += f" [trains in {p.precision}: {p.train_images_per_second:,.0f} img/s here]"
            if 0 < p.step_seconds < p.model_seconds:  # what a session's --hours must leave room for
                extra += f" [lands in steps of up to {_duration(p.step_seconds)}]"
            lines.append(
                f"{p.train_step:<22} {p.models:>6} {p.cached:>6} {p.units_per_model:>9.2f}x "
                f"{_duration(p.seconds):>9}  {', '.join(p.variants)}{extra}"
            )
        lines += [
            "",
            f"{'variant':<22} {'signals':>8} {'deploy':>6} {'query img':>10} {'to do':>9}",
        ]
        for v in self.variants:
            lines.append(
                f"{v.name:<22} {'cached' if v.signals_cached else 'to do':>8} "
                f"{v.transforms_to_run:>6} {v.query_images:>10,} {_duration(v.seconds):>9}"
            )
        lines += ["", f"total: ~{_duration(self.total_seconds)} (attacks not included)"]
        notes = [*self.notes, *(n for p in self.populations for n in p.notes)]
        notes += [n for v in self.variants for n in v.notes]
        lines += [f"note: {n}" for n in dict.fromkeys(notes)]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "0"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def dp_gradients_per_second(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    seconds: float,
    per_example: str = "hooks",
) -> float | None:
    """Per-example gradients per second of DP-SGD steps on a copy of ``model`` as dp_sgd trains
    it (BatchNorm as GroupNorm, fp32, per-example gradients the ``per_example`` way, clipping);
    None without Opacus."""
    import copy

    try:
        import opacus  # noqa: F401
    except ImportError:
        return None
    from privquant.defenses.dp_sgd import per_example_module, prepare_for_dp

    model = copy.deepcopy(model).float().train()
    prepare_for_dp(model)
    wrapped = per_example_module(model, per_example)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(wrapped(x), y)
        loss.backward()
        norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in params]).norm(dim=0)
        scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)
        for p in params:  # the clipped sum, as the DP optimizer forms it
            p.grad = torch.einsum("i,i...->...", scale, p.grad_sample)
            p.grad_sample = None

    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        step()  # warm-up
        steps, start = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - start < seconds:
            step()
            steps += 1
    rate = steps * len(x) / (time.perf_counter() - start)
    wrapped._close()
    return rate


def _train_units(
    step: DefenseConfig | None,
    members: float,
    epochs: int,
    reference_size: int,
    dp_factor: float | None = None,
) -> tuple[float, float, list[str]]:
    """(plain trainings per model, of which one sub-teacher, notes) for a train stage;
    ``dp_factor``: a DP-SGD row's time against a plain one's, measured here."""
    if step is None:
        return 1.0, 0.0, []
    method = step.method
    if method == "split_distill":
        teacher = 1 - step.exclusions / step.teachers  # each trains without its withheld share
        student = (
            (members + step.reference_rows) / members * (step.student_epochs or epochs) / epochs
        )
        return step.teachers * teacher + student, teacher, []
    if method == "reference_distill":
        rows = step.reference_rows or reference_size
        return 1 + rows / members, 0.0, []
    if method == "with_reference_rows":
        return (members + step.rows) / members, 0.0, []
    if method == "dp_sgd":
        k = step.augment_multiplicity
        if dp_factor is None:
            factor = DP_FACTOR.get(k, DP_FACTOR[4] / 4 * k)
            note = f"dp_sgd priced at {factor:g}x plain (multiplicity {k}, one host's measurement)"
        else:
            factor = dp_factor * k * DP_MULTIPLICITY_OVERHEAD.get(k, DP_MULTIPLICITY_OVERHEAD[4])
            batch = f"batch {step.batch_size}" if step.batch_size else "the recipe's batch"
            note = (f"dp_sgd priced at {factor:.1f}x plain: its per-example-gradient step timed here at "
                    f"{batch} ({dp_factor:.1f}x a plain row), x{k} copies per row")  # fmt: skip
        return factor * (step.epochs or epochs) / epochs, 0.0, [note]
    if method in ONE_TRAINING:
        notes = ["early_stopping priced as the full recipe (it may stop sooner)"]
        return 1.0, 0.0, notes if method == "early_stopping" else []
    return 1.0, 0.0, [f"{method}: not priced, counted as one plain training"]


def _transform_units(steps: list[DefenseConfig], epochs: int) -> tuple[float, list[str]]:
    units, notes = 0.0, []
    for step in steps:
        if step.method == "qat":
            units += QAT_FACTOR * step.epochs / epochs
        elif step.method != "ptq":
            notes.append(f"{step.method}: deployment step not priced")
    return units, notes


class _Missing(Exception):
    """A sub-teacher the cache does not hold (the probe stops at the first)."""


class _TeacherProbe:
    """A read-only view of a cache that counts the entries found until the first missing one."""

    def __init__(self, cache: ArtifactCache) -> None:
        self.cache, self.found = cache, 0

    def key(self, **parts: Any) -> str:
        return self.cache.key(**parts)

    def get_or_create(self, key: str, build: Any) -> Path:
        found = self.cache.get(key)
        if found is None:
            raise _Missing
        self.found += 1
        return found


def _cached_teachers(job: Any, ds: Dataset, cache: ArtifactCache) -> int:
    """Sub-teachers of ``job``'s split_distill already cached (they train in order, so the
    ones before the first missing one are what an interrupted model left)."""
    from privquant.defenses.distillation import split_teacher_targets
    from privquant.population import model_factory
    from privquant.population.jobs import context_for

    probe = _TeacherProbe(cache)
    # The identity train_job_model gives a registered model's defense context.
    identity = {"dataset": ds.checksum, "model": job.model, "options": job.model_options}
    model_fn = model_factory(job.model, ds.num_classes, job.model_options)
    ctx = context_for(ds, job.members, job.reference, job.train, job.train.seed, model_fn,
                      probe, identity)  # fmt: skip
    with contextlib.suppress(_Missing):
        split_teacher_targets(job.defense, ctx)
    return probe.found


def _inference_speed(model: torch.nn.Module, x: np.ndarray) -> float:
    """Images per second of the queries' inference: fp32, in the layout the audit queries this
    model in (channels_last read BatchNorm ResNet-20 1.15-1.6x faster on a Zen 4 host)."""
    from privquant.signals.layout import query_layout, rows_per_second
    from privquant.training.trainer import to_model_input

    xb = to_model_input(torch.as_tensor(x[:512]))
    return rows_per_second(model, xb, query_layout(model, x), TRAIN_SECONDS)


def _query_images(config: AuditConfig, ds: Dataset, split: MembershipSplit) -> int:
    """Images a variant's queries run through models: every model on the pool and population
    rows under each query view, the targets also on their test rows."""
    from privquant.signals import query_views

    queries = ds.kind, config.population.queries, config.population.query_shift
    views = 1 + len(query_views(*queries))
    per_model = (len(split.pool) + len(split.population)) * views
    per_model += len(split.pool) * config.population.noise_queries
    return per_model * split.n_models + len(split.test) * len(config.target_indices)


def plan_run(
    config: AuditConfig,
    run_dir: str | Path,
    *,
    dataset: Dataset | None = None,
    pins: dict[str, Pin] | None = None,
) -> RunPlan:
    """What ``run_audit(config, run_dir, pins=pins)`` would still compute here, and an estimate
    of its time (nothing is written)."""
    from privquant.population import model_factory, population_jobs
    from privquant.population.deploy import DeployJob, deploy_key
    from privquant.population.jobs import job_key
    from privquant.training.precision import (
        SHARED_CPU,
        Candidate,
        cpu_share,
        one_batch,
        start_clock,
        time_candidate,
    )

    run_dir = Path(run_dir)
    ds, split = prepared_split(config, dataset)
    resolved = _preflight(config, ds)
    pins = resolve_pins(resolved, run_dir, pins)
    cache = ArtifactCache(resolved.cache_dir or run_dir / "cache")
    train = resolved.train
    notes: list[str] = []

    model = model_factory(config.model.name, ds.num_classes, config.model.options)(ds.x_train[:64])
    x, y = _timing_sample(ds)
    xb, yb, _ = one_batch(x, y, train.batch_size)
    is_image = xb.dim() == 4

    def candidate_of(recipe: Any) -> Candidate:
        return Candidate(recipe.precision, bool(recipe.channels_last) and is_image)

    candidate = candidate_of(train)
    clock = start_clock()
    train_speed = time_candidate(model, xb, yb, candidate, TRAIN_SECONDS)
    speeds = {candidate: train_speed}

    def speed_of(trains_in: Candidate) -> float:
        """Training speed here in ``trains_in`` (a pinned precision timed on first use)."""
        if trains_in not in speeds:
            speeds[trains_in] = time_candidate(model, xb, yb, trains_in, TRAIN_SECONDS)
        return speeds[trains_in]

    infer_speed = _inference_speed(model.eval(), ds.x_train[:512])
    # Another job on the cores makes every figure below read low: say so rather than plan on it.
    share = cpu_share(clock)
    if share < SHARED_CPU:
        notes.append(f"the CPU was shared while timing (other processes left this one {share:.0%} "
                     f"of its {torch.get_num_threads()} threads' time): the estimate reads high; plan "
                     "on an idle machine")  # fmt: skip
    if train.device not in ("cpu", "auto") or torch.cuda.is_available():
        notes.append("timed on the CPU: the estimate does not describe a GPU run")
    members = float(np.mean([len(split.members(m)) for m in range(split.n_models)]))
    plain_seconds = members * train.epochs / train_speed
    # DP-SGD timed at each of its batch sizes (per-example gradients cost more per row in a larger
    # batch: ε = 8 at batch 512 took 55 min where batch 128's timing said 44, session 15) and in
    # its way of computing them.
    dp_factors: dict[tuple[int, str], float | None] = {}

    def dp_way(step: Any) -> tuple[int, str]:
        return step.batch_size or train.batch_size, step.per_example

    for variant in config.variants:
        step = variant.train_step
        if step is not None and step.method == "dp_sgd" and dp_way(step) not in dp_factors:
            batch, per_example = dp_way(step)
            xd, yd, _ = one_batch(x, y, batch, cap=1024)
            dp_speed = dp_gradients_per_second(model, xd, yd, TRAIN_SECONDS, per_example)
            dp_factors[batch, per_example] = None if dp_speed is None else train_speed / dp_speed

    populations: dict[str, PopulationPlan] = {}
    checkpoints: dict[str, list[Path | None]] = {}
    for variant in config.variants:
        key = _population_key(variant)
        if key in populations:
            populations[key].variants.append(variant.name)
            continue
        step = variant.train_step
        dp_factor = (dp_factors.get(dp_way(step))
                     if step is not None and step.method == "dp_sgd" else None)  # fmt: skip
        units, teacher, step_notes = _train_units(step, members, train.epochs,
                                                  config.data.reference_size, dp_factor)  # fmt: skip
        recipe = pinned_config(resolved, variant, pins).train
        jobs = population_jobs(
            split, config.model.name, population_train(recipe, step), config.model.options, step
        )
        found = [cache.get(job_key(j, ds, cache)) for j in jobs]
        trains_in = candidate_of(recipe)
        speed = speed_of(trains_in) if None in found else speeds.get(trains_in, 0.0)
        if trains_in != candidate and None in found:
            # A pin keeps the precision the carried models trained in; on a host without fast
            # bf16 that precision can cost 10x what auto chose here: price it at its own speed.
            notes.append(f"{variant.name}: pinned to {trains_in.name}, timed here at {speed:,.0f} img/s "
                         f"({train_speed / speed:.1f}x the time of {candidate.name}); its models "
                         "still to train are priced at that speed")  # fmt: skip
        teachers = 0
        if step is not None and step.method == "split_distill":
            teachers = sum(_cached_teachers(j, ds, cache) for j, f in zip(jobs, found, strict=True)
                           if f is None)  # fmt: skip
        missing = sum(f is None for f in found)
        unit_seconds = plain_seconds * (train_speed / speed if missing else 1.0)
        seconds = (missing * units - teachers * teacher) * unit_seconds
        # split_distill lands each sub-teacher, then the student; every other recipe, the model.
        step_units = units
        if teacher:
            step_units = max(teacher, units - step.teachers * teacher)
        populations[key] = PopulationPlan(
            "plain" if step is None else step.method, [variant.name], len(jobs),
            len(jobs) - missing, round(units, 3), teachers, round(teacher, 3), seconds,
            precision=trains_in.name, train_images_per_second=round(speed, 1),
            # (only where something is missing: only then is its precision timed here)
            model_seconds=units * unit_seconds * bool(missing),
            step_seconds=step_units * unit_seconds * bool(missing),
            notes=step_notes,
        )  # fmt: skip
        checkpoints[key] = found

    variants = []
    for variant in config.variants:
        pinned = pinned_config(resolved, variant, pins)
        if signals_cached(pinned, variant, ds, split, run_dir):
            variants.append(VariantPlan(variant.name, True, 0, 0.0, 0))
            continue
        units, step_notes = _transform_units(list(variant.transform_steps), train.epochs)
        to_deploy = 0
        if variant.transform_steps:
            for m, checkpoint in enumerate(checkpoints[_population_key(variant)]):
                seed = config.seed + m
                job = DeployJob(index=m, checkpoint=checkpoint, members=split.members(m),
                                train=pinned.train.model_copy(update={"seed": seed}), seed=seed,
                                model=config.model.name, model_options=config.model.options,
                                transforms=tuple(variant.transform_steps), reference=split.reference)  # fmt: skip
                to_deploy += checkpoint is None or cache.get(deploy_key(job, cache)) is None
        images = _query_images(config, ds, split)
        deploy_speed = speed_of(candidate_of(pinned.train)) if to_deploy and units else train_speed
        seconds = to_deploy * units * plain_seconds * train_speed / deploy_speed
        seconds += images / infer_speed
        variants.append(VariantPlan(variant.name, False, to_deploy, round(units, 3), images,
                                    seconds, step_notes))  # fmt: skip

    total = sum(p.seconds for p in populations.values()) + sum(v.seconds for v in variants)
    return RunPlan(
        name=config.name, cache_dir=str(cache.root), run_dir=str(run_dir),
        members_per_model=members, epochs=train.epochs,
        precision=candidate.name, train_images_per_second=round(train_speed, 1),
        infer_images_per_second=round(infer_speed, 1), plain_model_seconds=plain_seconds, cpu_share=round(share, 2),
        populations=list(populations.values()), variants=variants,
        total_seconds=round(total, 1) if math.isfinite(total) else total, notes=notes,
    )  # fmt: skip
