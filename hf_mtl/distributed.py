"""The collectives the step engine, the Trainer and the callbacks need, through accelerate.

Every reduction goes through `accelerate.utils.reduce` / `broadcast` and the process's
`accelerate.PartialState`, so each backend accelerate supports (NCCL, gloo for MULTI_CPU, XCCL, HCCL,
DeepSpeed's and FSDP's process groups, ...) works without a code path of ours. In a single process
every helper returns at once (no tensor is copied, no host sync).

`accelerate.utils.reduce` returns a reduced *clone* (it never writes into its argument), so
`all_reduce_sum`, which sums in place, packs the tensors of one dtype and device into flat buckets of
at most `BUCKET_BYTES` (`torch._utils._flatten_dense_tensors`), reduces each bucket with one call and
copies the sums back: a handful of calls per step, and a transient two buckets of memory (the bucket
and accelerate's clone of it) instead of a second copy of every gradient.

FSDP2 gradients are sharded DTensors that their own reduce-scatter has already averaged over the
ranks; they are not reduced again: `all_reduce_sum` multiplies them by the world size, which turns
that mean into the sum the engine's row shares expect, and `global_norm` takes their norm over all
shards of all ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from accelerate import PartialState
from accelerate.utils import broadcast, reduce
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

#: Largest flat buffer `all_reduce_sum` packs tensors into (a larger tensor is reduced on its own).
BUCKET_BYTES = 32 * 2**20


def _state() -> PartialState | None:
    """The process's accelerate state, None while nothing set one up and no process group exists (one
    process: nothing to reduce). accelerate builds it from the launcher's environment on first use."""
    if PartialState._shared_state != {}:
        return PartialState()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return PartialState()  # a process group set up by hand: let accelerate adopt it
    return None


def world_size() -> int:
    """The number of processes training together (1 without a distributed launch)."""
    state = _state()
    return state.num_processes if state is not None else 1


def process_index() -> int:
    """This process's rank (0 without a distributed launch)."""
    state = _state()
    return state.process_index if state is not None else 0


def is_distributed() -> bool:
    """Do several processes train together (so that the helpers below communicate)?"""
    return world_size() > 1


def _is_sharded(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "placements")  # a DTensor, without importing torch.distributed.tensor


def _buckets(tensors: Iterable[torch.Tensor], limit: int = BUCKET_BYTES) -> list[list[torch.Tensor]]:
    """`tensors` grouped by dtype and device, in order, each group cut into buckets of at most `limit` bytes
    (a tensor larger than `limit` gets a bucket of its own). Every rank passes the same tensors, so every
    rank makes the same calls."""
    open_buckets: dict[tuple[torch.dtype, torch.device], tuple[list[torch.Tensor], int]] = {}
    done: list[list[torch.Tensor]] = []
    for t in tensors:
        key, size = (t.dtype, t.device), t.numel() * t.element_size()
        bucket, used = open_buckets.get(key, ([], 0))
        if bucket and used + size > limit:
            done.append(bucket)
            bucket, used = [], 0
        bucket.append(t)
        open_buckets[key] = (bucket, used + size)
    return done + [bucket for bucket, _ in open_buckets.values() if bucket]


def all_reduce_sum(tensors: Sequence[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum `tensors` across processes, in place (every rank passes tensors of the same shapes, in the same order).

    Plain tensors are packed into flat same-dtype/device buckets, each reduced by one
    `accelerate.utils.reduce` call. FSDP2 DTensor gradients were already averaged by their
    reduce-scatter: they are multiplied by the world size instead (the mean becomes the sum).
    """
    sharded = [t for t in tensors if _is_sharded(t)]
    if sharded:
        torch._foreach_mul_(sharded, float(world_size()))
    if not is_distributed():
        return
    plain = [t for t in tensors if not _is_sharded(t)]
    for bucket in _buckets(plain, bucket_bytes):
        if len(bucket) == 1 and bucket[0].is_contiguous():
            bucket[0].copy_(reduce(bucket[0], reduction="sum"))
            continue
        summed = reduce(_flatten_dense_tensors(bucket), reduction="sum")
        torch._foreach_copy_(bucket, list(_unflatten_dense_tensors(summed, bucket)))


def broadcast_from_main(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` with the main process's values on every rank (in place where the backend allows; use the return value)."""
    if not is_distributed():
        return tensor
    return broadcast(tensor, from_process=0)


def max_across_processes(value: int) -> int:
    """The largest of every rank's `value` (all ranks get the same answer)."""
    state = _state()
    if state is None or state.num_processes <= 1:
        return value
    flag = torch.tensor([value], dtype=torch.int64, device=state.device)
    return int(reduce(flag, reduction="max").item())


def global_norm(grads: Sequence[torch.Tensor]) -> float:
    """‖grads‖₂ of this process's (already reduced) tensors; for FSDP2's sharded DTensor gradients the norm
    over all shards of all ranks. One host sync."""
    if not grads:
        return 0.0
    if _is_sharded(grads[0]):
        return float(torch.nn.utils.get_total_norm(grads, 2.0).full_tensor().double())
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)).double(), 2.0))


def end_process_group() -> None:
    """Destroy the process group of a multi-process run before the interpreter exits: left to the
    interpreter's shutdown, gloo's threads can abort a process ("terminate called without an active
    exception", SIGABRT) after training has finished. No-op in one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        PartialState().destroy_process_group()
