"""``precision: auto`` decided by measuring the model's own training step, once per machine.

CPU flags do not say which precision trains faster: on one AVX512-BF16 host bf16 autocast trained
ResNet-20 3x faster than fp32, on another 14% slower, and channels_last helps bf16 but can hurt
fp32. So each candidate (bf16 autocast or fp32, NHWC or NCHW) runs a few real training steps of a
copy of the model, the fastest wins, and the choice is cached on disk per machine, torch version,
model and batch shape. The flag-based default is kept unless another candidate is more than
``MARGIN`` faster, so two measurements on one host agree (the choice changes the numbers).

A timing that another job shared the cores with is not trusted beyond its own run: another job
slows fp32 and bf16 unequally (session 14: bf16 "842 vs 348 img/s" under contention on a host where
fp32 is faster), and a cached choice outlives the job. Such a choice is cached marked shared; the
next process times again and replaces it only with a timing that had the CPU to itself.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from privquant.training.config import TrainConfig
from privquant.training.device import cpu_has_fast_bf16, resolve_device

MARGIN = 0.03  # keep the default unless a candidate is more than 3% faster
SECONDS_PER_CANDIDATE = 0.3
CACHE_ENV = "PRIVQUANT_MACHINE_CACHE"
SHARED_CPU = 0.7  # below this share of its threads' time a timing measured another job too
Decision = TypeVar("Decision")


@dataclass(frozen=True)
class Candidate:
    precision: str  # "bf16" or "fp32"
    channels_last: bool

    @property
    def name(self) -> str:
        return f"{self.precision}{'+channels_last' if self.channels_last else ''}"


@dataclass
class PrecisionChoice:
    """What ``auto`` resolved to, and why (recorded in results.json's machine block)."""

    precision: str
    channels_last: bool
    source: str  # measured | cached | explicit | cuda | only-candidate
    images_per_second: dict[str, float] = field(default_factory=dict)
    model: str = ""
    # The share of its threads' time other processes left this one while timing (None: not timed
    # here).
    cpu_share: float | None = None

    @property
    def timed_on_shared_cpu(self) -> bool:
        return self.cpu_share is not None and self.cpu_share < SHARED_CPU

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The choices this process made, one per model signature (machine_info reports them).
CHOICES: dict[str, PrecisionChoice] = {}


def cache_path() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "privquant" / "precision.json"


@lru_cache(maxsize=1)
def _cpu_identity() -> dict[str, Any]:
    seen: set[str] = set()
    fields = {"model name": platform.processor(), "flags": ""}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in fields and name.strip() not in seen:
                    fields[name.strip()] = value.strip()
                    seen.add(name.strip())
    except OSError:
        pass
    cpu, flags = fields["model name"], fields["flags"]
    return {"cpu": cpu, "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "cores": os.cpu_count(), "torch": torch.__version__}  # fmt: skip


def machine_identity() -> dict[str, Any]:
    """The machine as the choice depends on it; the thread count is read now (it can change)."""
    return {**_cpu_identity(), "threads": torch.get_num_threads()}


def one_batch(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, cap: int = 256
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The sample tiled to one training batch (at most ``cap`` rows), on the CPU, and its size."""
    batch = min(batch_size, cap)
    reps = -(-batch // len(x))
    xb = x.repeat(reps, *([1] * (x.dim() - 1)))[:batch].float().cpu()
    return xb, y.repeat(reps)[:batch].long().cpu(), batch


@dataclass(frozen=True)
class CpuClock:
    """Where the clocks stood when a timing began (read back by :func:`cpu_share`)."""

    wall: float
    own: float  # this process's CPU seconds
    busy: float | None  # busy seconds of the CPUs this process may use, every process counted


def start_clock() -> CpuClock:
    return CpuClock(time.perf_counter(), time.process_time(), _busy_seconds())


def _cpu_quota() -> bool:
    """Whether a cgroup caps this process's CPU time (cgroup v2 ``cpu.max`` or v1 ``cfs_quota``):
    then its CPUs' counters also hold other tenants' work, which is not this process's share."""
    for path, unlimited in (("/sys/fs/cgroup/cpu.max", "max"),
                            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1")):  # fmt: skip
        try:
            return Path(path).read_text().split()[0] != unlimited
        except (OSError, IndexError):
            continue
    return False


def _busy_seconds() -> float | None:
    """Busy time since boot of the CPUs this process may run on, all processes together (Linux
    ``/proc/stat``: user, nice, system, irq, softirq and steal); None where it cannot be read or
    does not describe this process's CPUs (a cgroup quota)."""
    if _cpu_quota():
        return None
    try:
        allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        ticks, seen = 0, 0
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name in allowed:
                    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
                    ticks += user + nice + system + irq + softirq + steal
                    seen += 1
        return ticks / os.sysconf("SC_CLK_TCK") if seen == len(allowed) else None
    except (OSError, ValueError, AttributeError):  # not Linux, or an unexpected format
        return None


def available_share(elapsed: float, own: float, busy: float, cores: int, threads: int) -> float:
    """The share of ``threads`` cores other processes left free over ``elapsed`` seconds, when
    ``cores`` were busy ``busy`` seconds in all and ``own`` of them were this process's."""
    others = max(0.0, busy - own) / elapsed  # cores' worth of work by other processes
    return max(0.0, min(1.0, (cores - others) / threads))


def cpu_share(clock: CpuClock, threads: int | None = None) -> float:
    """The share of its ``threads``' time (default: torch's thread count now) this process could
    have had since ``clock`` started: well below 1, another job shared the cores.

    Read from the other processes' CPU time where Linux shows it: a process's own CPU time
    under-reads when the model is too small to keep every thread busy (the small CNN's timing read
    75% on an idle host), which made idle timings look shared."""
    elapsed = time.perf_counter() - clock.wall
    if elapsed <= 0:
        return 1.0
    threads = threads or torch.get_num_threads()
    own = time.process_time() - clock.own
    busy = _busy_seconds()
    if clock.busy is None or busy is None:
        return min(1.0, own / elapsed / threads)
    return available_share(elapsed, own, busy - clock.busy, len(os.sched_getaffinity(0)), threads)


def model_signature(model: nn.Module, x: torch.Tensor, batch_size: int) -> str:
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    kinds = sorted({type(m).__name__ for m in model.modules()})
    text = json.dumps([type(model).__name__, shapes, kinds, list(x.shape[1:]), batch_size])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_candidate(is_image: bool) -> Candidate:
    """What the CPU flags suggest, kept when the measurement cannot tell candidates apart."""
    return Candidate("bf16" if cpu_has_fast_bf16() else "fp32", is_image)


def candidates(config: TrainConfig, is_image: bool) -> list[Candidate]:
    """What ``auto`` times. bf16 only where the CPU has bf16 kernels (AVX512-BF16 or AMX):
    elsewhere autocast converts every operand, ResNet-20 trained 10-15x slower (Zen 3, session
    30), and a tiny model's timing still picked it once, most likely while other processes shared
    the cores, and that run's numbers changed with it (docs/results/auto_precision_flake.md)."""
    auto_precisions = ["bf16", "fp32"] if cpu_has_fast_bf16() else ["fp32"]
    precisions = auto_precisions if config.precision == "auto" else [config.precision]
    if not is_image:
        layouts = [False]
    elif config.channels_last == "auto":
        layouts = [True, False]
    else:
        layouts = [bool(config.channels_last)]
    return [Candidate(p, cl) for p in precisions for cl in layouts]


def time_candidate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidate: Candidate, seconds: float
) -> float:
    """Images per second of SGD training steps on a copy of ``model`` (weights untouched)."""
    model = copy.deepcopy(model).train()
    xb = x.contiguous(memory_format=torch.channels_last) if candidate.channels_last else x
    if candidate.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = torch.bfloat16 if candidate.precision == "bf16" else None

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(xb).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN picks its kernels on the first call
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * len(x) / (time.perf_counter() - start)


@contextlib.contextmanager
def machine_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside the machine cache (held while one process measures)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 (held for the block)
    except OSError:  # a read-only home: no sharing, each process decides for itself
        yield
        return
    with handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock here (e.g. Windows): decide without it
            pass
        yield


def read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: measure again
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    from privquant.artifacts.atomic import atomic_write_json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = read_cache(path)
        data[key] = entry
        atomic_write_json(path, data)
    except OSError:  # a read-only home: the choice still holds for this process
        pass


def decide_once(
    key: str,
    from_entry: Callable[[dict[str, Any]], Decision | None],
    measure: Callable[[], tuple[Decision, dict[str, Any], float]],
    retime_shared: bool = True,
) -> Decision:
    """The machine's decision for ``key``: cached, or measured and cached.

    ``from_entry`` reads a cache entry (None: unusable); ``measure`` returns the decision, its
    cache entry and the share of its threads' time other processes left it while timing. One
    process measures at a time; the others wait and read its entry. A decision timed on a shared
    CPU is cached marked; with ``retime_shared`` the next process times again and replaces it only
    with a timing that had the CPU to itself (shared again, the cached decision stands, so the
    processes of one run agree). Without it the first decision stands: for choices that cost only
    speed when wrong, where a later change would move a run's numbers between its processes."""
    path = cache_path()
    with machine_lock(path):
        entry = read_cache(path).get(key)
        cached = from_entry(entry) if isinstance(entry, dict) else None
        share = entry.get("cpu_share") if isinstance(entry, dict) else None
        # absent: written before shares were recorded
        shared = retime_shared and isinstance(share, int | float) and share < SHARED_CPU
        if cached is not None and not shared:
            return cached
        decision, record, share = measure()
        if cached is not None and share < SHARED_CPU:
            return cached
        write_cache(path, key, {**record, "cpu_share": round(share, 2)})
        return decision


def layout_matters(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether channels_last can change anything: image batches into a model with 2-D
    convolutions. An MLP on images flattens them; timing its two "layouts" timed noise, whose
    pick then entered its models' cache keys."""
    return x.dim() == 4 and any(p.dim() == 4 for p in model.parameters())


def choose_precision(
    config: TrainConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = ""
) -> PrecisionChoice:
    """Resolve ``auto`` precision and layout for training ``model`` on batches like ``x``.

    ``x``, ``y``: a float sample of inputs and their labels (any number of rows, tiled to one
    batch)."""
    is_image = layout_matters(model, x)
    device = resolve_device(config.device)
    explicit = config.precision != "auto" and (config.channels_last != "auto" or not is_image)
    if explicit or device.type == "cuda":
        precision = "bf16" if config.precision == "auto" else config.precision
        layout = is_image if config.channels_last == "auto" else bool(config.channels_last)
        return PrecisionChoice(precision, layout and is_image,
                               "cuda" if device.type == "cuda" else "explicit", model=name)  # fmt: skip
    xb, yb, batch = one_batch(x, y, config.batch_size)
    todo = candidates(config, is_image)
    key = hashlib.sha256(json.dumps([machine_identity(), model_signature(model, xb, batch),
                                     [c.name for c in todo]]).encode()).hexdigest()  # fmt: skip
    if key in CHOICES:
        return CHOICES[key]
    if len(todo) == 1:  # e.g. a table on a CPU without bf16 kernels: nothing to time
        only = todo[0]
        CHOICES[key] = PrecisionChoice(only.precision, only.channels_last, "only-candidate",
                                       model=name)  # fmt: skip
        return CHOICES[key]

    def measure() -> tuple[PrecisionChoice, dict[str, Any], float]:
        clock = start_clock()
        # The measurement must not move the global generators that seed training.
        with torch.random.fork_rng(devices=[]):
            speeds = {c: time_candidate(model, xb, yb, c, SECONDS_PER_CANDIDATE) for c in todo}
        share = round(cpu_share(clock), 2)
        choice = _fastest(speeds, is_image, name, share)
        return choice, {"precision": choice.precision, "channels_last": choice.channels_last,
                        "images_per_second": choice.images_per_second, "model": name}, share  # fmt: skip

    # One decision per machine, so the processes of a run (workers, Ray tasks) train alike.
    choice = decide_once(key, lambda entry: _cached_choice(entry, name), measure)
    CHOICES[key] = choice
    return choice


def _cached_choice(entry: dict[str, Any], name: str) -> PrecisionChoice | None:
    if entry.get("precision") not in ("bf16", "fp32"):
        return None  # damaged: measure again
    share = entry.get("cpu_share")  # absent in entries written before it was recorded
    return PrecisionChoice(entry["precision"], bool(entry.get("channels_last")), "cached",
                           dict(entry.get("images_per_second", {})), name,
                           float(share) if isinstance(share, int | float) else None)  # fmt: skip


def _fastest(
    speeds: dict[Candidate, float], is_image: bool, name: str, share: float
) -> PrecisionChoice:
    fastest = max(speeds, key=speeds.__getitem__)
    default = default_candidate(is_image)
    if default in speeds and speeds[default] * (1 + MARGIN) >= speeds[fastest]:
        fastest = default
    timings = {c.name: round(s, 1) for c, s in speeds.items()}
    return PrecisionChoice(
        fastest.precision, fastest.channels_last, "measured", timings, name, share
    )


def recorded_choices() -> list[dict[str, Any]]:
    """The ``auto`` decisions this process made (one per model signature), for results files."""
    return [c.to_dict() for c in CHOICES.values()]


def resolve_train_config(
    config: TrainConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = ""
) -> TrainConfig:
    """``config`` with ``auto`` precision and layout replaced by what measures fastest here."""
    if config.precision != "auto" and config.channels_last != "auto":
        return config
    choice = choose_precision(config, model, x, y, name)
    return config.model_copy(
        update={"precision": choice.precision, "channels_last": choice.channels_last}
    )
