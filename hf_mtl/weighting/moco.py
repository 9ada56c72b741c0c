"""`moco`: MoCo, multi-objective gradient correction (Fernando, Shen, Liu, Chaudhury, Murugesan & Chen
2023, "Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent Approach", ICLR).

MGDA on tracked gradients: each task's gradient is followed by a moving estimate y_i, and the simplex
weights λ take one projected gradient step on the min-norm objective per optimizer step instead of
being solved afresh (the paper's Algorithm 1), which removes the bias of MGDA's stochastic weights:

    h_i = L_i g_i / ‖g_i‖                                  (each gradient scaled to its loss)
    y_i ← y_i − β_t (y_i − h_i),          β_t = β / t^σ_β   (y = 0 before the first step)
    λ ← Π_Δ(λ − γ_t (Y Yᵀ + ρ I) λ),      γ_t = γ / t^σ_γ   (λ = 1/K before the first step)
    d = Σ_i λ_i y_i,

t the number of steps so far (1 at the first). Π_Δ is the Euclidean projection onto the simplex (the
paper's). Defaults (flags `--moco_beta 0.5 --moco_beta_sigma 0.5 --moco_gamma 0.1 --moco_gamma_sigma
0.5 --moco_rho 0`) are LibMTL's, whose implementation follows code shared by the authors.

Conventions: h_i = L_i g_i/‖g_i‖, as LibMTL and the authors' code (the paper's analysis projects y_i onto
a ball of radius L_i, the Lipschitz bound, instead); so the update keeps the scale of the losses and does
not change when every gradient is multiplied by a constant. The λ step: LibMTL applies a softmax to
λ − γ_t(YYᵀ + ρI)λ; this module uses the paper's projection Π_Δ (exact, by sorting). The losses must be
positive (they scale the directions): clamped at `loss_epsilon` (counted), a negative one is an error.
A zero gradient gives h_i = 0.

Memory and state: Y (K × P over the shared parameters, float32) is this strategy's own buffer beside
the engine's K × P matrix; it goes to the checkpoint as a tensor (safetensors), with λ (by task name)
and `steps`. Non-finite gradients (an fp16 overflow) are passed through summed and leave the state
untouched. Because the update mixes past gradients, the engine's logged "effective weights" (the
least-squares coefficients of the update on the current gradients) are only a projection of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import AggregatorWeighting, WeightingConfig, check_number
from .registry import register
from .uncertainty import by_task, from_task_dict


def project_onto_simplex(v: np.ndarray) -> np.ndarray:
    """argmin_{x ≥ 0, Σx = 1} ‖x − v‖ (sort-based: Held, Wolfe & Crowder 1974). The projection commutes with
    adding a constant to every entry, so v is shifted to max 0 first: entries 1e60 apart keep the largest."""
    v = v - v.max()
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    index = np.arange(1, len(v) + 1)
    rho = int(np.nonzero(u - cumulative / index > 0)[0][-1])  # index 0 always qualifies: u_1 = 0 > −1
    return np.maximum(v - cumulative[rho] / (rho + 1), 0.0)


#: A float32 norm below this may have lost digits to underflow (its squares are under float32's smallest normal).
TINY_NORM = 1e-18


def row_norms(grads: torch.Tensor) -> torch.Tensor:
    """The row norms as float64, recomputed in float64 for the rows whose float32 norm overflowed or may have
    underflowed (squares of entries below 1e-19 are subnormal or 0 in float32)."""
    norms = torch.linalg.vector_norm(grads, dim=1).double()
    for i in (~torch.isfinite(norms) | (norms < TINY_NORM)).nonzero().flatten().tolist():
        norms[i] = torch.linalg.vector_norm(grads[i].double())
    return norms


@register
class MoCoWeighting(AggregatorWeighting):
    """Σ_i λ_i y_i with y tracking the loss-scaled unit gradients and λ one projected min-norm step per step."""

    name = "moco"
    description = "MoCo (Fernando et al. 2023): tracked gradients y, simplex weights λ moved one projected step per step"
    log_based = True
    state_matrices = 1  # the tracked gradients Y

    @dataclass
    class Config(WeightingConfig):
        moco_beta: float = field(default=0.5, metadata={"help": "moco: tracking rate β of the gradient estimates y."})
        moco_beta_sigma: float = field(default=0.5, metadata={"help": "moco: decay σ_β of the tracking rate, β/t^σ_β."})
        moco_gamma: float = field(default=0.1, metadata={"help": "moco: step size γ of the task weights λ."})
        moco_gamma_sigma: float = field(default=0.5, metadata={"help": "moco: decay σ_γ of the step size, γ/t^σ_γ."})
        moco_rho: float = field(default=0.0, metadata={"help": "moco: l2 regularisation ρ of the λ step."})

        def __post_init__(self) -> None:
            super().__post_init__()
            self.moco_beta = check_number("moco_beta", self.moco_beta, lambda v: 0 < v <= 1,
                                          "in (0, 1] (default 0.5)")
            for flag, default in (("moco_beta_sigma", 0.5), ("moco_gamma_sigma", 0.5), ("moco_rho", 0.0)):
                setattr(self, flag, check_number(flag, getattr(self, flag), lambda v: v >= 0,
                                                 f"a finite number >= 0 (default {default:g})"))
            self.moco_gamma = check_number("moco_gamma", self.moco_gamma, lambda v: v > 0,
                                           "a positive step size (default 0.1)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        self.beta, self.beta_sigma, self.gamma, self.gamma_sigma, self.rho = (
            c.moco_beta, c.moco_beta_sigma, c.moco_gamma, c.moco_gamma_sigma, c.moco_rho)
        self.tracked: torch.Tensor | None = None
        self.lam = np.full(self.num_tasks, 1.0 / self.num_tasks)
        self.steps = 0

    def aggregate(self, grads: torch.Tensor, losses: Sequence[float]) -> torch.Tensor:
        if not torch.isfinite(grads.sum(1)).all():  # row sums: no K × P temporary
            return grads.sum(0)
        self.tracked = self.state_matrix(self.tracked, grads, "gradient estimate matrix")
        for i, loss in enumerate(losses):
            # Composed as A+moco the losses were checked by A, which may not be log-based: guard here too.
            if loss < 0:
                raise ValueError(f"moco: task {self.task_names[i]!r} has a negative loss {loss:.6g}; it scales the "
                                 "task's direction and must be > 0.")
        step = self.steps + 1
        beta = self.beta / step**self.beta_sigma
        gamma = self.gamma / step**self.gamma_sigma
        norms = row_norms(grads)
        unit = torch.empty_like(grads[0])
        for i, (loss, norm) in enumerate(zip(losses, norms.tolist())):
            self.tracked[i].mul_(1.0 - beta)
            if norm > 0:
                # g_i/‖g_i‖ in two factors 1/√‖g_i‖, each within float32 for any finite float32 norm; then the loss.
                scale = norm**-0.5
                torch.mul(grads[i], scale, out=unit).mul_(scale)
                self.tracked[i].add_(unit, alpha=beta * max(float(loss), self.loss_epsilon))
        self.steps = step
        gram = (self.tracked @ self.tracked.T).double().cpu().numpy()
        if not np.isfinite(gram).all():  # entries beyond float32: row by row in float64
            rows = [row.double() for row in self.tracked]
            gram = np.array([[float(a @ b) for b in rows] for a in rows])
        self.lam = project_onto_simplex(self.lam - gamma * (gram + self.rho * np.eye(len(gram))) @ self.lam)
        return torch.as_tensor(self.lam, dtype=grads.dtype, device=grads.device) @ self.tracked

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {**super().state_dict(), "steps": self.steps, "weights": by_task(self, self.lam)}
        if self.tracked is not None:
            state["tracked"] = self.tracked
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = int(state.get("steps", 0))
        if "weights" in state:
            self.lam = np.array(from_task_dict(self, state["weights"], "task weights λ"))
        self.tracked = state["tracked"].clone() if "tracked" in state else None

    def hparams(self) -> dict[str, Any]:
        return {"beta": self.beta, "beta_sigma": self.beta_sigma, "gamma": self.gamma,
                "gamma_sigma": self.gamma_sigma, "rho": self.rho}
