"""Many models of one architecture trained at once, as one stacked network (``torch.func``).

An audit trains dozens of small models. On a GPU one ResNet-20 at batch 128 leaves most of the
device idle, so K models train together: their parameters and buffers are stacked along a new
leading dimension (:func:`torch.func.stack_module_state`), the forward pass is ``vmap`` of the
one-model forward over that dimension, and one backward pass gives every model its own gradient
(the models share nothing, so the sum of their losses separates). On CPU the one-model trainer
stays the default: there the stacked network measured no faster (grouped convolutions 0.8-1.0x).

Each model keeps its own recipe state, so it is the model :class:`~privquant.training.Trainer`
would train from the same seed: its own shuffling and augmentation generator (seeded by its
``seed``, drawn in the same order), its own learning-rate schedule and step count, and BatchNorm
running statistics per model (stacked buffers, updated in place under ``vmap``). Models whose
member counts differ take different numbers of steps per epoch; a model with no step left in an
epoch is masked (no parameter, optimizer or BatchNorm update). The last, short batch of an epoch
is filled up to the batch size with repeats of its own rows that carry zero loss weight, so
shapes agree across models; the repeats only enter that step's BatchNorm batch statistics, the
one difference from the one-model trainer (which the tests bound).

Only plain training is stacked (cross-entropy with optional label smoothing, SGD or AdamW, the
built-in schedules, augmentation); objectives and callbacks of defenses (distillation targets,
DP-SGD, early stopping) train one model at a time.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from privquant.training.augment import (
    apply_augment,
    augment_draws,
    concat_draws,
    identity_draws,
    take_draws,
)
from privquant.training.config import TrainConfig
from privquant.training.device import autocast, resolve_device
from privquant.training.trainer import TrainResult, _lr_lambda, to_model_input


class StackingError(ValueError):
    """The models or recipes cannot train as one stacked network."""


def _check_recipes(configs: Sequence[TrainConfig]) -> TrainConfig:
    if not configs:
        raise StackingError("no models to train")
    base = configs[0].model_dump(exclude={"seed"})
    for i, c in enumerate(configs[1:], 1):
        if c.model_dump(exclude={"seed"}) != base:
            raise StackingError(f"model {i}'s recipe differs from model 0's beyond its seed")
    return configs[0]


def _check_architectures(models: Sequence[nn.Module]) -> None:
    shapes = [{k: (v.shape, v.dtype) for k, v in m.state_dict().items()} for m in models]
    for i, s in enumerate(shapes[1:], 1):
        if s != shapes[0]:
            raise StackingError(f"model {i}'s parameters differ from model 0's in name or shape")


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    # fp16 would need one loss scaler per model; bf16 or fp32 is what stacking supports.
    if cfg.precision == "fp32" or device.type != "cuda":
        return None if cfg.precision != "bf16" else torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


class _StackedOptimizer:
    """SGD (Nesterov momentum) or AdamW over stacked parameters, with a learning rate and an
    on/off mask per model; the update rules are torch.optim's, element for element."""

    def __init__(self, params: dict[str, torch.Tensor], cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.params = params
        # As make_optimizer: no weight decay on biases and norm parameters (one dim per model).
        self.decay = {n: cfg.weight_decay if p.dim() > 2 else 0.0 for n, p in params.items()}
        self.state: dict[str, dict[str, torch.Tensor]] = {
            n: {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}
            if cfg.optimizer == "adam"
            else {"m": torch.zeros_like(p)}
            for n, p in params.items()
        }

    @torch.no_grad()
    def step(
        self,
        grads: dict[str, torch.Tensor],
        lr: torch.Tensor,
        active: torch.Tensor,
        steps_taken: torch.Tensor,
    ) -> None:
        """One update; ``lr`` [K], ``active`` [K] bool, ``steps_taken`` [K] counts incl. this."""
        cfg = self.cfg
        for name, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            on, rate = active.view(shape), lr.view(shape).to(p.dtype)
            g, st, wd = grads[name], self.state[name], self.decay[name]
            if cfg.optimizer == "adam":
                b1, b2, eps = 0.9, 0.999, 1e-8
                t = steps_taken.view(shape).to(p.dtype).clamp_min(1)
                m = torch.where(on, st["m"] * b1 + g * (1 - b1), st["m"])
                v = torch.where(on, st["v"] * b2 + g * g * (1 - b2), st["v"])
                decayed = p * (1 - rate * wd)
                denom = (v.sqrt() / (1 - b2**t).sqrt()) + eps
                new = decayed - rate / (1 - b1**t) * m / denom
                st["m"], st["v"] = m, v
            else:
                if wd:
                    g = g + wd * p
                if cfg.momentum > 0:
                    buf = torch.where(on, st["m"] * cfg.momentum + g, st["m"])
                    st["m"] = buf
                    g = g + cfg.momentum * buf  # Nesterov, as make_optimizer
                new = p - rate * g
            p.copy_(torch.where(on, new, p))


def fit_stacked(
    models: Sequence[nn.Module],
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    rows: Sequence[np.ndarray],
    configs: Sequence[TrainConfig],
    progress: bool = True,
) -> list[TrainResult]:
    """Train ``models[k]`` on rows ``rows[k]`` of (x, y) with ``configs[k]``, all at once.

    The recipes must agree except for their seeds and the models must share one architecture;
    ``models`` are trained in place (and left in eval mode) as :meth:`Trainer.fit` does.
    """
    if not (len(models) == len(rows) == len(configs)):
        raise StackingError(f"{len(models)} models, {len(rows)} row sets, {len(configs)} recipes")
    cfg = _check_recipes(configs)
    _check_architectures(models)
    device = resolve_device(cfg.device)
    x_t = torch.as_tensor(x).to(device)
    y_t = torch.as_tensor(y, dtype=torch.long).to(device)
    rows_t = [torch.as_tensor(np.asarray(r), dtype=torch.long) for r in rows]
    if any(len(r) == 0 for r in rows_t):
        raise StackingError("a model has no training rows")
    if len(x_t) != len(y_t):
        raise StackingError(f"training data: {len(x_t)} inputs and {len(y_t)} labels")
    k, batch = len(models), cfg.batch_size
    n_rows = [len(r) for r in rows_t]
    steps_per_epoch = [math.ceil(n / batch) for n in n_rows]
    schedules = [_lr_lambda(cfg, cfg.epochs * s) for s in steps_per_epoch]
    amp_dtype = _amp_dtype(cfg, device)
    is_image = x_t.dim() == 4

    for m in models:
        m.to(device).train()
    params, buffers = torch.func.stack_module_state(list(models))
    params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def one_model(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor):  # noqa: ANN202
        return torch.func.functional_call(base, (p, b), (xb,))

    forward = torch.func.vmap(one_model, in_dims=(0, 0, 0), randomness="different")
    optimizer = _StackedOptimizer(params, cfg)
    gens = [torch.Generator().manual_seed(c.seed) for c in configs]
    taken = torch.zeros(k, dtype=torch.long)
    results = [
        TrainResult(precision=str(amp_dtype or "fp32").replace("torch.", ""), device=str(device))
        for _ in models
    ]
    total_steps = cfg.epochs * max(steps_per_epoch)
    bar = tqdm(
        total=total_steps, desc=f"train x{k}", unit="step", disable=not progress, leave=False
    )
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        perms = [rows_t[m][torch.randperm(n_rows[m], generator=gens[m])] for m in range(k)]
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.long)
        for s in range(max(steps_per_epoch)):
            active = torch.tensor([s < steps_per_epoch[m] for m in range(k)])
            index, weight, draws = [], [], []
            augmenting = is_image and cfg.augment != "none"
            for m in range(k):
                idx = perms[m][s * batch : (s + 1) * batch] if active[m] else perms[m][:batch]
                real = len(idx) if active[m] else 0
                fill = torch.arange(batch) % len(idx)  # repeats of the batch's own rows
                index.append(idx[fill])
                w = torch.zeros(batch)
                w[:real] = 1.0
                weight.append(w)
                if augmenting:  # drawn from the model's generator only for the rows it learns
                    d = (augment_draws(real, cfg.augment, cfg.padding, gens[m]) if real
                         else identity_draws(len(idx), cfg.augment, cfg.padding))  # fmt: skip
                    draws.append(take_draws(d, fill))
            flat = torch.cat(index).to(device)
            xb = to_model_input(x_t[flat])
            if draws:
                xb = apply_augment(xb, cfg.padding, concat_draws(draws))
            xb = xb.view(k, batch, *xb.shape[1:])
            yb = y_t[flat].view(k, batch)
            wb = torch.stack(weight).to(device)
            if not bool(active.all()):
                saved = {n: b.clone() for n, b in buffers.items()}
            with autocast(device, amp_dtype):
                logits = forward(params, buffers, xb)
            ce = F.cross_entropy(
                logits.float().flatten(0, 1),
                yb.flatten(),
                reduction="none",
                label_smoothing=cfg.label_smoothing,
            ).view(k, batch)
            per_model = (ce * wb).sum(1) / wb.sum(1).clamp_min(1.0)
            grads = torch.autograd.grad(per_model.sum(), list(params.values()))
            taken += active.long()
            lr = torch.tensor(
                [cfg.lr * schedules[m](max(0, int(taken[m]) - 1)) for m in range(k)],
                dtype=torch.float32,
            ).to(device)
            optimizer.step(
                dict(zip(params, grads, strict=True)), lr, active.to(device), taken.to(device)
            )
            if not bool(active.all()):  # masked models keep their BatchNorm statistics
                on = active.to(device)
                with torch.no_grad():
                    for n, b in buffers.items():
                        b.copy_(torch.where(on.view((-1,) + (1,) * (b.dim() - 1)), b, saved[n]))
            with torch.no_grad():
                loss_sum += (ce.detach() * wb).sum(1)
                correct += ((logits.detach().argmax(-1) == yb) & (wb > 0)).sum(1)
            bar.update(1)
        for m in range(k):
            last = cfg.lr * schedules[m](int(taken[m]))
            results[m].history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": float(loss_sum[m]) / n_rows[m],
                    "train_acc_running": float(correct[m]) / n_rows[m],
                    "lr": last,
                }
            )
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for m, model in enumerate(models):
            state = {n: p[m].detach().clone() for n, p in params.items()}
            state.update({n: b[m].clone() for n, b in buffers.items()})
            model.load_state_dict(state)
            model.eval()
            results[m].seconds = seconds
            results[m].samples_per_second = cfg.epochs * n_rows[m] / seconds
    return results
