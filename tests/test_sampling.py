"""The multi-task sampler: every micro-batch holds every task; the global batch does not depend on the process count."""

from __future__ import annotations

from accelerate.data_loader import BatchSamplerShard

from hf_mtl.sampling import MultiTaskBatchSampler


def test_every_micro_batch_holds_rows_of_every_task():
    sampler = MultiTaskBatchSampler([10, 3, 7], batch_size=4, seed=1)
    assert len(sampler) == 3  # ceil(10 / 4): the largest task once
    for batch in sampler:
        assert [sum(1 for t, _ in batch if t == task) for task in range(3)] == [4, 4, 4]
    # the largest task is seen once per epoch (its first 10 stream positions are one permutation)
    assert sorted(sampler.task_stream(0)[:10].tolist()) == list(range(10))


def test_same_global_batches_whatever_the_number_of_processes():
    single = list(MultiTaskBatchSampler([50, 20], batch_size=8, seed=5, batches_per_step=1))
    two = MultiTaskBatchSampler([50, 20], batch_size=4, seed=5, batches_per_step=2)
    shards = [list(BatchSamplerShard(two, num_processes=2, process_index=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single)
    for step, batch in enumerate(single):
        together = shards[0][step] + shards[1][step]
        assert sorted(together) == sorted(batch)


def test_order_depends_on_seed_and_epoch_only():
    a, b = MultiTaskBatchSampler([30, 9], 4, seed=2), MultiTaskBatchSampler([30, 9], 4, seed=2)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
