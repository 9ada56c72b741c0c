"""The multi-task sampler, in every mode: what each step holds, that it does not depend on the process count, and
that it is a pure function of seed, epoch and step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mtl.sampling import (
    MultiTaskBatchSampler,
    SamplingSchedule,
    sampling_weights,
    split_rows,
)

GLUE_SIZES = [67349, 3668, 5749, 635]  # SST-2, MRPC, STS-B, WNLI training rows

#: Every sampling mode, as (mode, schedule, oversample).
MODES = {
    "equal": ("all_per_step", SamplingSchedule(), None),
    "sqrt": ("all_per_step", SamplingSchedule(alpha=0.5), None),
    "proportional_oversampled": ("all_per_step", SamplingSchedule(alpha=1.0), [1.0, 1.0, 3.0]),
    "linear": ("all_per_step", SamplingSchedule("linear", 1.0, 0.0), None),
    "anneal": ("all_per_step", SamplingSchedule("anneal"), None),
    "one_per_step": ("one_per_step", SamplingSchedule(alpha=0.5), None),
    "one_per_step_linear": ("one_per_step", SamplingSchedule("linear", 0.0, 1.0), [2.0, 1.0, 1.0]),
}


def sampler(mode_name: str, sizes=(50, 20, 7), batch_size=4, seed=5, batches_per_step=1, total_steps=None):
    mode, schedule, oversample = MODES[mode_name]
    made = MultiTaskBatchSampler(list(sizes), batch_size, seed=seed, batches_per_step=batches_per_step, mode=mode,
                                 schedule=schedule, oversample=oversample)
    made.total_steps = total_steps or 3 * made.steps_per_epoch
    return made


def per_task(batch, k):
    return [sum(1 for t, _ in batch if t == task) for task in range(k)]


# Default mode: unchanged --------------------------------------------------------------------------


def test_every_micro_batch_holds_rows_of_every_task():
    made = MultiTaskBatchSampler([10, 3, 7], batch_size=4, seed=1)
    assert len(made) == 3  # ceil(10 / 4): the largest task once
    for batch in made:
        assert per_task(batch, 3) == [4, 4, 4]
    # the largest task is seen once per epoch (its first 10 stream positions are one permutation)
    assert sorted(made.task_stream(0)[:10].tolist()) == list(range(10))
    assert made.batch_size == 12  # accelerate tells full micro-batches by it


def test_the_default_mode_walks_each_task_stream_in_order():
    made = MultiTaskBatchSampler([50, 20], batch_size=4, seed=3, batches_per_step=2)
    made.set_epoch(2)
    batches = list(made)
    for task in range(2):
        stream = made.task_stream(task)
        assert [row for batch in batches for t, row in batch if t == task] == stream[: len(batches) * 4].tolist()


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


# Splitting a step's rows ------------------------------------------------------------------------


def test_split_rows_exact_values():
    sqrt = sampling_weights(GLUE_SIZES, 0.5)
    assert split_rows(32, sqrt).tolist() == [20, 4, 6, 2]
    assert split_rows(32, sampling_weights(GLUE_SIZES, 1.0)).tolist() == [27, 2, 2, 1]  # WNLI's 0.26 -> the minimum
    assert split_rows(32, sampling_weights(GLUE_SIZES, 0.0)).tolist() == [8, 8, 8, 8]
    # the minimum is per micro-batch: 2 micro-batches need 2 rows of each task
    assert split_rows(64, sampling_weights(GLUE_SIZES, 1.0), minimum=2).tolist() == [54, 3, 5, 2]
    # ties go to the earlier task
    assert split_rows(5, [1, 1]).tolist() == [3, 2]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 10**7), min_size=2, max_size=6), alpha=st.floats(0, 2),
       per_task_rows=st.integers(1, 64), minimum=st.integers(1, 4))
def test_split_rows_sums_exactly_and_follows_the_weights(sizes, alpha, per_task_rows, minimum):
    total = per_task_rows * len(sizes) * minimum
    weights = sampling_weights(sizes, alpha)
    counts = split_rows(total, weights, minimum)
    assert counts.sum() == total and counts.min() >= minimum
    # Hamilton rounding above the minimum: a task never misses its ideal share by a whole row, unless pinned
    ideal = total * weights
    free = counts > minimum
    assert np.all(counts[free] < ideal[free] + 1 + 1e-9 * total)
    # more weight never gets fewer rows
    for i in range(len(sizes)):
        for j in range(len(sizes)):
            if weights[i] < weights[j] * (1 - 1e-12):
                assert counts[i] <= counts[j]


def test_square_root_shares_on_the_glue_sizes():
    made = MultiTaskBatchSampler(GLUE_SIZES, 8, seed=0, schedule=SamplingSchedule(alpha=0.5))
    rows = made.step_rows(0)
    assert rows.sum() == 32
    assert rows[0] / rows[3] == pytest.approx(math.sqrt(GLUE_SIZES[0] / GLUE_SIZES[3]), rel=0.05)
    # an epoch: the task that needs the most steps (WNLI at 2 rows a step) sees its rows once
    assert made.steps_per_epoch == max(math.ceil(n / r) for n, r in zip(GLUE_SIZES, rows)) == 3368


def test_oversample_multiplies_a_share():
    plain = MultiTaskBatchSampler([40, 40], 4, schedule=SamplingSchedule(alpha=1.0))
    doubled = MultiTaskBatchSampler([40, 40], 4, schedule=SamplingSchedule(alpha=1.0), oversample=[1.0, 3.0])
    assert plain.step_rows(0).tolist() == [4, 4] and doubled.step_rows(0).tolist() == [2, 6]


# Schedules --------------------------------------------------------------------------------------


def test_schedule_values():
    linear = SamplingSchedule("linear", 1.0, 0.5)
    assert [linear.alpha_at(s, 11, 100) for s in (0, 5, 10, 20)] == pytest.approx([1.0, 0.75, 0.5, 0.5])
    anneal = SamplingSchedule("anneal")
    # BERT-and-PALs: α = 1 − 0.8 (e − 1) / (E − 1) for epochs e = 1..E; here E = 3 epochs of 4 steps
    assert [anneal.alpha_at(s, 12, 4) for s in range(12)] == pytest.approx([1.0] * 4 + [0.6] * 4 + [0.2] * 4)
    assert anneal.alpha_at(3, 4, 10) == 1.0  # a run of one epoch or less stays at 1
    assert SamplingSchedule(alpha=0.3).alpha_at(99, 100, 7) == 0.3


def test_annealed_shares_move_from_proportional_to_flatter():
    made = MultiTaskBatchSampler([400, 40], 4, schedule=SamplingSchedule("anneal"))
    made.total_steps = 3 * made.steps_per_epoch
    first, last = made.step_rows(0), made.step_rows(3 * made.steps_per_epoch - 1)
    assert first.tolist() == split_rows(8, sampling_weights([400, 40], 1.0)).tolist() == [7, 1]
    assert last.tolist() == split_rows(8, sampling_weights([400, 40], 0.2)).tolist() == [5, 3]
    assert made.alpha_at(made.steps_per_epoch) == pytest.approx(0.6)


@pytest.mark.parametrize("bad, message", [
    ({"alpha": -0.5}, "--sampling_alpha must be a finite number >= 0"),
    ({"alpha": math.nan}, "--sampling_alpha must be a finite number >= 0"),
    ({"kind": "linear", "alpha": 1.0}, "give it with the linear schedule"),
    ({"kind": "constant", "alpha": 1.0, "alpha_end": 0.5}, "drop it, or pass --sampling_schedule linear"),
    ({"kind": "cosine"}, "--sampling_schedule 'cosine' is not one of: constant, linear, anneal"),
])
def test_bad_schedules_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        SamplingSchedule(**bad)


def test_bad_oversample_and_mode_are_refused():
    with pytest.raises(ValueError, match="one positive factor per task"):
        MultiTaskBatchSampler([10, 10], 4, oversample=[1.0, 0.0])
    with pytest.raises(ValueError, match="--task_sampling 'round_robin' is not one of"):
        MultiTaskBatchSampler([10, 10], 4, mode="round_robin")


# One task per step ------------------------------------------------------------------------------


def test_one_per_step_draws_one_task_per_step_in_proportion():
    made = MultiTaskBatchSampler(GLUE_SIZES, 8, seed=1, batches_per_step=2, mode="one_per_step",
                                 schedule=SamplingSchedule(alpha=0.5))
    assert made.steps_per_epoch == math.ceil(sum(GLUE_SIZES) / 16)  # one pass over all rows in one-task steps
    batches = list(made)
    for step in range(made.steps_per_epoch):
        pair = batches[2 * step : 2 * step + 2]
        tasks = {t for batch in pair for t, _ in batch}
        assert len(tasks) == 1 and all(len(batch) == 8 for batch in pair)
    counts = np.bincount([batches[2 * s][0][0] for s in range(made.steps_per_epoch)], minlength=4)
    expected = sampling_weights(GLUE_SIZES, 0.5) * made.steps_per_epoch
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected) + 1)  # 4 standard deviations, seeded


# Every mode: process count, purity, what is logged -------------------------------------------------


@pytest.mark.parametrize("mode_name", list(MODES))
def test_every_mode_gives_the_same_global_steps_on_1_and_2_processes(mode_name):
    single = sampler(mode_name, batch_size=8, batches_per_step=1)
    two = sampler(mode_name, batch_size=4, batches_per_step=2)
    assert single.steps_per_epoch == two.steps_per_epoch
    for epoch in (0, 1):
        single.set_epoch(epoch)
        two.set_epoch(epoch)
        shards = [list(BatchSamplerShard(two, num_processes=2, process_index=r)) for r in range(2)]
        whole = list(single)
        assert len(shards[0]) == len(shards[1]) == len(whole)
        for step, batch in enumerate(whole):
            assert sorted(shards[0][step] + shards[1][step]) == sorted(batch)
            assert shards[0][step] and shards[1][step]


@pytest.mark.parametrize("mode_name", list(MODES))
def test_every_mode_is_a_pure_function_of_seed_epoch_and_step(mode_name):
    a = sampler(mode_name)
    b = sampler(mode_name)
    b.set_epoch(2)
    later = list(b)
    b.set_epoch(0)
    assert list(a) == list(b)  # a fresh sampler, or one that visited another epoch first
    a.set_epoch(2)
    assert list(a) == later
    assert list(sampler(mode_name, seed=6)) != list(sampler(mode_name))


@pytest.mark.parametrize("mode_name", list(MODES))
def test_step_rows_and_rows_seen_say_what_was_drawn(mode_name):
    made = sampler(mode_name, batches_per_step=2)
    k = len(made.task_sizes)
    drawn = np.zeros(k, dtype=np.int64)
    for epoch in range(2):
        made.set_epoch(epoch)
        batches = list(made)
        for s in range(made.steps_per_epoch):
            step = epoch * made.steps_per_epoch + s
            rows = np.array(per_task(batches[2 * s], k)) + np.array(per_task(batches[2 * s + 1], k))
            assert rows.tolist() == made.step_rows(step).tolist()
            assert made.rows_seen(step).tolist() == drawn.tolist()
            drawn += rows
    assert made.rows_seen(2 * made.steps_per_epoch).tolist() == drawn.tolist()
    if MODES[mode_name][0] == "all_per_step":
        assert all(min(per_task(batch, k)) >= 1 for batch in batches)  # every task in every micro-batch
