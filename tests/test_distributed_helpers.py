"""`hf_mtl.distributed` in one process: the bucketing of `all_reduce_sum` (with accelerate's `reduce` standing in
for two identical ranks), the FSDP2 DTensor path, and every helper's single-process answer. The same helpers
across two real processes: `test_distributed.test_distributed_helpers`."""

from __future__ import annotations

import math

import pytest
import torch

from hf_mtl import distributed


def test_buckets_group_by_dtype_and_device_in_order_and_respect_the_limit():
    a, b, c = torch.zeros(2), torch.zeros(2), torch.zeros(4)  # 8, 8, 16 bytes
    d, e = torch.zeros(3, dtype=torch.float64), torch.zeros(100)  # 24 bytes; 400 bytes, over the limit alone
    buckets = distributed._buckets([a, d, b, c, e], limit=16)
    assert [[id(t) for t in bucket] for bucket in buckets] == [[id(a), id(b)], [id(c)], [id(e)], [id(d)]]
    assert distributed._buckets([]) == []


def test_single_process_helpers_do_nothing():
    assert distributed.world_size() == 1 and distributed.process_index() == 0 and not distributed.is_distributed()
    tensors = [torch.arange(3.0), torch.ones(2, dtype=torch.float64)]
    before = [t.clone() for t in tensors]
    distributed.all_reduce_sum(tensors)
    assert all(torch.equal(t, u) for t, u in zip(tensors, before))
    t = torch.tensor([1.0, 2.0])
    assert distributed.broadcast_from_main(t) is t
    assert distributed.max_across_processes(7) == 7


def test_global_norm():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]]), torch.tensor([12.0], dtype=torch.float64)]
    assert distributed.global_norm(grads) == pytest.approx(13.0)
    assert distributed.global_norm([]) == 0.0
    assert math.isnan(distributed.global_norm([torch.tensor([math.nan])]))


@pytest.fixture
def two_identical_ranks(monkeypatch):
    """Pretend 2 processes whose tensors are identical: accelerate's `reduce` (a clone, summed) doubles."""
    calls = []

    def reduce(tensor, reduction="mean"):
        assert reduction == "sum" and tensor.is_contiguous()
        calls.append(tensor.numel())
        return tensor.clone() * 2

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "reduce", reduce)
    return calls


def test_all_reduce_sum_packs_buckets_and_writes_the_sums_back_in_place(two_identical_ranks):
    tensors = [torch.arange(6.0).view(2, 3), torch.arange(3, dtype=torch.float64), torch.tensor([5]),
               torch.arange(4.0).view(2, 2).t(), torch.full((40,), 0.5)]  # a transposed view; 160 bytes
    expected = [t * 2 for t in tensors]
    storage = [t.data_ptr() for t in tensors]
    distributed.all_reduce_sum(tensors, bucket_bytes=48)
    assert all(torch.equal(t, e) for t, e in zip(tensors, expected))
    assert [t.data_ptr() for t in tensors] == storage
    # float32: [6 + 4 values] packed, then the 40 alone; float64: 3; int64: 1
    assert sorted(two_identical_ranks) == sorted([10, 40, 3, 1])


def test_all_reduce_sum_turns_fsdp2_means_into_sums(two_identical_ranks):
    """A DTensor gradient (anything with `placements`) was averaged by FSDP's reduce-scatter: × world size, no reduce."""
    sharded = torch.full((3,), 1.5)
    sharded.placements = ()
    plain = torch.ones(2)
    distributed.all_reduce_sum([sharded, plain])
    assert sharded.tolist() == [3.0, 3.0, 3.0] and plain.tolist() == [2.0, 2.0]
    assert two_identical_ranks == [2]
