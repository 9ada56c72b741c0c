"""`excess_mtl`: robust multi-task learning with excess risks (He, Zhou, Zhao & Zhao 2024, "Robust
Multi-Task Learning with Excess Risks", ICML).

Tasks are weighted by how far each is from its own optimum (its excess risk), not by its loss, so a
task with noisy labels (high loss, little left to learn) does not take over. The excess risk is
estimated by a second-order Taylor expansion with a diagonal, AdaGrad-style Hessian (Eqs. 6–7),

    S_i ← S_i + g_i ⊙ g_i   (S = 0 before the first step),   E_i = Σ_p g_ip² / √S_ip   (p with S_ip > 0),

normalised by each task's first estimate (the paper's scale processing, Sec. 3.2: r_i = E_i / E_i⁽⁰⁾),
and the weights take an exponentiated-gradient step (Eq. 9), renormalised to sum K:

    w_i ← K · w_i e^(η r_i) / Σ_j w_j e^(η r_j),   w = 1 at the start,   d = Σ_i w_i g_i.

Conventions, as the authors' code and LibMTL (the authors' code is a LibMTL fork): weights start at 1
and sum to K, so the update is a sum over tasks (K times `equal`'s mean while w = 1); the first step
only records E⁽⁰⁾ (no weight step, w = 1); η = `--excess_step_size`, default 1e-2 (LibMTL's
`robust_step_size`; torchjd's default is 1.0). Differences: no ε (they add 1e-7 inside the square root and divide by E⁽⁰⁾ with
no guard): coordinates never touched (S = 0) are left out of E, and a task whose first estimate is 0 (a
zero gradient) takes its baseline at its first non-zero one, its weight not moving that step. torchjd's
`ExcessMTLWeighting` differs too: weights start at 1/K (summing to 1), and its first step (with its
default `n_warmup_steps` 0) already moves the weights by the raw, unnormalised E. The weights are
updated in log space (no overflow for a large η r).

Memory and state: S (K × P over the shared parameters, float32) is this strategy's own buffer beside the
engine's K × P matrix; it is checkpointed as a tensor (safetensors), with E⁽⁰⁾ and log w (by task name)
and `steps`. Non-finite gradients (an fp16 overflow) are passed through summed and leave the state
untouched. Solver: none (closed form).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import AggregatorWeighting, WeightingConfig, check_number
from .registry import register
from .uncertainty import by_task, from_task_dict


def excess_risks(grads: torch.Tensor, squares: torch.Tensor) -> np.ndarray:
    """E_i = Σ_p g_ip² / √S_ip over S_ip > 0, in float64 (P-sized temporaries only). Each term is at most |g_ip|
    (S includes g²): where S_ip is 0 although g_ip is not (g² below float32's range) the term is |g_ip|, and
    0·∞ where both are 0 is a NaN that `nansum` leaves out."""
    part = torch.empty_like(grads[0])
    risks = []
    for row, total in zip(grads, squares):
        torch.rsqrt(total, out=part).mul_(row).mul_(row)  # (g/√S)·g: no underflow of g² on the way
        torch.minimum(part, row.abs(), out=part)
        risks.append(float(torch.nansum(part, dtype=torch.float64)))
    return np.array(risks)


@register
class ExcessMTLWeighting(AggregatorWeighting):
    """Σ_i w_i g_i with w moved by exponentiated steps on each task's normalised excess-risk estimate."""

    name = "excess_mtl"
    description = "ExcessMTL (He et al. 2024): weights from exponentiated steps on AdaGrad excess-risk estimates (--excess_step_size)"
    state_matrices = 1  # the squared-gradient sums S

    @dataclass
    class Config(WeightingConfig):
        excess_step_size: float = field(
            default=1e-2, metadata={"help": "excess_mtl: step size η of the exponentiated weight update."}
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.excess_step_size = check_number("excess_step_size", self.excess_step_size, lambda v: v > 0,
                                                 "a positive step size (default 0.01)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_size = self.config.excess_step_size
        self.squares: torch.Tensor | None = None
        self.baseline = np.zeros(self.num_tasks)  # E⁽⁰⁾; 0 until a task's first non-zero estimate
        self.log_weights_ = np.zeros(self.num_tasks)  # log w, Σ w = K
        self.steps = 0

    def current_weights(self) -> np.ndarray:
        return np.exp(self.log_weights_)

    def aggregate(self, grads: torch.Tensor, losses: Sequence[float]) -> torch.Tensor:
        if not torch.isfinite(grads.sum(1)).all():  # row sums: no K × P temporary
            return grads.sum(0)
        self.squares = self.state_matrix(self.squares, grads, "squared-gradient sum matrix")
        for total, row in zip(self.squares, grads):
            total.addcmul_(row, row)
        risks = excess_risks(grads, self.squares)
        ratios = np.divide(risks, self.baseline, out=np.zeros_like(risks), where=self.baseline > 0)
        self.baseline = np.where(self.baseline > 0, self.baseline, risks)
        if self.steps > 0:
            logits = self.log_weights_ + self.step_size * ratios
            self.log_weights_ = logits - np.logaddexp.reduce(logits) + math.log(self.num_tasks)
        self.steps += 1
        weights = self.current_weights()
        update = torch.as_tensor(weights, dtype=grads.dtype, device=grads.device) @ grads
        if not torch.isfinite(update).all():  # a weight beyond float32 (η r huge): row by row in float64
            update = torch.zeros_like(grads[0])
            for w, row in zip(weights, grads):
                update += (row.double() * float(w)).to(grads.dtype)
        return update

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {**super().state_dict(), "steps": self.steps,
                                 "baseline": by_task(self, self.baseline), "log_weights": by_task(self, self.log_weights_)}
        if self.squares is not None:
            state["squares"] = self.squares
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = int(state.get("steps", 0))
        if "baseline" in state:
            self.baseline = np.array(from_task_dict(self, state["baseline"], "excess-risk baselines"))
        if "log_weights" in state:
            self.log_weights_ = np.array(from_task_dict(self, state["log_weights"], "log weights"))
        self.squares = state["squares"].clone() if "squares" in state else None

    def hparams(self) -> dict[str, Any]:
        return {"step_size": self.step_size}
