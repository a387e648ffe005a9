"""The one trainer: every model in privquant (targets, shadows, QAT, defenses) trains here."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from privquant.training.augment import augment_batch
from privquant.training.config import TrainConfig
from privquant.training.device import autocast, autocast_dtype, resolve_device, seed_everything
from privquant.training.objectives import CrossEntropy, Objective
from privquant.training.precision import resolve_train_config


class Callback:
    """Hooks into training. ``on_train_start`` may wrap the model and optimizer (e.g. DP-SGD)."""

    def on_train_start(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        return model, optimizer

    def on_step_end(self, batch_size: int) -> None:
        """After every optimizer step (``batch_size`` may be 0 under Poisson sampling)."""

    def on_epoch_end(self, epoch: int, stats: dict[str, float], model: nn.Module) -> bool | None:
        """Return True to stop training after this epoch (early stopping)."""
        return None

    def on_train_end(self, model: nn.Module) -> None:
        """Undo what ``on_train_start`` wrapped (hooks), restore chosen weights."""


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0
    precision: str = "fp32"
    device: str = "cpu"
    channels_last: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_model_input(xb: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; floats pass through."""
    return xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()


def _lr_lambda(config: TrainConfig, total_steps: int):  # noqa: ANN202
    warm = int(config.warmup_fraction * total_steps) if config.schedule == "onecycle" else 0

    def f(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        if config.schedule == "onecycle":  # linear decay to zero after warm-up
            return max(0.0, 1.0 - progress)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters (standard; it only hurts them).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
    )


class Trainer:
    """Trains a model on in-memory arrays with the fastest path the hardware offers.

    CPU: channels_last + bf16 autocast where the CPU has AMX/AVX512-BF16. CUDA: autocast with
    bf16 (or fp16 with loss scaling). Shuffling and augmentation draw from one generator seeded
    by ``config.seed``, so the same config, data and initial weights give the same model.
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        objective: Objective | None = None,
        callbacks: Sequence[Callback] = (),
        poisson_sampling: bool = False,
        augment_multiplicity: int = 1,
    ) -> None:
        self.config = config or TrainConfig()
        self.objective = objective or CrossEntropy(self.config.label_smoothing)
        self.callbacks = list(callbacks)
        # DP-SGD's privacy accounting assumes each row joins each batch independently with
        # probability batch_size / N (batch sizes vary); shuffling into fixed batches does not.
        self.poisson_sampling = poisson_sampling
        # DP-SGD with augmentation multiplicity (De et al. 2022): each sampled row enters the
        # batch K times, each copy augmented anew; a callback averages its K per-example gradients
        # before clipping, so a row still has one clipped gradient and the accounting is unchanged.
        if augment_multiplicity < 1:
            raise ValueError(f"augment_multiplicity: {augment_multiplicity} (expected >= 1)")
        if augment_multiplicity > 1 and self.config.augment == "none":
            raise ValueError(
                f"augment_multiplicity {augment_multiplicity} with augment: none would repeat "
                "identical copies; set the recipe's augment (e.g. crop+flip)"
            )
        self.augment_multiplicity = augment_multiplicity
        self.device = resolve_device(self.config.device)

    def _resolved(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainConfig:
        """The config with ``auto`` precision and layout decided (measured once per machine)."""
        cfg = self.config
        if cfg.precision != "auto" and cfg.channels_last != "auto":
            return cfg
        return resolve_train_config(
            cfg, model, to_model_input(x[:64]), y[:64], type(model).__name__
        )

    def fit(
        self,
        model: nn.Module,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        progress: bool = True,
    ) -> TrainResult:
        x_t = torch.as_tensor(x).to(self.device)
        y_t = torch.as_tensor(y, dtype=torch.long).to(self.device)
        if len(x_t) != len(y_t) or len(x_t) == 0:
            raise ValueError(f"training data: {len(x_t)} inputs and {len(y_t)} labels")
        is_image = x_t.dim() == 4
        cfg = self._resolved(model.to(self.device), x_t, y_t)
        channels_last = is_image and cfg.channels_last is True
        amp_dtype = autocast_dtype(cfg.precision, self.device)
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, cfg)
        for cb in self.callbacks:
            model, optimizer = cb.on_train_start(model, optimizer)
        steps_per_epoch = math.ceil(len(x_t) / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total))
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        gen = torch.Generator().manual_seed(cfg.seed)
        rate = min(1.0, cfg.batch_size / len(x_t))
        copies = self.augment_multiplicity
        result = TrainResult(
            precision=str(amp_dtype or "fp32").replace("torch.", ""),
            device=str(self.device),
            channels_last=channels_last,
        )
        bar = tqdm(total=total, desc="train", unit="step", disable=not progress, leave=False)
        start = time.perf_counter()
        model.train()
        for epoch in range(cfg.epochs):
            perm = torch.randperm(len(x_t), generator=gen).to(self.device)
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), device=self.device)
            for s in range(steps_per_epoch):
                if self.poisson_sampling:
                    idx = (torch.rand(len(x_t), generator=gen) < rate).nonzero()[:, 0]
                    idx = idx.to(self.device)
                    # Nothing to learn from; the step still counts as taken. Under DP-SGD this
                    # skips the step's noise too, which changes the mechanism only on an empty
                    # batch: probability (1 - q)^n ~ exp(-expected batch) per step (e^-128 at
                    # batch 128), an addition to delta far below any delta used.
                    if len(idx) == 0:
                        scheduler.step()
                        for cb in self.callbacks:
                            cb.on_step_end(0)
                        bar.update(1)
                        continue
                else:
                    idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                rows = idx.repeat_interleave(copies) if copies > 1 else idx  # copies adjacent
                xb = augment_batch(to_model_input(x_t[rows]), cfg.augment, cfg.padding, gen)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                yb = y_t[rows]
                with autocast(self.device, amp_dtype):
                    logits = model(xb)
                loss = self.objective(logits, yb, model=model, indices=rows)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                for cb in self.callbacks:
                    cb.on_step_end(len(idx))
                loss_sum += loss.detach() * len(idx)
                correct += (logits.detach().argmax(1) == yb).sum() / copies
                bar.update(1)
            stats = {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum) / len(x_t),
                "train_acc_running": float(correct) / len(x_t),
                "lr": scheduler.get_last_lr()[0],
            }
            result.history.append(stats)
            bar.set_postfix(
                loss=f"{stats['train_loss']:.3f}", acc=f"{stats['train_acc_running']:.3f}"
            )
            stop = [cb.on_epoch_end(epoch, stats, model) for cb in self.callbacks]
            if any(stop):
                break
        bar.close()
        for cb in self.callbacks:
            cb.on_train_end(model)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        result.seconds = time.perf_counter() - start
        result.samples_per_second = len(result.history) * len(x_t) / result.seconds
        if channels_last:  # hand back the layout users (and exporters) expect
            model.to(memory_format=torch.contiguous_format)
        model.eval()
        return result


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    batch_size: int = 1024,
    device: str | torch.device = "auto",
    views: Sequence[Any] = (),
    channels_last: bool = False,
) -> np.ndarray:
    """float32 logits ``[N, classes]``, or ``[N, 1 + len(views), classes]`` with query views.

    Each view is a function of a float batch (e.g. a flip), applied after ``to_model_input``.
    Inference runs in fp32 so logits are exact, whatever precision trained the model;
    ``channels_last`` (images) runs it in that memory layout, and hands the model back in NCHW.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    model = model.to(dev).eval()
    x_t = torch.as_tensor(x)
    layout = torch.channels_last if channels_last and x_t.dim() == 4 else None
    if layout is not None:
        model.to(memory_format=layout)

    def run(xb: torch.Tensor) -> torch.Tensor:
        return model(xb if layout is None else xb.contiguous(memory_format=layout))

    outs = []
    try:
        for s in range(0, len(x_t), batch_size):
            xb = to_model_input(x_t[s : s + batch_size].to(dev))
            if views:
                outs.append(torch.stack([run(xb)] + [run(v(xb)) for v in views], 1).float().cpu())
            else:
                outs.append(run(xb).float().cpu())
    finally:
        if layout is not None:
            model.to(memory_format=torch.contiguous_format)
    return torch.cat(outs).numpy()


def evaluate(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on (x, y) (``channels_last``: that layout)."""
    logits = torch.from_numpy(predict_logits(model, x, batch_size, channels_last=channels_last))
    y_t = torch.as_tensor(y, dtype=torch.long)
    return {
        "accuracy": float((logits.argmax(1) == y_t).float().mean()),
        "loss": float(torch.nn.functional.cross_entropy(logits, y_t)),
    }


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel (images) or per-feature (tables) mean and std of inputs scaled to [0, 1]."""
    xf = x.astype(np.float64) / (255.0 if x.dtype == np.uint8 else 1.0)
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    mean, std = xf.mean(axis=axes), xf.std(axis=axes)
    return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def train_new_model(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    config: TrainConfig | None = None,
    progress: bool = True,
    **model_options: Any,
) -> tuple[nn.Module, TrainResult]:
    """Seed, build ``name`` with normalization fitted on ``x``, and train it."""
    from privquant.models import build_model

    config = config or TrainConfig()
    seed_everything(config.seed)
    mean, std = channel_stats(x)
    model = build_model(name, x.shape[1:], num_classes, mean=mean, std=std, **model_options)
    result = Trainer(config).fit(model, x, y, progress=progress)
    return model, result
