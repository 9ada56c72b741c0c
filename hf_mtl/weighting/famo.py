"""`famo`: Fast Adaptive Multitask Optimization, O(1) weights learned from the change in log losses (Liu et al. 2023).

    F = Σ_i z_i log L_i / sg(c),    z = softmax(ξ),    c = Σ_j z_j / L_j
    dF/dL_i = z_i / (c L_i)    (log h_i = log z_i − log L_i, log c(L) = −log Σ_j z_j / L_j)

Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(arXiv:2306.03792), Algorithm 1; the normaliser c makes the weights sum to 1. The task logits ξ
(start 0: z uniform) move toward tasks whose log loss improved least:

    δ_i = log L_i(t−1) − log L_i(t),    ξ ← ξ − β (J_z(ξ)ᵀ δ + γ ξ),    (J_zᵀ δ)_i = z_i (δ_i − Σ_j z_j δ_j)

with β the learning rate (`weighting_lr`, default 0.025) and γ the decay (`famo_weight_decay`, default
0.001). The official implementation steps ξ with Adam(lr=β, weight_decay=γ); here ξ is a
`torch.nn.Parameter` in the trainer's optimizer (own group, no decoupled weight decay) and `observe`
sets ξ.grad = J_zᵀ δ + γ ξ, which is exactly that coupled decay with the default AdamW (and the paper's
plain step with `optim="sgd"`).

The "new" loss L(t): the official code evaluates the step's batch again after the update (one extra
forward per step). Here it is the loss of the next optimizer step on the next batch, which the trainer
computes anyway (no extra forward, but δ also sees the batch-to-batch noise), and the ξ update lands one
step later: observe at step t uses δ between steps t−1 and t. Losses are clamped at `loss_epsilon`
(1e-8, the official code's offset; `min_losses` is 0 as in its default).

State: ξ (by task name) and the previous step's losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import check_number
from .registry import register
from .uncertainty import LearnedTaskValues, by_task, from_task_dict


@register
class FAMOWeighting(LearnedTaskValues):
    """F = Σ_i z_i log L_i / sg(Σ_j z_j / L_j) with z = softmax(ξ) learned from loss improvements."""

    name = "famo"
    description = "FAMO: softmax(ξ)-weighted log losses, ξ learned from the change in log losses (Liu et al. 2023)"
    log_based = True
    state_key = "logits"

    @dataclass
    class Config(LearnedTaskValues.Config):
        famo_weight_decay: float = field(default=0.001, metadata={"help": "famo: weight decay of its logits."})

        def __post_init__(self) -> None:
            super().__post_init__()
            self.famo_weight_decay = check_number("famo_weight_decay", self.famo_weight_decay, lambda v: v >= 0,
                                                  "a finite number >= 0 (default 0.001)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weight_decay = self.config.famo_weight_decay
        self.previous_losses: np.ndarray | None = None

    def log_z(self) -> np.ndarray:
        xi = self.current().numpy()
        return xi - np.logaddexp.reduce(xi)

    def task_log_factor(self, i: int, loss: float) -> float:
        return float(self.log_z()[i] - np.log(loss))

    def common_log_factor(self, losses: Sequence[float]) -> float:
        return float(-np.logaddexp.reduce(self.log_z() - np.log(np.asarray(losses, dtype=np.float64))))

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        z = torch.exp(losses.new_tensor(self.log_z()))
        c = (z / losses).sum().detach()
        return (z * torch.log(losses)).sum() / c

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        current = np.log(np.asarray(losses, dtype=np.float64))
        if self.previous_losses is None:
            self.values.grad = None
        else:
            delta = np.log(self.previous_losses) - current
            z = np.exp(self.log_z())
            grad = z * (delta - z @ delta) + self.weight_decay * self.current().numpy()
            self.values.grad = torch.from_numpy(grad).to(self.values.dtype)
        self.previous_losses = np.asarray(losses, dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        previous = None if self.previous_losses is None else by_task(self, self.previous_losses)
        return {**super().state_dict(), "previous_losses": previous}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("previous_losses")
        self.previous_losses = None if saved is None else np.array(from_task_dict(self, saved, "previous losses"))

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "weight_decay": self.weight_decay}
