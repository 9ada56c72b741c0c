"""Two real processes (torchrun, gloo) against one process with the same global batch.

`tests/distributed_worker.py` trains the tiny model of `conftest.tiny_model` (dropout off) on real
GLUE rows with `MultiTaskTrainer`, for every run of a list, in one `torchrun` launch per process
count (start-up costs more than a run). The one-process runs use a per-device batch twice (or four
times, against gradient accumulation) as large, so both see the same global batch at every step.
Then, for each strategy:

* every rank holds bit-identical parameters and the same weighting state;
* the parameters agree with the one-process run to 1e-5 (relative), and so does each tensor's
  update (to 1e-3, relative to its size: the update is what a wrong gradient would change);
* the logged `loss_<task>`, `weight_<task>`, `grad_norm_<task>` and `loss` of every step agree to 1e-5.

Plain SGD with a constant learning rate and no clipping keeps the comparison sensitive; one AdamW run
with clipping checks that nothing drifts apart there either. The same comparison runs with FSDP2
(`fully_shard` on CPU, see `test_fsdp2_two_processes_match_one_process`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
TIMEOUT_S = 480  # both launches (3 processes on 2 cores): ~4 minutes on an idle machine
BATCH = 4  # rows per task and process with 2 processes; the global batch is 8 rows per task

SGD_STRATEGIES = ["equal", "geometric", "prior", "grad_normalize", "pcgrad", "mgda", "uncertainty", "gradnorm",
                  # Stateful ones: seeded draws by step (gradvac, graddrop), K × P tensors (moco's tracked gradients,
                  # excess_mtl's squared sums), moving targets (gradvac), learned scales (imtl_h), a nadir (stch).
                  "gradvac", "graddrop", "moco", "excess_mtl", "imtl_h", "stch"]
#: Options a strategy needs here: STCH's warm-up ends within the 3 steps, so its nadir is compared too.
STRATEGY_OPTIONS: dict[str, dict] = {"stch": {"args": {"stch_warmup_steps": 2}}}
ADAMW = {"optim": "adamw_torch", "lr": 1e-3, "scheduler": "linear", "max_grad_norm": 1.0,
         "args": {"weight_decay": 0.01}}
# `max` multiplies the update by the largest task gradient norm (~10 here): a smaller step keeps it tame.
SHARED_MAX = {"lr": 0.05, "args": {"norm_scope": "shared", "norm_scale": "max"}}
# FSDP2 through the Trainer's own arguments. BertLayer only: accelerate's default auto-wrap takes the
# model's `_no_split_modules` (BertEmbeddings too) and then shards the word embeddings a second time.
FSDP2 = {"fsdp": True, "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"]},
         "fsdp_on_cpu": True}

# The one-process runs (global batch 8 rows per task).
ONE_PROCESS: dict[str, dict] = {name: {"weighting": name, "batch": 2 * BATCH, **STRATEGY_OPTIONS.get(name, {})}
                                for name in SGD_STRATEGIES}
ONE_PROCESS["grad_normalize_shared_max"] = {"weighting": "grad_normalize", "batch": 2 * BATCH, **SHARED_MAX}
ONE_PROCESS["geometric_adamw"] = {"weighting": "geometric", "batch": 2 * BATCH, **ADAMW}

# The two-process runs: name -> (run, the one-process run it must match).
TWO_PROCESSES: dict[str, tuple[dict, str]] = {
    name: ({"weighting": name, "batch": BATCH, **STRATEGY_OPTIONS.get(name, {})}, name) for name in SGD_STRATEGIES}
for _name in ("geometric", "grad_normalize"):
    # 2 processes × 2 micro-batches of 2 rows against 1 process × 8 rows
    TWO_PROCESSES[f"{_name}_accum2"] = ({"weighting": _name, "batch": BATCH // 2, "accum": 2}, _name)
TWO_PROCESSES["grad_normalize_shared_max"] = (
    {"weighting": "grad_normalize", "batch": BATCH, **SHARED_MAX}, "grad_normalize_shared_max")
TWO_PROCESSES["geometric_adamw"] = ({"weighting": "geometric", "batch": BATCH, **ADAMW}, "geometric_adamw")
# Activation checkpointing turns DDP's find_unused_parameters off (docs/architecture.md, "Traps"); the sums must
# still be global.
TWO_PROCESSES["geometric_checkpointing"] = (
    {"weighting": "geometric", "batch": BATCH, "args": {"gradient_checkpointing": True}}, "geometric")
# One task of every kind (classification, regression, token classification, multi-label, multiple choice) on
# real text, with a loss-level and a gradient-level strategy.
for _name in ("geometric", "grad_normalize"):
    ONE_PROCESS[f"kinds_{_name}"] = {"weighting": _name, "batch": 2 * BATCH, "tasks": "kinds"}
    TWO_PROCESSES[f"kinds_{_name}"] = ({"weighting": _name, "batch": BATCH, "tasks": "kinds"}, f"kinds_{_name}")
# Every sampling mode (hf_mtl.sampling) on tasks of 32, 12 and 4 rows, so that the shares differ: α = 0.5, α
# linear 1 -> 0, the annealed schedule (its second epoch starts at step 3), one task per step; the shares of a task
# in a step are cut unevenly between 2 micro-batches in the accumulation cases.
UNEVEN = {"sst2": 32, "stsb": 12, "mrpc": 4}
SAMPLING = {
    "sampling_sqrt_geometric": ("geometric", {"sampling_alpha": 0.5}),
    "sampling_linear_grad_normalize": ("grad_normalize", {"sampling_schedule": "linear", "sampling_alpha": 1.0,
                                                          "sampling_alpha_end": 0.0}),
    "sampling_anneal_pcgrad": ("pcgrad", {"sampling_schedule": "anneal"}),
    "sampling_one_per_step_geometric": ("geometric", {"task_sampling": "one_per_step", "sampling_alpha": 0.5}),
    "sampling_one_per_step_uncertainty": ("uncertainty", {"task_sampling": "one_per_step", "sampling_alpha": 1.0}),
}
for _name, (_weighting, _args) in SAMPLING.items():
    ONE_PROCESS[_name] = {"weighting": _weighting, "batch": 2 * BATCH, "sizes": UNEVEN, "args": _args}
    TWO_PROCESSES[_name] = ({"weighting": _weighting, "batch": BATCH, "sizes": UNEVEN, "args": _args}, _name)
for _name in ("sampling_sqrt_geometric", "sampling_one_per_step_uncertainty"):
    TWO_PROCESSES[f"{_name}_accum2"] = ({**TWO_PROCESSES[_name][0], "batch": BATCH // 2, "accum": 2}, _name)
# LoRA on the encoder (--peft lora; dropout off): frozen weights outside the sums, the adapter's summed like the rest.
LORA = {"lora": {"r": 4, "dropout": 0.0}}
for _name in ("geometric", "grad_normalize"):
    ONE_PROCESS[f"lora_{_name}"] = {"weighting": _name, "batch": 2 * BATCH, **LORA}
    TWO_PROCESSES[f"lora_{_name}"] = ({"weighting": _name, "batch": BATCH, **LORA}, f"lora_{_name}")
DDP_CASES = list(TWO_PROCESSES)
# Last in the launch, so that no FSDP state can leak into the DDP runs.
for _name in ("equal", "grad_normalize"):
    TWO_PROCESSES[f"fsdp2_{_name}"] = ({"weighting": _name, "batch": BATCH, **FSDP2}, _name)
FSDP2_CASES = [name for name in TWO_PROCESSES if name.startswith("fsdp2_")]


def _silver_dir() -> Path | None:
    from conftest import SHARED_SILVER, shared_data_dir

    return shared_data_dir("SILVER_DIR", SHARED_SILVER, "ner/train.jsonl")


def _runs(processes: int) -> list[dict]:
    runs = ONE_PROCESS.items() if processes == 1 else ((name, run) for name, (run, _) in TWO_PROCESSES.items())
    return [{"name": name, **run} for name, run in runs if _silver_dir() is not None or run.get("tasks") != "kinds"]


def _launch(processes: int, runs: list[dict], glue_dir: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
        str(WORKER), "--glue_dir", str(glue_dir), "--out", str(out), "--runs", json.dumps(runs),
        "--watchdog", str(TIMEOUT_S - 30), *(["--silver_dir", str(_silver_dir())] if _silver_dir() else []),
    ]
    with open(out.with_suffix(".log"), "w") as log:
        # A session of its own, so that a time-out can stop torchrun and its workers together.
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=WORKER.parents[1],
                                start_new_session=True)


@pytest.fixture(scope="module")
def launches(glue_dir, minilm_path, tmp_path_factory) -> dict[int, Path]:
    """Both launches at once (3 processes on 2 cores still beats running them one after the other)."""
    root = tmp_path_factory.mktemp("distributed")
    outs = {n: root / f"nproc{n}" for n in (2, 1)}
    started = time.monotonic()
    procs = {n: _launch(n, _runs(n), glue_dir, out) for n, out in outs.items()}
    for n, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return outs


def _log_tail(out: Path, chars: int = 4000) -> str:
    path = out.with_suffix(".log")
    return path.read_text()[-chars:] if path.exists() else "(no log)"


def _load(out: Path, name: str, processes: int) -> tuple[list[dict[str, torch.Tensor]], list[dict]]:
    """Every rank's parameters and result, or fail with the worker's own error."""
    folder = out / name
    errors = sorted(folder.glob("error.rank*.txt"))
    if errors:
        pytest.fail(f"{processes}-process run {name!r} raised:\n{errors[0].read_text()[-3000:]}", pytrace=False)
    results = [folder / f"result.rank{r}.json" for r in range(processes)]
    if not all(p.exists() for p in results):
        pytest.fail(f"{processes}-process run {name!r} left no result; launch log tail:\n{_log_tail(out)}", pytrace=False)
    params = [load_file(str(folder / f"params.rank{r}.safetensors")) for r in range(processes)]
    return params, [json.loads(p.read_text()) for p in results]


def _step_logs(result: dict) -> list[dict]:
    return [h for h in result["log_history"] if "loss" in h and "train_runtime" not in h]


def _assert_same_values(actual, expected, where: str, rel: float = 1e-5, abs_: float = 1e-8) -> None:
    """Nested dicts / lists of numbers equal up to `rel` (strings and the like exactly)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), f"{where}: keys {actual} != {expected}"
        for k in expected:
            _assert_same_values(actual[k], expected[k], f"{where}.{k}", rel, abs_)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual} != {expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_same_values(a, e, f"{where}[{i}]", rel, abs_)
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert isinstance(actual, (int, float)), f"{where}: {actual!r} != {expected!r}"
        if not (math.isnan(expected) and math.isnan(actual)):
            assert actual == pytest.approx(expected, rel=rel, abs=abs_), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


# Aggregators divide by squared task-gradient norms and solve small systems on the Gram matrix, which
# amplifies the float32 rounding of a 2-rank sum (~1e-7) to ~3e-5 in a few elements: compared at 1e-4.
AGGREGATOR_TOLERANCE = (1e-4, 1e-5)
#: GradVac's correction of g_i toward g_j is proportional to φ̂_ij − φ_ij, a difference of two cosines that each
#: carry the rounding above (the gradients here are nearly orthogonal: targets ~ −2e-3, seen 6e-7 apart between 1
#: and 2 processes): the logged effective weights (least-squares coefficients of the update) were seen 5e-4 apart,
#: while the parameters stay within AGGREGATOR_TOLERANCE.
#: PCGrad's logged weights are least-squares coefficients too: with the annealed schedule's first steps (α = 1) the
#: 4-row task has 2 rows a step, and its coefficient was seen 1.5e-4 apart (parameters within AGGREGATOR_TOLERANCE).
#: A one-task step logs that task's gradient norm alone: at step 3 of `sampling_one_per_step_geometric` it is ~1e-3
#: and the 2-rank float32 sum moves it by 1.3e-5 relative (parameters within 1e-5). Keys: a run, else a strategy.
LOG_TOLERANCE = {"gradvac": (2e-3, 1e-5), "pcgrad": (1e-3, 1e-5), "sampling_one_per_step_geometric": (1e-4, 1e-8)}


#: Parameters whose exact gradient is 0, so that their update is rounding alone: the bias of the multiple-choice
#: head (one score per choice from a shared layer: softmax over the choices ignores a shift common to all).
ZERO_GRADIENT = ("heads.pick_paraphrase.classifier.bias",)


def _assert_parameters_match(two: dict[str, torch.Tensor], one: dict[str, torch.Tensor],
                             initial: dict[str, torch.Tensor], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert sorted(two) == sorted(one)
    updates = {n: one[n] - initial[n] for n in one}
    largest = max(u.norm().item() for u in updates.values())
    assert max(u.abs().max().item() for u in updates.values()) > 1e-3, "parameters did not move: vacuous comparison"
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
        # The update itself, relative to its size: catches a gradient off by a factor in a small tensor.
        # (Tensors whose true update is ~0, such as attention key biases, carry only rounding noise.)
        reference = updates[name].norm().item()
        if reference > 1e-6 * largest and name not in ZERO_GRADIENT:
            error = (two[name] - initial[name] - updates[name]).norm().item()
            assert error <= 1e-3 * reference, f"{name}: update differs by {error / reference:.2e} (relative)"


@pytest.fixture(scope="module")
def initial_parameters() -> dict[str, torch.Tensor]:
    from hf_mtl.tasks import GLUE_TASKS

    from conftest import tiny_model

    model = tiny_model([GLUE_TASKS[n] for n in ("sst2", "stsb", "mrpc")])
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _check_against_one_process(name: str, launches: dict[int, Path], initial: dict[str, torch.Tensor],
                               wrapper_prefix: str) -> None:
    if TWO_PROCESSES[name][0].get("tasks") == "kinds":
        if _silver_dir() is None:
            pytest.skip("silver task data not found (set SILVER_DIR or place it at ../shared/data/silver): no task of "
                        "every kind")
        initial = load_file(str(launches[1] / TWO_PROCESSES[name][1] / "initial.rank0.safetensors"))
    if "lora" in TWO_PROCESSES[name][0]:  # the LoRA model's own parameter names
        initial = load_file(str(launches[1] / TWO_PROCESSES[name][1] / "initial.rank0.safetensors"))
    two_params, two = _load(launches[2], name, 2)
    (one_params,), (one,) = _load(launches[1], TWO_PROCESSES[name][1], 1)
    assert [r["world_size"] for r in two] == [2, 2] and one["world_size"] == 1
    assert two[0]["model_class"].startswith(wrapper_prefix), two[0]["model_class"]
    wanted = TWO_PROCESSES[name][0].get("args", {}).get("gradient_checkpointing", False)
    assert two[0]["gradient_checkpointing"] == wanted

    if "lora" in TWO_PROCESSES[name][0]:  # the encoder's own weights never move; the adapter does (checked below)
        frozen = [n for n in initial if ".lora_" not in n and ".modules_to_save." not in n and not n.startswith("heads.")]
        assert frozen and all(torch.equal(two_params[0][n], initial[n]) for n in frozen)
    # Every rank: identical parameters (bit for bit), weighting state and logs.
    for key, tensor in two_params[0].items():
        assert torch.equal(tensor, two_params[1][key]), f"rank 0 and rank 1 differ in {key}"
    assert two[0]["weighting_state"] == two[1]["weighting_state"]
    assert _step_logs(two[0]) == _step_logs(two[1])

    # Same as one process with the same global batch.
    from hf_mtl.weighting import WEIGHTINGS, AggregatorWeighting

    aggregator = issubclass(WEIGHTINGS[TWO_PROCESSES[name][0]["weighting"]], AggregatorWeighting)
    # Five tasks whose token-level losses sum hundreds of terms per rank: the 2-rank float32 sums round
    # differently (~1e-7), which a strategy dividing by gradient norms lifts to ~2e-6 in a few pooler weights.
    kinds = TWO_PROCESSES[name][0].get("tasks") == "kinds"
    tolerance = AGGREGATOR_TOLERANCE if aggregator else ((1e-5, 1e-5) if kinds else ())
    _assert_parameters_match(two_params[0], one_params, initial, *tolerance)
    # An aggregator's state derives from the same float32 gradient sums (GradVac's target cosines, MoCo's tracked
    # gradients, ExcessMTL's squared sums): compared at the same tolerance; across ranks it is bit-identical (above).
    _assert_same_values(two[0]["weighting_state"], one["weighting_state"], "weighting_state",
                        *(AGGREGATOR_TOLERANCE if aggregator else ()))
    steps_two, steps_one = _step_logs(two[0]), _step_logs(one)
    assert len(steps_one) == 3 and len(steps_two) == len(steps_one)
    for step, (a, b) in enumerate(zip(steps_two, steps_one), start=1):
        assert sorted(a) == sorted(b), f"step {step}: logged keys differ"
        assert any(k.startswith("weight_") for k in b) and any(k.startswith("loss_") for k in b)
        weighting = TWO_PROCESSES[name][0]["weighting"]
        _assert_same_values(a, b, f"log step {step}",
                            *LOG_TOLERANCE.get(TWO_PROCESSES[name][1], LOG_TOLERANCE.get(
                                weighting, AGGREGATOR_TOLERANCE if aggregator else ())))


@pytest.mark.parametrize("name", DDP_CASES)
def test_ddp_two_processes_match_one_process(name, launches, initial_parameters):
    _check_against_one_process(name, launches, initial_parameters, "DistributedDataParallel")


@pytest.mark.parametrize("name", FSDP2_CASES)
def test_fsdp2_two_processes_match_one_process(name, launches, initial_parameters):
    """FSDP2 (`fully_shard`, gloo) on CPU, through `fsdp` / `fsdp_config` of the TrainingArguments.

    accelerate 1.x keeps an FSDP plugin only for accelerator devices and silently trains CPU
    processes with DDP; torch's `fully_shard` itself runs on CPU, so the worker switches
    accelerate's state to FSDP as the GPU path would (`distributed_worker.fsdp_on_cpu`).
    """
    _check_against_one_process(name, launches, initial_parameters, "FSDP")


@pytest.mark.parametrize("processes", [1, 2])
def test_distributed_helpers(processes, launches):
    """`hf_mtl.distributed` in the launched processes (`distributed_worker.check_distributed_helpers`): rank r
    contributes r + 1 times each value, so the sums are s = N(N+1)/2 times it, on every rank."""
    s = processes * (processes + 1) / 2
    for rank in range(processes):
        path = launches[processes] / f"helpers.rank{rank}.json"
        if not path.exists():
            pytest.fail(f"{processes}-process launch left no {path.name}; launch log tail:\n{_log_tail(launches[processes])}",
                        pytrace=False)
        got = json.loads(path.read_text())
        assert got["world_size"] == processes and got["is_distributed"] == (processes > 1)
        assert got["sums"] == [[s, s], [0.0, s, 2 * s, 3 * s], [int(s)], [2 * s, 2 * s], [[0.0, 2 * s], [s, 3 * s]]]
        assert got["max"] == 10 * (processes - 1) + 1
        assert got["broadcast"] == [5.0]
        assert got["norm"] == pytest.approx(math.sqrt(5) * (rank + 1))  # rank-local: no reduction
