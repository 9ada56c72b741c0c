"""`db_mtl`: dual-balancing multi-task learning (Lin et al. 2023, "Dual-Balancing for Multi-Task
Learning", arXiv:2308.12029; as in LibMTL's `DB_MTL`).

Two balancing steps:

* loss scale: each task is trained on log L_i, whose gradient is g_i / L_i (invariant to multiplying
  L_i by a constant), smoothed over steps by an exponential moving average,
      m_i ← β m_i + (1 − β) g_i / L_i,   m_i = 0 before the first step (no bias correction, as LibMTL);
* gradient magnitude: every task contributes its normalised average, scaled to the largest norm,
      d = max_j ‖m_j‖ · Σ_i m_i / ‖m_i‖.

β defaults to 0.9 (flag `--db_beta`; LibMTL's `DB_beta`, with its `DB_beta_sigma` = 0). Losses are
clamped at `loss_epsilon` (counted) and must be positive, as for the log-based loss strategies. A task
whose average is zero contributes nothing. Solver: none (closed form).

Memory and state: the K × P average `ema` over the shared parameters is this strategy's own buffer,
beside the engine's K × P matrix; it is a tensor in `state_dict()`, so the trainer saves it with every
checkpoint (safetensors), together with `steps`. Non-finite gradients (an fp16 overflow) leave the
average untouched and are passed through summed, so a grad scaler skips the step. Because the update
mixes past gradients, the engine's logged "effective weights" (the least-squares coefficients of the
update on the current gradients) are only a projection of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import AggregatorWeighting, WeightingConfig, check_number
from .registry import register


@register
class DBMTLWeighting(AggregatorWeighting):
    """max_j ‖m_j‖ · Σ_i m_i/‖m_i‖ with m_i the moving average of ∇log L_i."""

    name = "db_mtl"
    description = "DB-MTL (Lin et al. 2023): EMA of log-loss gradients, each normalised, scaled to the largest norm (--db_beta)"
    log_based = True
    state_matrices = 1  # the moving averages m

    @dataclass
    class Config(WeightingConfig):
        db_beta: float = field(
            default=0.9, metadata={"help": "db_mtl: moving-average coefficient beta of the normalised gradients."}
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.db_beta = check_number("db_beta", self.db_beta, lambda v: 0.0 <= v < 1.0,
                                        "in [0, 1) (default 0.9; 0 = no averaging)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = self.config.db_beta
        self.ema: torch.Tensor | None = None
        self.steps = 0

    def aggregate(self, grads: torch.Tensor, losses: Sequence[float]) -> torch.Tensor:
        if not torch.isfinite(grads.sum(1)).all():  # row sums: no K × P temporary
            return grads.sum(0)
        self.ema = self.state_matrix(self.ema, grads, "gradient average")
        for i, loss in enumerate(losses):
            # Composed as A+db_mtl the losses were checked by A, which may not be log-based: guard here too.
            if loss < 0:
                raise ValueError(f"db_mtl: task {self.task_names[i]!r} has a negative loss {loss:.6g}; log L needs L > 0.")
            self.ema[i].mul_(self.beta).add_(grads[i], alpha=(1.0 - self.beta) / max(loss, self.loss_epsilon))
        self.steps += 1
        norms = torch.linalg.vector_norm(self.ema, dim=1).double()
        if not torch.isfinite(norms).all():  # a row norm beyond float32 (its squares overflow): redo those in float64
            norms = torch.stack([torch.linalg.vector_norm(row.double()) for row in self.ema])
        if not (norms > 0).any():
            return torch.zeros_like(grads[0])
        scale = torch.where(norms > 0, norms.max() / norms, torch.zeros_like(norms))
        update = scale.to(grads) @ self.ema
        if not torch.isfinite(update).all():  # a scale beyond float32 (rows far apart in size): row by row in float64
            update = sum((row.double() * float(s)).to(grads.dtype) for s, row in zip(scale, self.ema) if s > 0)
        return update

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {**super().state_dict(), "steps": self.steps}
        if self.ema is not None:
            state["ema"] = self.ema
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = int(state.get("steps", 0))
        self.ema = state["ema"].clone() if "ema" in state else None

    def hparams(self) -> dict[str, Any]:
        return {"beta": self.beta}
