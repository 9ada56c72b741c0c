"""`gradnorm`: learned weights that balance the task gradient norms (Chen et al. 2018).

    F = Σ_i w_i L_i,    dF/dL_i = w_i    (log h_i = log w_i, log c = 0),    Σ_i w_i = K

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing
in Deep Multitask Networks", ICML 2018 (arXiv:1711.02257). With W the last shared weight matrix (the
encoder's pooler here), n_i = ‖∇_W L_i‖ and G_i = w_i n_i, the weights follow the gradient of

    L_grad = Σ_i |G_i − Ḡ · r_i^α|,    Ḡ = mean_j G_j,    r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))

with the target Ḡ r_i^α held constant: ∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α) · n_i. Tasks that train
slower (larger r_i) get larger gradient targets; α (`gradnorm_alpha`, default 1.5) sets how strongly.
L_i(0) is the loss of the first optimizer step (state).

The w_i start at 1 and are a `torch.nn.Parameter` in the trainer's optimizer (own group, learning rate
`weighting_lr`, default 0.025 as in the paper, no weight decay). The paper renormalises them to sum K
after every update; the update happens in the optimizer step, so here the renormalisation is applied
when the values are next read: every factor uses K w_i / Σ_j w_j, and `observe` first writes those
renormalised values back into w (which leaves this step's factors unchanged), then sets w.grad at them.
Before renormalising, each w_i is raised to at least 1e-6 times the largest |w_j|, so a weight that an
update pushes below zero keeps its task in the update with a tiny weight (the paper does not say;
LibMTL uses a softmax instead). The floor scales with w, so renormalised values renormalise to
themselves.

`probes_last_shared_layer` makes the trainer measure n_i (global across ranks, scaled back from the
task's factor). A non-finite norm (an fp16 overflow step, which the grad scaler skips) leaves w without
a gradient for that step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import check_number
from .registry import register
from .uncertainty import LearnedTaskValues, by_task, from_task_dict

#: Before renormalisation each weight is raised to at least this times the largest |w_j| (log w stays finite).
MIN_RELATIVE_WEIGHT = 1e-6


@register
class GradNormWeighting(LearnedTaskValues):
    """F = Σ_i w_i L_i with learned w (sum K) pulled toward equal-rate gradient norms. State: w and L(0)."""

    name = "gradnorm"
    description = "GradNorm: learned weights balancing gradient norms on the last shared layer (--gradnorm_alpha)"
    log_based = True
    probes_last_shared_layer = True
    state_key = "weights"
    initial_value = 1.0

    @dataclass
    class Config(LearnedTaskValues.Config):
        gradnorm_alpha: float = field(default=1.5, metadata={"help": "gradnorm: restoring-force exponent alpha."})

        def __post_init__(self) -> None:
            super().__post_init__()
            self.gradnorm_alpha = check_number("gradnorm_alpha", self.gradnorm_alpha, lambda v: v >= 0,
                                               "a finite number >= 0 (default 1.5; the paper uses 0.12 to 3)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = self.config.gradnorm_alpha
        self.initial_losses: np.ndarray | None = None

    def normalized(self) -> np.ndarray:
        """K w_i / Σ_j w_j with each w_i raised to at least `MIN_RELATIVE_WEIGHT` · max_j |w_j| (float64)."""
        w = self.current().numpy()
        floor = MIN_RELATIVE_WEIGHT * np.abs(w).max()
        if not (math.isfinite(floor) and floor > 0):
            raise FloatingPointError(
                f"weighting {self.name!r}: the learned weights are {w.tolist()}; they must be finite and not all 0. "
                "Lower --weighting_lr."
            )
        w = np.maximum(w, floor)
        return self.num_tasks * w / w.sum()

    def task_log_factor(self, i: int, loss: float) -> float:
        return math.log(self.normalized()[i])

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses * losses.new_tensor(self.normalized())).sum()

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        if probe_norms is None:
            raise ValueError(
                f"weighting {self.name!r} needs each task's gradient norm on the last shared layer; the trainer "
                "measures them because probes_last_shared_layer is True. Call observe(losses, probe_norms)."
            )
        w = self.normalized()
        with torch.no_grad():
            self.values.copy_(torch.from_numpy(w))
        norms = np.asarray(probe_norms, dtype=np.float64)
        if not np.all(np.isfinite(norms)):
            self.values.grad = None
            return
        loss = np.asarray(losses, dtype=np.float64)
        if self.initial_losses is None:
            self.initial_losses = loss
        ratios = loss / self.initial_losses
        rates = ratios / ratios.mean()
        norms_weighted = w * norms
        targets = norms_weighted.mean() * rates**self.alpha
        self.values.grad = torch.from_numpy(np.sign(norms_weighted - targets) * norms).to(self.values.dtype)

    def state_dict(self) -> dict[str, Any]:
        initial = None if self.initial_losses is None else by_task(self, self.initial_losses)
        return {**super().state_dict(), "initial_losses": initial}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("initial_losses")
        self.initial_losses = None if saved is None else np.array(from_task_dict(self, saved, "initial losses"))

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, **super().hparams()}
