"""The task-by-task training step: forward and backward one task at a time, combine the gradients.

Only one task's activations are alive at a time. A strategy's gradient is Σ_i c·h_i·∇L_i (see
`hf_mtl.weighting.base`), so each task's backward can be scaled by its own factor h_i the moment its
loss is known, and the common factor c is applied to the summed gradient at the end. Factors come as
logarithms; the running sum keeps a reference log-scale and rescales what it holds whenever a larger
factor arrives (a streaming log-sum-exp), so factors like L^199 never overflow.

Two ways to hold the sum:

* direct (one micro-batch per optimizer step, a loss-level strategy): task i's backward adds
  h_i·∇L_i straight into `.grad`. No buffer beyond the gradients themselves.
* per-task (gradient accumulation, or a strategy that needs task i's own gradient): task i's
  micro-batch gradients are summed in `.grad` first (tasks outer, micro-batches inner), then scaled
  and moved into a running sum; the previous sum is held aside meanwhile, which costs one extra
  parameter-sized buffer. With k micro-batches this gives exactly the update of one k-times larger
  batch, because h_i is computed from the loss of the whole accumulated batch.

Distributed data parallel: every rank runs the same tasks in the same order (`hf_mtl.sampling`). Losses
are averaged across ranks before any factor is computed, so all ranks use identical weights. The
backward passes run under `no_sync` and the gradients are summed across ranks explicitly (each
micro-batch's loss is pre-scaled by its share of the global row count): once per step for loss-level
strategies, once per task when a strategy needs the task's global gradient. Syncing through DDP's
own hooks instead would reduce every task's backward and, with the last task's backward alone
synced, could leave another task's head with a rank-local gradient (DESIGN §3).

FSDP2: gradients are sharded DTensors and cannot be all-reduced by hand, so every backward
reduce-scatters as FSDP does by itself (no `no_sync`); FSDP's mean over ranks is turned into the
sum the shares above expect, and norms are global over all shards. Aggregators, which need whole
task-gradient rows, are refused under FSDP2.

Numerical faults (`nan_policy`): a non-finite task loss, or a finite loss whose gradient is not finite.
The losses are checked as they arrive (they are computed anyway); the gradient is checked once per step
on the combined gradient (one read of the gradients, after the cross-rank reduction, so every rank
takes the same decision), and per task where per-task gradients exist anyway. With an fp16 grad scaler
non-finite gradients are the scaler's business (it skips the step and lowers its scale).

* `raise` (default): FloatingPointError naming the step, the task and the batch (micro-batch and
  training-set rows). For a non-finite combined gradient the tasks are re-run one by one to name the
  one(s) whose gradient is not finite.
* `skip_step`: the step makes no update: every gradient (the model's and the strategy's own
  parameters') is set to None, so the optimizer skips every parameter (AdamW's step count and moments
  do not move). The Trainer still counts the step and advances the learning-rate schedule.
* `skip_task`: the task contributes nothing this step: its gradient is dropped, its weight is 0 and its
  loss is left out of the logged means. The other tasks' factors come from the strategy as usual;
  where a strategy needs all K losses (common factors such as `power`'s, `observe`) or K gradient norms,
  the skipped task's value is replaced by the mean of the finite tasks' values. To tell a task's
  non-finite gradient apart, every task's gradient is summed on its own (the per-task path: one extra
  parameter-sized buffer). Aggregators (all K gradients at once) cannot drop a row: for them a
  skipped task skips the step. So does a step in which every task is skipped.

Skips are counted (`skipped_steps`, `skipped_tasks`, checkpointed with the weighting state) and
logged as a warning naming the step and the task.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from .weighting import AggregatorWeighting, GradientWeighting, Weighting

logger = logging.getLogger(__name__)

#: What a non-finite loss or gradient does (see the module docstring).
NAN_POLICIES = ("raise", "skip_step", "skip_task")


@dataclass
class StepResult:
    """What one optimizer step measured, averaged across ranks (identical on every rank).

    `weights` are the effective weights dF/dL_i; `grad_norms` the global norms ‖g_i‖ of the task
    gradients (gradient-level strategies only, unscaled by any fp16 loss scale); `cosines` the K × K
    cosine similarities between the task gradients over the shared parameters (strategies that see
    all task gradients at once), the "conflict" between tasks.
    """

    losses: list[float]
    weights: list[float]
    grad_norms: list[float] | None = None
    cosines: list[list[float]] | None = None
    #: `nan_policy` skipped the whole step (no update) / left these tasks out of it.
    skipped_step: bool = False
    skipped_tasks: list[str] = field(default_factory=list)

    @property
    def mean_loss(self) -> float:
        """Mean of the task losses (of the tasks not skipped); NaN for a skipped step."""
        finite = [loss for loss in self.losses if math.isfinite(loss)]
        return sum(finite) / len(finite) if finite and not self.skipped_step else math.nan


class _SkipStep(Exception):
    """Abandons the current step (nan_policy skip_step, or skip_task where the task cannot be left out)."""

    def __init__(self, reason: str, losses: list[float]) -> None:
        super().__init__(reason)
        self.losses = losses


class _RunningSum:
    """Σ_i exp(a_i)·g_i held as exp(ref)·S, with S rescaled whenever a larger a_i arrives."""

    def __init__(self) -> None:
        self.ref: float | None = None

    def admit(self, log_factor: float, held: list[torch.Tensor]) -> float:
        """Register a new term; rescale the `held` sum if needed; return the new term's multiplier."""
        if log_factor == -math.inf:
            return 0.0
        if self.ref is None or log_factor > self.ref:
            if self.ref is not None and held:
                torch._foreach_mul_(held, math.exp(self.ref - log_factor))
            self.ref = log_factor
            return 1.0
        return math.exp(log_factor - self.ref)

    def final_multiplier(self, common_log_factor: float) -> float:
        if self.ref is None:
            return 1.0
        total = self.ref + common_log_factor
        return math.exp(total) if total > -math.inf else 0.0


class TaskByTaskStep:
    """Runs one optimizer step's forward/backward passes for all tasks and leaves the combined gradient in `.grad`.

    Args:
        weighting: the strategy that turns the task losses (or gradients) into factors.
        task_names: the tasks, in the order every rank processes them.
        accelerator: the Trainer's accelerator (backward with its grad scaler, `no_sync`).
        nan_policy: `raise`, `skip_step` or `skip_task` (see the module docstring).
        locate_rows: `(step, micro_batch, task_index) -> training-set rows` of this process's micro-batch,
            used to name the rows of a faulty batch; None names the micro-batch only.
    """

    def __init__(
        self,
        weighting: Weighting,
        task_names: Sequence[str],
        accelerator: Any,
        nan_policy: str = "raise",
        locate_rows: Callable[[int, int, int], list[int] | None] | None = None,
    ) -> None:
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"--nan_policy {nan_policy!r} is not one of: {', '.join(NAN_POLICIES)}.")
        self.weighting = weighting
        self.task_names = list(task_names)
        self.accelerator = accelerator
        self.nan_policy = nan_policy
        self.locate_rows = locate_rows
        self.skipped_steps = 0
        self.skipped_tasks = dict.fromkeys(self.task_names, 0)

    # ---- fault counters (checkpointed with the weighting state) ----------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "skipped_tasks": dict(self.skipped_tasks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        saved = state.get("skipped_tasks") or {}
        self.skipped_tasks = {name: int(saved.get(name, 0)) for name in self.task_names}

    def skip_counts(self) -> dict[str, int]:
        """The non-zero skip counters as training-log entries: `nan_skipped_steps`, `nan_skipped_<task>`."""
        counts = {"nan_skipped_steps": self.skipped_steps,
                  **{f"nan_skipped_{name}": n for name, n in self.skipped_tasks.items()}}
        return {key: n for key, n in counts.items() if n}

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    @property
    def fsdp2(self) -> bool:
        return bool(getattr(self.accelerator, "is_fsdp2", False))

    def _sync_context(self, model: torch.nn.Module) -> Any:
        """DDP: backward passes stay rank-local (the engine sums them itself). FSDP2: every backward
        reduce-scatters as usual (its gradients are sharded DTensors, which the engine cannot all-reduce)."""
        return contextlib.nullcontext() if self.fsdp2 else self.accelerator.no_sync(model)

    def _all_reduce_sum(self, tensors: list[torch.Tensor]) -> None:
        """Sum across ranks in place. FSDP2 gradients (DTensors) were already averaged by their
        reduce-scatter: multiplying by the world size turns that mean into the sum."""
        sharded = [t for t in tensors if hasattr(t, "placements")]
        if sharded:
            torch._foreach_mul_(sharded, float(dist.get_world_size()))
        plain = [t for t in tensors if not hasattr(t, "placements")]
        if self.distributed and plain:
            handles = [dist.all_reduce(t, op=dist.ReduceOp.SUM, async_op=True) for t in plain]
            for handle in handles:
                handle.wait()

    def _loss_scale(self) -> float:
        scaler = getattr(self.accelerator, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def __call__(self, model: torch.nn.Module, micro_batches: Sequence[dict[str, dict[str, Any]]], step: int) -> StepResult:
        """One optimizer step's gradients for optimizer step number `step` (1-based, as the Trainer logs it)."""
        try:
            return self._step(model, micro_batches, step)
        except _SkipStep as skip:
            for p in [*model.parameters(), *self.weighting.parameters()]:
                p.grad = None
            self.skipped_steps += 1
            logger.warning("step %d skipped (--nan_policy %s): %s", step, self.nan_policy, skip)
            losses = skip.losses + [math.nan] * (len(self.task_names) - len(skip.losses))
            return StepResult(losses=losses, weights=[0.0] * len(self.task_names), skipped_step=True)

    def _where(self, step: int, task: int, micro_batches: Sequence[int], total: int) -> str:
        """Names this process's micro-batch(es) of `task` at `step`, with their training rows when known."""
        parts = []
        for m in micro_batches:
            rows = self.locate_rows(step, m, task) if self.locate_rows is not None else None
            shown = "" if rows is None else f", training rows {rows[:8]}{' ...' if len(rows) > 8 else ''}"
            parts.append(f"micro-batch {m + 1} of {total}{shown}")
        rank = f" on rank {dist.get_rank()}" if self.distributed else ""
        return "; ".join(parts) + rank

    def _finite_everywhere(self, value: float, device: torch.device) -> bool:
        """Is `value` finite on every rank (one scalar all-reduce: NaN/inf anywhere spreads to the sum)."""
        flag = torch.tensor([value], dtype=torch.float64, device=device)
        self._all_reduce_sum([flag])
        return math.isfinite(float(flag.item()))

    def _step(self, model: torch.nn.Module, micro_batches: Sequence[dict[str, dict[str, Any]]], step: int) -> StepResult:
        weighting = self.weighting
        skip_task = self.nan_policy == "skip_task"
        # skip_task sums every task's gradient on its own so that a non-finite one can be told apart.
        mode = "matrix" if isinstance(weighting, AggregatorWeighting) else (
            "task" if isinstance(weighting, GradientWeighting) or len(micro_batches) > 1 or skip_task else "direct")
        if mode == "matrix" and self.fsdp2:
            raise NotImplementedError(
                f"--weighting {weighting.name} stacks whole task gradients, which FSDP2 shards across ranks: "
                "train it with DDP (torchrun without --fsdp), or use a per-task strategy such as grad_normalize."
            )
        scaled = self._loss_scale() != 1.0  # fp16: the grad scaler handles non-finite gradients
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        device = named[0][1].device
        # Parameters whose gradients are combined across tasks. Heads stay outside when a strategy works
        # on the shared encoder only (each head then gets its own task's raw gradient).
        heads_apart = mode == "matrix" or getattr(weighting, "norm_scope", "all") == "shared"
        combined = [p for n, p in named if not (heads_apart and _is_head(n))]
        own_head = {t: [p for n, p in named if heads_apart and _is_head(n, t)] for t in self.task_names}
        # GradNorm-like strategies watch each task's gradient norm on the last shared weight matrix.
        probe = None
        if weighting.probes_last_shared_layer:
            probe = next(p for n, p in reversed(named) if not _is_head(n) and p.dim() >= 2)
        probe_norms: list[float] = []

        # Rows of every task over all micro-batches and ranks: each micro-batch loss is weighted by its share.
        counts = torch.tensor(
            [[len(mb[t]["labels"]) for t in self.task_names] for mb in micro_batches], dtype=torch.float64
        )
        totals = counts.sum(0).to(device)
        self._all_reduce_sum([totals])
        shares = (counts / totals.cpu()).tolist()

        running = _RunningSum()
        held: list[torch.Tensor | None] = [None] * len(combined)
        rows: list[list[torch.Tensor | None]] = []
        losses, checked, log_factors, norms = [], [], [], []
        skipped: list[int] = []
        k = len(micro_batches)

        def skip(i: int, task: str, reason: str) -> None:
            """Apply skip_step / skip_task to task i, whose gradient (task/matrix mode) is in `.grad` alone."""
            if self.nan_policy == "skip_step" or mode == "matrix":
                raise _SkipStep(f"task {task!r}: {reason}", losses)
            if mode != "direct":
                for p, h in zip(combined, held):
                    p.grad = h
                for p in own_head[task]:
                    p.grad = None
            skipped.append(i)
            checked.append(math.nan)
            log_factors.append(-math.inf)
            if isinstance(weighting, GradientWeighting):
                norms.append(math.nan)
            if probe is not None and len(probe_norms) < len(checked):
                probe_norms.append(math.nan)
            self.skipped_tasks[task] += 1
            logger.warning("step %d: task %r left out of the step (--nan_policy skip_task): %s", step, task, reason)

        with self._sync_context(model):
            for i, task in enumerate(self.task_names):
                if mode != "direct":
                    held = [p.grad for p in combined]
                    for p in combined:
                        p.grad = None
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                parts = []
                for m, mb in enumerate(micro_batches):
                    loss = model(**mb[task]).loss
                    parts.append(loss.detach())
                    loss_sum += loss.detach().double() * float(counts[m, i])
                    if mode != "direct":
                        self.accelerator.backward(loss * shares[m][i])
                self._all_reduce_sum([loss_sum])
                losses.append(float(loss_sum / totals[i].cpu()))
                if not math.isfinite(losses[-1]):
                    bad = [m for m, part in enumerate(parts) if not torch.isfinite(part)][:1]
                    where = self._where(step, i, bad, k) if bad else f"a micro-batch of another rank (of {k} each)"
                    if self.nan_policy != "raise":
                        skip(i, task, f"non-finite loss {losses[-1]} ({where})")
                        continue
                    try:
                        weighting.check_loss(i, losses[-1])
                    except FloatingPointError as err:
                        raise FloatingPointError(
                            f"step {step}: {err} The batch: {where}. --nan_policy skip_step or skip_task skips such "
                            "steps or tasks instead of stopping.") from None
                checked.append(weighting.check_loss(i, losses[-1]))

                if mode == "direct":
                    log_factor = weighting.task_log_factor(i, checked[-1])
                    multiplier = running.admit(log_factor, [p.grad for p in combined if p.grad is not None])
                    before = probe.grad.clone() if probe is not None and probe.grad is not None else None
                    self.accelerator.backward(loss * (shares[0][i] * multiplier))
                    log_factors.append(log_factor)
                    if probe is not None:
                        delta = probe.grad - before if before is not None else probe.grad.clone()
                        probe_norms.append(self._probe_norm(delta) / multiplier if multiplier > 0 else math.nan)
                    continue

                if probe is not None:
                    probe_norms.append(self._probe_norm(probe.grad.clone()))
                fresh = [p.grad for p in combined if p.grad is not None]
                if mode == "matrix" or isinstance(weighting, GradientWeighting):
                    # The task's global gradient: reduce it now (with its own head when heads stay apart).
                    self._all_reduce_sum(fresh + [p.grad for p in own_head[task] if p.grad is not None])
                if mode == "matrix":
                    if not scaled and not math.isfinite(
                            _global_norm(fresh + [p.grad for p in own_head[task] if p.grad is not None])):
                        self._gradient_fault(step, [i], losses, k, lambda reason: skip(i, task, reason))
                    rows.append([p.grad for p in combined])
                    for p, h in zip(combined, held):
                        p.grad = h
                    continue
                if isinstance(weighting, GradientWeighting):
                    norms.append(_global_norm(fresh) / self._loss_scale())
                    if not math.isfinite(norms[-1]) and not scaled:
                        norms.pop()
                        self._gradient_fault(step, [i], losses, k, lambda reason: skip(i, task, reason))
                        continue
                    log_factor = weighting.gradient_log_factor(i, norms[-1])
                    if not math.isfinite(norms[-1]) and scaled:
                        # fp16 overflow: let the inf reach the grad scaler, which skips the step and lowers its scale.
                        log_factor = running.ref if running.ref is not None else 0.0
                else:
                    if skip_task and not scaled and not self._finite_everywhere(
                            _global_norm(fresh + [p.grad for p in own_head[task] if p.grad is not None]), device):
                        skip(i, task, f"finite loss {losses[-1]:.6g} but a non-finite gradient ({self._where(step, i, range(k), k)})")
                        continue
                    log_factor = weighting.task_log_factor(i, checked[-1])
                log_factors.append(log_factor)
                multiplier = running.admit(log_factor, [h for h in held if h is not None])
                for j, (h, p) in enumerate(zip(held, combined)):
                    if p.grad is None:
                        continue
                    if h is None:
                        held[j] = p.grad.mul_(multiplier)
                    else:
                        h.add_(p.grad, alpha=multiplier)
                for p, h in zip(combined, held):
                    p.grad = h

        if len(skipped) == len(self.task_names):
            raise _SkipStep("every task was left out", losses)
        if skipped:
            # Strategies that need K values get the mean of the finite tasks' values for a skipped task.
            checked = _fill_skipped(checked, skipped)
            norms = _fill_skipped(norms, skipped) if norms else norms
            probe_norms = _fill_skipped(probe_norms, skipped) if probe_norms else probe_norms
        weighting.observe(checked, probe_norms if probe is not None else None)
        if mode == "matrix":
            weights, cosines = self._aggregate(combined, rows, checked)
            self._check_combined_gradient(model, micro_batches, named, losses, step)
            return StepResult(losses=losses, weights=weights, cosines=cosines)
        if isinstance(weighting, GradientWeighting):
            common = weighting.gradient_common_log_factor(norms, checked)
        else:
            common = weighting.common_log_factor(checked)
            # Loss-level: the rank-local sums are reduced once (the factors are the same on every rank).
            self._all_reduce_sum([p.grad for _, p in named if p.grad is not None])
        final = running.final_multiplier(common)
        if final != 1.0:
            torch._foreach_mul_([p.grad for p in combined if p.grad is not None], final)
        if not scaled:
            self._check_combined_gradient(model, micro_batches, named, losses, step)
        weights = [math.exp(f + common) if f > -math.inf else 0.0 for f in log_factors]
        if skipped:
            norms = [math.nan if i in skipped else n for i, n in enumerate(norms)]
        return StepResult(losses=losses, weights=weights, grad_norms=norms or None,
                          skipped_tasks=[self.task_names[i] for i in skipped])

    def _gradient_fault(self, step: int, tasks: Sequence[int], losses: Sequence[float], k: int,
                        skip_task: Callable[[str], None] | None) -> None:
        """A finite loss with a non-finite gradient: raise, skip the step, or call `skip_task(reason)`."""
        names = [self.task_names[i] for i in tasks]
        where = "; ".join(f"{self.task_names[i]!r}: {self._where(step, i, range(k), k)}" for i in tasks)
        reason = (f"task(s) {names} have finite losses "
                  f"({', '.join(f'{losses[i]:.6g}' for i in tasks)}) but non-finite gradients ({where})")
        if self.nan_policy == "raise":
            raise FloatingPointError(
                f"step {step}: {reason}. Lower the learning rate or check those tasks' data; --nan_policy skip_step "
                "or skip_task skips such steps or tasks instead of stopping.")
        if self.nan_policy == "skip_task" and skip_task is not None:
            skip_task("non-finite gradient")
            return
        raise _SkipStep(reason, list(losses))

    def _check_combined_gradient(self, model: torch.nn.Module, micro_batches: Sequence[dict[str, dict[str, Any]]],
                                 named: list[tuple[str, torch.nn.Parameter]], losses: list[float], step: int) -> None:
        """One read of the (already reduced, so rank-identical) gradients; on a non-finite norm, find the
        task(s) whose gradient is not finite by re-running them one at a time, then apply the policy."""
        if math.isfinite(_global_norm([p.grad for _, p in named if p.grad is not None])):
            return
        bad = []
        if self.nan_policy == "raise":
            with self._sync_context(model):
                for i, task in enumerate(self.task_names):
                    model.zero_grad(set_to_none=True)
                    for mb in micro_batches:
                        self.accelerator.backward(model(**mb[task]).loss)
                    if not self._finite_everywhere(_global_norm([p.grad for _, p in named if p.grad is not None]),
                                                   named[0][1].device):
                        bad.append(i)
            model.zero_grad(set_to_none=True)
        if not bad:  # every task finite on its own: the weighted sum overflowed
            if self.nan_policy == "raise":
                raise FloatingPointError(
                    f"step {step}: the combined gradient is not finite although every task's loss and gradient is "
                    f"(losses {[f'{v:.6g}' for v in losses]}): their combination by {self.weighting.name!r} "
                    "overflowed. Lower the learning rate or the loss scales; --nan_policy skip_step skips such steps.")
            raise _SkipStep("the combined gradient is not finite", list(losses))
        self._gradient_fault(step, bad, losses, len(micro_batches), None)

    def _probe_norm(self, local_gradient: torch.Tensor) -> float:
        """Global norm of one task's gradient on the probed layer (summed across ranks first)."""
        self._all_reduce_sum([local_gradient])
        return _global_norm([local_gradient]) / self._loss_scale()

    def _aggregate(
        self, params: list[torch.Tensor], rows: list[list[torch.Tensor | None]], losses: list[float]
    ) -> tuple[list[float], list[list[float]]]:
        """Stack the K task gradients of the shared parameters (K × P), let the strategy combine them,
        write the result into `.grad` (added to the heads' raw gradients already there)."""
        sizes = [p.numel() for p in params]
        matrix = torch.zeros(len(rows), sum(sizes), dtype=torch.float32, device=params[0].device)
        for i, row in enumerate(rows):
            for g, chunk, p in zip(row, matrix[i].split(sizes), params):
                if g is not None:
                    chunk.copy_(g.reshape(-1))
            rows[i] = []  # free the task's gradient tensors as soon as they are copied
        matrix /= self._loss_scale()
        update = self.weighting.aggregate(matrix, losses) * self._loss_scale()
        for p, chunk in zip(params, update.split(sizes)):
            p.grad = chunk.view_as(p).to(p.dtype) if p.grad is None else p.grad.add_(chunk.view_as(p))
        gram = (matrix @ matrix.T).double()
        norms = gram.diagonal().sqrt().clamp_min(1e-30)
        cosines = gram / norms[:, None] / norms[None, :]
        # Effective weights: the coefficients of the task gradients in the update (least squares).
        coefficients = torch.linalg.lstsq(gram, (matrix @ update.float()).double()[:, None]).solution[:, 0]
        if self.distributed:
            # LAPACK's least squares can differ in the last bits between processes (alignment-dependent
            # kernels) even on identical inputs: log rank 0's numbers everywhere (K + K² values).
            logged = torch.cat([coefficients, cosines.flatten()])
            dist.broadcast(logged, src=0)
            coefficients, cosines = logged[: len(rows)], logged[len(rows) :].view_as(cosines)
        return coefficients.tolist(), cosines.tolist()


def _fill_skipped(values: Sequence[float], skipped: Sequence[int]) -> list[float]:
    """`values` with the entries of skipped tasks replaced by the mean of the others."""
    kept = [v for i, v in enumerate(values) if i not in skipped and math.isfinite(v)]
    fill = sum(kept) / len(kept) if kept else math.nan
    return [fill if i in skipped else v for i, v in enumerate(values)]


def _is_head(name: str, task: str | None = None) -> bool:
    """Is parameter `name` in a task head (of `task`, if given)? Names may carry a wrapper prefix."""
    prefix = "heads." if task is None else f"heads.{task}."
    return name.startswith(prefix) or f".{prefix}" in name


def _global_norm(grads: list[torch.Tensor]) -> float:
    """‖grads‖₂; for FSDP2's sharded DTensor gradients the norm over all shards of all ranks."""
    if not grads:
        return 0.0
    if hasattr(grads[0], "placements"):
        return float(torch.nn.utils.get_total_norm(grads, 2.0).full_tensor().double())
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)).double(), 2.0))
