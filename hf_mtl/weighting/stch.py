"""`stch`: smooth Tchebycheff scalarisation (Lin, Zhang, Yang, Zhang & Zhang 2024, "Smooth Tchebycheff
Scalarization for Multi-Objective Optimization", ICML).

The Tchebycheff scalarisation max_i λ_i (f_i − z_i*) optimises the worst task; its smooth version is a
log-sum-exp with temperature μ > 0,

    g_μ(f) = μ log Σ_i exp(λ_i (f_i − z_i*) / μ),

which tends to the max as μ → 0 and to the (scaled) mean as μ → ∞. For multi-task learning, as the
authors' MTL code (their `STCH_MTL`, and LibMTL's `STCH` taken from it), the objectives are the log
losses normalised by a nadir point L̄_i (each task's mean loss over a warm-up), λ_i = 1 and z* = 0, times K:

    F = μ K log Σ_i exp(log(L_i / L̄_i) / μ),    dF/dL_i = K softmax(z)_i / L_i,   z_i = log(L_i/L̄_i)/μ
    (log h_i = z_i − log L_i,  log c = log K − log Σ_j e^(z_j))

During the warm-up (`--stch_warmup_steps`, default 100 optimizer steps) the objective is Σ_i log L_i
(`geometric`: the authors' warm-up objective) and the losses are averaged into L̄; from the next step on
the STCH objective applies. As μ → ∞ the weights tend to 1/L_i (the warm-up's), so the factor K keeps
the two phases on one scale. `--stch_warmup_steps 0` skips the warm-up: L̄ = 1 (plain log losses).
μ = `--stch_mu`, default 1 (the authors' and LibMTL's `STCH_mu`).

Conventions: the authors count the warm-up in epochs (LibMTL's `STCH_warmup_epoch` 4: log-loss
training for 4 epochs, the nadir averaged over the 5th, STCH from the 6th); here in optimizer steps
(a multi-task "epoch" can be long and uneven), the nadir averaged over all warm-up steps. The log
needs positive losses: clamped at `loss_epsilon` (the authors add 1e-20), a negative one is an error.
Scaling one task's loss by c > 0 changes nothing once its nadir has been measured (L/L̄ is unchanged).

When the phase changes: `observe` closes the warm-up (L̄ is then known), but a step's factors are all
taken in one phase: the next step switches at its first `task_log_factor`, as `rlw` draws its weights.
State: the steps observed, the running loss sums, L̄, and the phase the current step uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import Weighting, WeightingConfig, check_number
from .registry import register
from .uncertainty import by_task, from_task_dict


@register
class STCHWeighting(Weighting):
    """F = μ K log Σ_i exp(log(L_i/L̄_i)/μ) after a warm-up on Σ_i log L_i that measures the nadir L̄."""

    name = "stch"
    description = "STCH (Lin et al. 2024): smooth Tchebycheff μ K log Σ exp(log(L_i/L̄_i)/μ) after a log-loss warm-up (--stch_mu)"
    log_based = True

    @dataclass
    class Config(WeightingConfig):
        stch_mu: float = field(default=1.0, metadata={"help": "stch: smoothing temperature μ (→ 0: the worst task)."})
        stch_warmup_steps: int = field(
            default=100,
            metadata={"help": "stch: optimizer steps of log-loss warm-up whose mean losses are the nadir point "
                      "(0: no warm-up, nadir 1)."},
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.stch_mu = check_number("stch_mu", self.stch_mu, lambda v: v > 0, "a positive temperature (default 1)")
            self.stch_warmup_steps = int(check_number(
                "stch_warmup_steps", self.stch_warmup_steps, lambda v: v >= 0 and v == int(v),
                "a whole number of optimizer steps >= 0 (default 100)"))

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mu = self.config.stch_mu
        self.warmup = self.config.stch_warmup_steps
        self.steps = 0
        self.loss_sums = np.zeros(self.num_tasks)
        #: L̄ once the warm-up is over (None before).
        self.nadir: np.ndarray | None = np.ones(self.num_tasks) if self.warmup == 0 else None
        #: The L̄ of the step whose factors are being taken (None: a warm-up step), and that step.
        self.active: np.ndarray | None = self.nadir
        self.active_for = 0

    def _begin_step(self) -> None:
        if self.active_for != self.steps:
            self.active, self.active_for = self.nadir, self.steps

    def _z(self, losses: np.ndarray) -> np.ndarray:
        return (np.log(losses) - np.log(self.active)) / self.mu

    def task_log_factor(self, i: int, loss: float) -> float:
        self._begin_step()
        if self.active is None:
            return -math.log(loss)
        return float((math.log(loss) - math.log(self.active[i])) / self.mu - math.log(loss))

    def common_log_factor(self, losses: Sequence[float]) -> float:
        if self.active is None:
            return 0.0
        return float(math.log(self.num_tasks) - np.logaddexp.reduce(self._z(np.asarray(losses, dtype=np.float64))))

    def log_weights(self, losses: Sequence[float]) -> np.ndarray:
        self._begin_step()  # before the common factor, which never switches (the engine asks for it after observe)
        return super().log_weights(losses)

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            return torch.log(losses).sum()
        z = (torch.log(losses) - losses.new_tensor(np.log(self.active))) / self.mu
        return self.mu * self.num_tasks * torch.logsumexp(z, dim=0)

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        if self.nadir is None:
            self.loss_sums += np.asarray(losses, dtype=np.float64)
            if self.steps + 1 == self.warmup:
                self.nadir = self.loss_sums / self.warmup
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "steps": self.steps,
            "loss_sums": by_task(self, self.loss_sums),
            "nadir": None if self.nadir is None else by_task(self, self.nadir),
            "active": None if self.active is None else by_task(self, self.active),
            "active_for": self.active_for,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "loss_sums" not in state:
            return
        self.steps, self.active_for = int(state["steps"]), int(state["active_for"])
        self.loss_sums = np.array(from_task_dict(self, state["loss_sums"], "loss sums"))
        for key, what in (("nadir", "nadir losses"), ("active", "nadir losses")):
            saved = state.get(key)
            setattr(self, key, None if saved is None else np.array(from_task_dict(self, saved, what)))

    def hparams(self) -> dict[str, Any]:
        return {"mu": self.mu, "warmup_steps": self.warmup}
