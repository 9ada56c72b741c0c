"""What one step shares between its parts: how a task's passes run, which parameters are combined, the step's
bookkeeping, and what it reports."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..distributed import all_reduce_sum
from ..kinds import IGNORE_INDEX

#: `compute_loss(model, batch) -> loss`: how the engine turns one task's micro-batch into its loss.
ComputeLoss = Callable[[torch.nn.Module, Mapping[str, Any]], torch.Tensor]


def loss_units(batch: Mapping[str, Any]) -> int:
    """What a task's loss on `batch` is a mean over: its rows, or for per-token integer labels (token
    classification, shape (rows, tokens)) its labelled tokens (those not `IGNORE_INDEX`). Weighting micro-batches
    and ranks by these makes the step's loss the mean over all units, as one large batch would give."""
    labels = batch["labels"]
    if isinstance(labels, torch.Tensor) and labels.dim() > 1 and not labels.is_floating_point():
        return int((labels != IGNORE_INDEX).sum())
    return len(labels)


def model_loss(model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """The default `compute_loss`: the model's own loss for the batch."""
    return model(**batch).loss


@dataclass
class StepResult:
    """What one optimizer step measured, averaged across ranks (identical on every rank).

    `weights` are the effective weights dF/dL_i; `grad_norms` the global norms ‖g_i‖ of the task
    gradients (gradient-level strategies only, unscaled by any fp16 loss scale); `cosines` the K × K
    cosine similarities between the task gradients over the shared parameters (strategies that see
    all task gradients at once), the "conflict" between tasks. `grad_norm` is the global norm of the
    combined gradient left in `.grad` over every trainable parameter (None when it was not measured:
    under an fp16 grad scaler, or for a skipped step).
    """

    losses: list[float]
    weights: list[float]
    grad_norms: list[float] | None = None
    cosines: list[list[float]] | None = None
    #: `nan_policy` skipped the whole step (no update) / left these tasks out of it.
    skipped_step: bool = False
    skipped_tasks: list[str] = field(default_factory=list)
    grad_norm: float | None = None

    @property
    def mean_loss(self) -> float:
        """Mean of the task losses (of the tasks not skipped); NaN for a skipped step."""
        finite = [loss for loss in self.losses if math.isfinite(loss)]
        return sum(finite) / len(finite) if finite and not self.skipped_step else math.nan


class TaskPasses:
    """How a task's forward and backward passes run: the `compute_loss` hook and the accelerator (its grad
    scaler in `backward`, `no_sync`). Shared by the step shapes and the fault policy's re-run."""

    def __init__(self, accelerator: Any, compute_loss: ComputeLoss) -> None:
        self.accelerator = accelerator
        self.compute_loss = compute_loss

    def loss(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.compute_loss(model, batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    @property
    def fsdp2(self) -> bool:
        return bool(getattr(self.accelerator, "is_fsdp2", False))

    def sync_context(self, model: torch.nn.Module) -> Any:
        """DDP: backward passes stay rank-local (the engine sums them itself). FSDP2: every backward
        reduce-scatters as usual (its gradients are sharded DTensors, which the engine cannot all-reduce)."""
        return contextlib.nullcontext() if self.fsdp2 else self.accelerator.no_sync(model)

    def loss_scale(self) -> float:
        """The fp16 grad scaler's current scale (1.0 without one). Constant within a step: the scaler
        updates it at the optimizer step."""
        scaler = getattr(self.accelerator, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0


def is_head(name: str, task: str | None = None) -> bool:
    """Is parameter `name` in a task head (of `task`, if given)? Names may carry a wrapper prefix."""
    prefix = "heads." if task is None else f"heads.{task}."
    return name.startswith(prefix) or f".{prefix}" in name


@dataclass
class StepParameters:
    """The trainable parameters of one step, grouped.

    `combined`: those whose gradients are combined across tasks. Heads stay outside when a strategy works
    on the shared encoder only (`heads_apart`: each head then gets its own task's raw gradient, in
    `own_head`). `probe`: the last shared weight matrix, whose per-task gradient norm GradNorm-like
    strategies watch (`probes_last_shared_layer`), else None.
    """

    named: list[tuple[str, torch.nn.Parameter]]
    combined: list[torch.nn.Parameter]
    own_head: dict[str, list[torch.nn.Parameter]]
    probe: torch.nn.Parameter | None

    @classmethod
    def of(cls, model: torch.nn.Module, task_names: Sequence[str], heads_apart: bool, probes: bool) -> StepParameters:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if heads_apart:
            combined = [p for n, p in named if not is_head(n)]
            own_head = {t: [p for n, p in named if is_head(n, t)] for t in task_names}
        else:
            combined = [p for _, p in named]
            own_head = {t: [] for t in task_names}
        probe = next(p for n, p in reversed(named) if not is_head(n) and p.dim() >= 2) if probes else None
        return cls(named, combined, own_head, probe)

    @property
    def device(self) -> torch.device:
        return self.named[0][1].device

    def all_grads(self) -> list[torch.Tensor]:
        return [p.grad for _, p in self.named if p.grad is not None]

    def combined_grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.combined if p.grad is not None]

    def head_grads(self, task: str) -> list[torch.Tensor]:
        return [p.grad for p in self.own_head[task] if p.grad is not None]


@dataclass
class StepState:
    """One step's bookkeeping, appended to task by task (index i = task i once the task is done).

    `counts[m][i]`: this process's rows of task i in micro-batch m; `totals[i]`: task i's rows over all
    micro-batches and ranks; `shares[m][i] = counts[m][i] / totals[i]`, the factor of micro-batch m's
    loss, so that the summed gradients are those of the global mean loss. `losses`: rank-averaged task
    losses (NaN where not finite); `checked`: the values the strategy uses (clamped; NaN for a dropped
    task until `fill_dropped`); `log_factors`: log h_i (−inf for a dropped task); `norms`: gradient-level
    strategies' ‖g_i‖; `probe_norms`: the probed layer's per-task norms; `dropped`: tasks left out by
    `nan_policy=skip_task`; `absent`: tasks with no rows in this step (`--task_sampling one_per_step`: every task
    but the drawn one), whose placeholders are those of a dropped task but count as no skip; `rows`: the K × P
    path's task gradients until they are stacked.
    """

    step: int
    micro_batches: Sequence[Mapping[str, Mapping[str, Any]]]
    params: StepParameters
    loss_scale: float
    counts: list[list[float]]
    totals: list[float]
    shares: list[list[float]]
    losses: list[float] = field(default_factory=list)
    checked: list[float] = field(default_factory=list)
    log_factors: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    probe_norms: list[float] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    absent: list[int] = field(default_factory=list)
    rows: list[list[torch.Tensor | None]] = field(default_factory=list)

    @classmethod
    def begin(cls, step: int, micro_batches: Sequence[Mapping[str, Mapping[str, Any]]], task_names: Sequence[str],
              params: StepParameters, loss_scale: float) -> StepState:
        # Loss units (rows; labelled tokens for a token task) of every task over all micro-batches and ranks: each
        # micro-batch loss, a mean over its units, is weighted by its share, so the step's loss is the mean over all.
        # A task with no rows in the step (one task per step) counts 0 everywhere: it is `absent`.
        counts = torch.tensor([[loss_units(mb[t]) if t in mb else 0 for t in task_names] for mb in micro_batches],
                              dtype=torch.float64)
        totals = counts.sum(0).to(params.device)
        all_reduce_sum([totals])
        totals = totals.cpu()
        shares = counts / totals.clamp(min=1)
        absent = [i for i, t in enumerate(task_names) if not any(t in mb for mb in micro_batches)]
        return cls(step, micro_batches, params, loss_scale, counts.tolist(), totals.tolist(), shares.tolist(),
                   absent=absent)

    @property
    def num_micro_batches(self) -> int:
        return len(self.micro_batches)

    @property
    def scaled(self) -> bool:
        """fp16 with a grad scaler: non-finite gradients are the scaler's business (it skips the step)."""
        return self.loss_scale != 1.0

    def drop(self, i: int, gradient_level: bool) -> None:
        """Record task i as left out: its values become placeholders (`fill_dropped` replaces them)."""
        self.dropped.append(i)
        self.placeholders(gradient_level)

    def placeholders(self, gradient_level: bool) -> None:
        """The values of a task that is not in the step (dropped, or absent): NaN, and a factor of 0."""
        self.checked.append(math.nan)
        self.log_factors.append(-math.inf)
        if gradient_level:
            self.norms.append(math.nan)
        if self.params.probe is not None and len(self.probe_norms) < len(self.checked):
            self.probe_norms.append(math.nan)

    def fill_dropped(self) -> None:
        """Strategies that need K values get the mean of the finite tasks' values for a dropped task."""
        if not self.dropped:
            return
        self.checked = _fill_skipped(self.checked, self.dropped)
        self.norms = _fill_skipped(self.norms, self.dropped) if self.norms else self.norms
        self.probe_norms = _fill_skipped(self.probe_norms, self.dropped) if self.probe_norms else self.probe_norms


def _fill_skipped(values: Sequence[float], skipped: Sequence[int]) -> list[float]:
    """`values` with the entries of skipped tasks replaced by the mean of the others."""
    kept = [v for i, v in enumerate(values) if i not in skipped and math.isfinite(v)]
    fill = sum(kept) / len(kept) if kept else math.nan
    return [fill if i in skipped else v for i, v in enumerate(values)]
