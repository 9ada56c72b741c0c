"""`hf-mtl bench speed`: what each weighting strategy's optimizer step costs next to `equal`.

    hf-mtl bench speed [--tasks 3,6] [--weightings equal,geometric,...] [--batch_size 16] [--seq_len 64]
        [--repeats 3] [--warmup 1] [--model_name_or_path M] [--glue_dir DIR] [--device cpu|cuda] [--bf16]
        [--threads N] [--no_memory] [--output bench-speed.json]

What one timed step is: exactly what `MultiTaskTrainer` runs per optimizer step without gradient
accumulation. `MultiTaskTrainer.training_step` only hands the step's micro-batches to
`hf_mtl.engine.TaskByTaskStep`, so the benchmark drives that engine directly, with an
`accelerate.Accelerator` that has `prepare`d the model and the optimizer as the Trainer does (a
learning strategy's own parameters in their own group, as `MultiTaskTrainer.create_optimizer`), and
then does what the Trainer's loop does after `training_step`: gradient clipping (`max_grad_norm` 1.0),
the optimizer step (the Trainer's default optimizer, fused AdamW) and `model.zero_grad()`.

Every strategy sees the same model, the same optimizer and the same per-task batches: real GLUE
training rows (sst2, mrpc, stsb, wnli; for K > 4 the same tasks again under new names, `sst2_b`, ...,
taking the next rows), each batch padded to exactly `--seq_len` tokens. The reference `summed-loss`
step is the naive way: the K task losses averaged into one scalar (the `equal` objective), one
backward, so all K tasks' activations are alive at once.

Timing: after `--warmup` rounds, each of `--repeats` rounds runs `equal, S1, equal, S2, ..., Sn,
equal`; each strategy's ratio in a round is its step time over the mean of the two `equal` steps
around it, and the table reports the median ratio over rounds (with the quartiles), so slow drifts of
the machine cancel out. `equal`'s own quartiles are those of each interior `equal` step against its
two `equal` neighbours: the noise floor of the measurement. The same ratios are computed from the CPU
time of the process (`time.process_time`, all threads): on a machine shared with other jobs, run with
`--threads 1` and read that column; the wall time then measures the other jobs as much as the step
(with several threads per process and more runnable threads than cores, torch's threads wait on each
other at every parallel region and a step can take 5× longer; the CPU time then includes that waiting).

Peak memory: each strategy runs again in a fresh subprocess: model, optimizer, batches and one
warm-up step (so the optimizer state exists), gradients freed, then the peak over `MEMORY_STEPS`
steps is taken above the memory at that point. On CPU that is the peak resident set size (Linux
`VmHWM`, reset through `/proc/self/clear_refs` after the warm-up; glibc's mmap threshold is pinned
at 64 KiB so freed tensors go back to the system and the resident size follows live memory); on
CUDA, `torch.cuda.max_memory_allocated`. The whole-process peak is reported too.

`extra buffer` is what the engine holds beyond `.grad` (see `extra_buffer_mb`): one parameter-sized
buffer (trainable parameters × element size) when it needs each task's own gradient (a gradient-level
strategy, or gradient accumulation), the K × P matrix of the shared parameters' task gradients for
the strategies that need all K at once, nothing otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

#: The reference step: all task losses in one scalar, one backward.
SUMMED = "summed-loss"
#: The GLUE tasks the benchmark cycles through (K > 4 reuses them under new names).
BASE_TASKS = ("sst2", "mrpc", "stsb", "wnli")
#: Steps measured by each memory subprocess after its warm-up step.
MEMORY_STEPS = 1
#: glibc: allocations above this many bytes are mmapped and returned to the system when freed.
_MMAP_THRESHOLD = "65536"


@dataclass
class SpeedConfig:
    """The settings of one `hf-mtl bench speed` run (see the module docstring)."""

    tasks: list[int] = field(default_factory=lambda: [3, 6])
    weightings: list[str] | None = None
    batch_size: int = 16
    seq_len: int = 64
    repeats: int = 3
    warmup: int = 1
    model_name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2"
    glue_dir: str | None = None
    device: str = "cpu"
    bf16: bool = False
    threads: int | None = None
    memory: bool = True
    seed: int = 0
    output: str = "bench-speed.json"

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be at least 1.")
        if self.warmup < 0:
            raise ValueError(f"--warmup {self.warmup} must be >= 0.")
        if not self.tasks or any(k < 1 for k in self.tasks):
            raise ValueError(f"--tasks {self.tasks}: give numbers of tasks >= 1, e.g. --tasks 3,6.")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads {self.threads} must be at least 1 (default: torch's own choice).")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device {self.device!r} must be cpu or cuda.")


# ---- the tasks and their batches ----------------------------------------------------------------


def benchmark_tasks(k: int) -> list[tuple[Any, str, int]]:
    """(spec, GLUE task it reads, index of its row block) for K tasks: sst2, mrpc, stsb, wnli, sst2_b, ..."""
    from .tasks import GLUE_TASKS

    tasks = []
    for j in range(k):
        base, block = BASE_TASKS[j % len(BASE_TASKS)], j // len(BASE_TASKS)
        spec = GLUE_TASKS[base]
        if block:
            spec = dataclasses.replace(spec, name=f"{base}_{chr(ord('a') + block)}", hub_config=None)
        tasks.append((spec, base, block))
    return tasks


@dataclass
class _Setup:
    model: Any
    optimizer: Any
    accelerator: Any
    specs: list[Any]
    batch: dict[str, dict[str, Any]]
    weightings: dict[str, Any]
    optimizer_name: str
    sources: dict[str, str]

    @property
    def params(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]


def trainer_optimizer(config: SpeedConfig) -> tuple[str, dict[str, Any]]:
    """The optimizer the Trainer builds by default (fused AdamW in transformers 5.x): class path and kwargs."""
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, use_cpu=config.device == "cpu", bf16=config.bf16, report_to="none")
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    return f"{cls.__module__}.{cls.__qualname__}", {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def _build(config: SpeedConfig, k: int, names: Sequence[str], optimizer_spec: tuple[str, dict[str, Any]]) -> _Setup:
    """Model, optimizer, accelerator, one batch of every task and the strategies `names` (summed-loss aside)."""
    import importlib

    import torch
    from accelerate import Accelerator
    from datasets import DatasetDict
    from transformers import AutoTokenizer

    from .data import label_statistics, load_task_splits, tokenize_splits
    from .modeling import MultiTaskModel, resolve_model_path
    from .sampling import TaskCollator
    from .tasks import GLUE_TASKS
    from .weighting import WeightingOptions, build_weighting

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model_path = resolve_model_path(config.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    collate = TaskCollator(tokenizer, pad_to_multiple_of=config.seq_len)
    glue: dict[str, Any] = {}
    specs, batch, stats, sources = [], {}, {}, {}
    rows = config.batch_size
    for spec, base, block in benchmark_tasks(k):
        if base not in glue:
            glue[base] = load_task_splits(GLUE_TASKS[base], config.glue_dir)
        train = glue[base]["train"]
        if len(train) < (block + 1) * rows:
            raise ValueError(f"bench: {base} has {len(train)} training rows, fewer than the {(block + 1) * rows} that K={k} needs.")
        block_rows = train.select(range(block * rows, (block + 1) * rows))
        tokenized = tokenize_splits(DatasetDict({"train": block_rows}), spec, tokenizer, config.seq_len)
        batch[spec.name] = collate(list(tokenized["train"]))
        stats[spec.name] = label_statistics(train, spec)
        sources[spec.name] = f"{base} train rows {block * rows}-{(block + 1) * rows - 1}"
        specs.append(spec)

    torch.manual_seed(config.seed)
    model = MultiTaskModel.from_encoder(model_path, specs)
    model.train()
    options = WeightingOptions(task_weights={s.name: 1.0 for s in specs})
    weightings = {name: build_weighting(name, specs, stats, options) for name in names if name != SUMMED}
    class_path, optimizer_kwargs = optimizer_spec
    module, _, class_name = class_path.rpartition(".")
    optimizer_kwargs = {key: tuple(v) if isinstance(v, list) else v for key, v in optimizer_kwargs.items()}
    optimizer = getattr(importlib.import_module(module), class_name)(
        [p for p in model.parameters() if p.requires_grad], **optimizer_kwargs
    )
    for weighting in weightings.values():
        # As MultiTaskTrainer.create_optimizer: a learning strategy's own parameters in their own group.
        own = weighting.parameters()
        if own:
            lr = weighting.parameter_lr() or optimizer_kwargs["lr"]
            optimizer.add_param_group({"params": own, "lr": lr, "weight_decay": 0.0})
    accelerator = Accelerator(cpu=config.device == "cpu", mixed_precision="bf16" if config.bf16 else "no")
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    batch = {t: {key: v.to(device) if isinstance(v, torch.Tensor) else v for key, v in b.items()} for t, b in batch.items()}
    description = f"{class_name}({', '.join(f'{key}={v}' for key, v in optimizer_kwargs.items())})"
    return _Setup(model, optimizer, accelerator, specs, batch, weightings, description, sources)


def forward_backward_function(setup: _Setup, name: str) -> Callable[[], None]:
    """Strategy `name`'s forward and backward passes (what `MultiTaskTrainer.training_step` runs):
    leaves the step's gradient in `.grad`."""
    from .engine import TaskByTaskStep

    model, accelerator, batch = setup.model, setup.accelerator, setup.batch
    task_names = [s.name for s in setup.specs]
    count = iter(range(1, 2**62))

    if name == SUMMED:
        def forward_backward() -> None:
            loss = sum(model(**batch[t]).loss for t in task_names) / len(task_names)
            accelerator.backward(loss)
    else:
        engine = TaskByTaskStep(setup.weightings[name], task_names, accelerator)

        def forward_backward() -> None:
            engine(model, [batch], step=next(count))

    return forward_backward


def optimizer_step(setup: _Setup, forward_backward: Callable[[], None]) -> Callable[[], None]:
    """One full optimizer step around `forward_backward`: what the Trainer's loop does after training_step."""
    model = setup.model

    def step() -> None:
        # clip (max_grad_norm 1.0), step, zero_grad
        forward_backward()
        setup.accelerator.clip_grad_norm_(model.parameters(), 1.0)
        setup.optimizer.step()
        model.zero_grad()

    return step


def _step_function(setup: _Setup, name: str) -> Callable[[], None]:
    """One full optimizer step of strategy `name`, as the Trainer runs it."""
    return optimizer_step(setup, forward_backward_function(setup, name))


def _timer(device: str) -> Callable[[Callable[[], None]], tuple[float, float]]:
    """Runs a step; returns its wall time and the CPU time of this process (all threads) it took."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(step: Callable[[], None]) -> tuple[float, float]:
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        step()
        sync()
        return time.perf_counter() - start, time.process_time() - cpu

    return timed


def extra_buffer_mb(weighting_cls: Any, model: Any, num_tasks: int, gradient_accumulation_steps: int = 1) -> float:
    """What the engine holds beyond `.grad` (MB): nothing when every task's backward adds straight into
    `.grad`; one parameter-sized buffer when each task's gradient is kept apart (a gradient-level
    strategy, or gradient accumulation); a K × P matrix of the shared parameters' task gradients for
    strategies that need all K at once (`AggregatorWeighting`)."""
    from .weighting import AggregatorWeighting

    def size(params: Any) -> float:
        return sum(p.numel() * p.element_size() for p in params if p.requires_grad) / 2**20

    if isinstance(weighting_cls, type) and issubclass(weighting_cls, AggregatorWeighting):
        head_params = {id(p) for p in model.heads.parameters()}
        return num_tasks * size(p for p in model.parameters() if id(p) not in head_params)
    if weighting_cls.kind != "loss" or gradient_accumulation_steps > 1:
        return size(model.parameters())
    return 0.0


# ---- timing ---------------------------------------------------------------------------------------


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def time_strategies(config: SpeedConfig, setup: _Setup, names: Sequence[str], log: Callable[[str], None],
                    reference: str = "equal", step_function: Callable[[_Setup, str], Callable[[], None]] = _step_function,
                    ratio_key: str = "ratio_to_equal") -> dict[str, dict[str, Any]]:
    """Alternating rounds `R, S1, R, S2, ..., R` (R = `reference`, by default `equal`); per step the times and
    the ratios to the mean of the two R steps around it (under `ratio_key`), for the wall time and for the
    CPU time of the process. `step_function(setup, name)` makes each name's full step."""
    timed = _timer(config.device)
    others = [n for n in names if n != reference]
    steps = {name: step_function(setup, name) for name in [reference, *others]}
    for _ in range(config.warmup):
        for name in [reference, *others]:
            timed(steps[name])
    clocks = ("wall", "cpu")
    times = {clock: {name: [] for name in [reference, *others]} for clock in clocks}
    ratios = {clock: {name: [] for name in [reference, *others]} for clock in clocks}
    for r in range(config.repeats):
        sequence = [(reference, timed(steps[reference]))]
        for name in others:
            sequence += [(name, timed(steps[name])), (reference, timed(steps[reference]))]
        for c, clock in enumerate(clocks):
            ref = [t[c] for n, t in sequence if n == reference]
            for j, name in enumerate(others):  # sequence[2j+1] is `name`, between reference steps j and j+1
                t = sequence[2 * j + 1][1][c]
                times[clock][name].append(t)
                ratios[clock][name].append(t / ((ref[j] + ref[j + 1]) / 2))
            times[clock][reference] += ref
            # the reference against its own neighbours: the noise floor
            ratios[clock][reference] += [ref[j] / ((ref[j - 1] + ref[j + 1]) / 2) for j in range(1, len(ref) - 1)]
        log(f"  round {r + 1}/{config.repeats}: " + ", ".join(
            f"{n} {times['wall'][n][-1]:.3f}s ({times['cpu'][n][-1]:.3f}s CPU)" for n in [reference, *others]))
    results = {}
    for name in [reference, *others]:
        entry: dict[str, Any] = {}
        for clock, prefix in (("wall", ""), ("cpu", "cpu_")):
            values = ratios[clock][name]
            q1, median_ratio, q3 = _quantiles(values) if values else (1.0, 1.0, 1.0)
            entry.update({
                f"median_{prefix}step_s": statistics.median(times[clock][name]),
                f"{prefix}{ratio_key}": 1.0 if name == reference else median_ratio,
                f"{prefix}ratio_q25": q1,
                f"{prefix}ratio_q75": q3,
                f"{prefix}step_times_s": times[clock][name],
                f"{prefix}ratios": values,
            })
        results[name] = entry
    return results


# ---- memory ---------------------------------------------------------------------------------------


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


#: `make_step(config, k, name, optimizer_spec)`: a fresh setup and the full step `name` on it.
StepFactory = Callable[[SpeedConfig, int, str, tuple[str, dict[str, Any]]], Callable[[], None]]


def speed_step(config: SpeedConfig, k: int, name: str, optimizer_spec: tuple[str, dict[str, Any]]) -> Callable[[], None]:
    """A fresh setup and strategy `name`'s step on it: what `bench speed`'s memory subprocess measures."""
    return _step_function(_build(config, k, ["equal", name], optimizer_spec), name)


def measure_memory(config: SpeedConfig, k: int, name: str, optimizer_spec: tuple[str, dict[str, Any]],
                   make_step: StepFactory = speed_step) -> dict[str, Any]:
    """In this process (meant to be fresh): the peak memory of `name`'s step above the post-setup memory."""
    import torch

    step = make_step(config, k, name, optimizer_spec)
    step()  # optimizer state now exists; the step's gradients are freed by its zero_grad
    gc.collect()
    if config.device == "cuda":
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        for _ in range(MEMORY_STEPS):
            step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        how = "torch.cuda.max_memory_allocated"
    else:
        baseline = _proc_status_mb("VmRSS") or _peak_rss_mb()
        how = "VmHWM after clear_refs" if _reset_peak_rss() else "ru_maxrss (peak mark not resettable: includes setup)"
        for _ in range(MEMORY_STEPS):
            step()
        peak = _peak_rss_mb()
    return {"peak_mb": peak - baseline, "peak_total_mb": peak, "baseline_mb": baseline, "memory_method": how}


def _qualified_name(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _resolve(qualified_name: str) -> Any:
    import importlib

    module, _, name = qualified_name.partition(":")
    return getattr(importlib.import_module(module), name)


def _memory_in_subprocess(config: SpeedConfig, k: int, name: str, optimizer_spec: tuple[str, dict[str, Any]],
                          make_step: StepFactory) -> dict[str, Any]:
    # The worker re-creates the config (any SpeedConfig subclass) and the step factory from their import paths.
    payload = json.dumps({"config_class": _qualified_name(type(config)), "config": dataclasses.asdict(config),
                          "make_step": _qualified_name(make_step), "k": k, "name": name, "optimizer": optimizer_spec})
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP_THRESHOLD, TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "hf_mtl.benchmark", "--memory-worker", payload],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench: the memory measurement of {name!r} (K={k}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_memories(config: SpeedConfig, k: int, names: Sequence[str], optimizer_spec: tuple[str, dict[str, Any]],
                     log: Callable[[str], None], make_step: StepFactory = speed_step) -> dict[str, dict[str, Any]]:
    """One fresh subprocess per strategy, two at a time (each measures its own peak; timing is already done).
    `make_step` must be a module-level function (the subprocess imports it by name)."""
    log(f"K={k}: peak memory of {', '.join(names)} (one fresh process each)")
    results = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_memory_in_subprocess, config, k, name, optimizer_spec, make_step) for name in names}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except RuntimeError as err:  # one strategy's failure should not throw away the others' numbers
                log(str(err))
                results[name] = {"memory_error": str(err)[-2000:]}
    return results


# ---- the report -----------------------------------------------------------------------------------


def _level(weighting_cls: Any) -> str:
    """`loss`, `gradient` (per-task gradient factors), `aggregator` (all K gradients at once) or `reference`."""
    return "reference" if weighting_cls is None else weighting_cls.kind


def _strategy_names(config: SpeedConfig) -> list[str]:
    from .weighting import WEIGHTINGS, get_weighting_class

    names = list(WEIGHTINGS) if config.weightings is None else [get_weighting_class(n).name for n in config.weightings]
    names = ["equal", *[n for n in dict.fromkeys(names) if n != "equal"]]
    return [*names, SUMMED]


def run_speed(config: SpeedConfig, argv: Sequence[str] = (), log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON report (also written to `config.output`)."""
    from .weighting import WEIGHTINGS

    log = log or _log_to_stderr
    names = _strategy_names(config)
    report = new_report("speed", config, argv, (
        "step = hf_mtl.engine.TaskByTaskStep (what MultiTaskTrainer.training_step runs) on an "
        "accelerate.Accelerator-prepared model and optimizer, then clip_grad_norm_(1.0), optimizer.step(), "
        "zero_grad(); summed-loss = mean of the K task losses, one backward; rounds equal,S1,equal,S2,...,equal, "
        "ratio = step time / mean of the neighbouring equal steps, median over rounds; peak memory from a fresh "
        "subprocess per strategy, above the memory after setup and one warm-up step"
    ))
    started = time.perf_counter()
    optimizer_spec = trainer_optimizer(config)
    for k in config.tasks:
        log(f"K={k}: building model, optimizer and batches")
        setup = _build(config, k, names, optimizer_spec)
        log(f"K={k}: timing {', '.join(names)} ({config.warmup} warm-up + {config.repeats} rounds)")
        timings = time_strategies(config, setup, names, log)
        run = new_run(config, k, setup)
        for name in names:
            cls = WEIGHTINGS.get(name)
            run["results"].append({
                "strategy": name,
                "level": _level(cls),
                **timings[name],
                "extra_buffer_mb": 0.0 if cls is None else extra_buffer_mb(cls, setup.model, k),
            })
        del setup
        gc.collect()
        if config.memory:
            memories = measure_memories(config, k, names, optimizer_spec, log)
            for result in run["results"]:
                result.update(memories[result["strategy"]])
            equal_peak = run["results"][0].get("peak_mb", math.nan)
            for result in run["results"]:
                if "peak_mb" in result:
                    result["memory_ratio_to_equal"] = result["peak_mb"] / equal_peak if equal_peak > 0 else math.nan
        add_run(report, run, config, started)
    return report


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def new_report(suite: str, config: SpeedConfig, argv: Sequence[str], method: str) -> dict[str, Any]:
    """The JSON report of `hf-mtl bench SUITE argv` before its runs: command, config, environment, method."""
    import torch
    import transformers

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return {
        "command": f"hf-mtl bench {suite} " + shlex.join(argv),
        "config": dataclasses.asdict(config),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name() if config.device == "cuda" else platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            # Other processes on the machine add noise; the alternating ratios cancel drift, not contention.
            "loadavg_start": os.getloadavg(),
        },
        "method": method,
        "runs": [],
    }


def new_run(config: SpeedConfig, k: int, setup: _Setup) -> dict[str, Any]:
    """A report's entry for K tasks, before its results: the tasks, their rows, the model and the optimizer."""
    return {
        "num_tasks": k,
        "tasks": [s.name for s in setup.specs],
        "task_rows": setup.sources,
        "batch_shape": [config.batch_size, config.seq_len],
        "trainable_parameters": sum(p.numel() for p in setup.params),
        "optimizer": setup.optimizer_name,
        "results": [],
    }


def add_run(report: dict[str, Any], run: dict[str, Any], config: SpeedConfig, started: float) -> None:
    """Append `run` and write the report: after every K, so that a long run's first results survive."""
    report["runs"].append(run)
    report["elapsed_s"] = time.perf_counter() - started
    report["environment"]["loadavg_end"] = os.getloadavg()
    with open(config.output, "w") as f:
        json.dump(report, f, indent=2)


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per number of tasks."""
    lines = []
    for run in report["runs"]:
        lines += [
            *run_caption(report, run),
            "| strategy | level | median step (s) | × equal (median) | × equal (quartiles) | CPU time × equal (median) "
            "| peak step memory (MB) | × equal | peak process memory (MB) | extra buffer (MB) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in run["results"]:
            memory = (f"{r['peak_mb']:.0f} | {r['memory_ratio_to_equal']:.2f} | {r['peak_total_mb']:.0f}"
                      if "peak_mb" in r else "– | – | –")
            lines.append(
                f"| {r['strategy']} | {r['level']} | {r['median_step_s']:.3f} | {r['ratio_to_equal']:.3f} | "
                f"{r['ratio_q25']:.3f}–{r['ratio_q75']:.3f} | {r['cpu_ratio_to_equal']:.3f} | {memory} | {r['extra_buffer_mb']:.1f} |"
            )
        lines.append("")
    lines.append(
        load_average_note(report) + " "
        "`summed-loss`: the K losses averaged into one scalar, one backward (all activations alive at once). "
        "`equal` quartiles: each equal step against its two equal neighbours (the noise floor). "
        "CPU time: of this process, all threads (robust to other jobs with --threads 1; with more threads it includes "
        "spin-waiting). "
        "Peak step memory: above the memory after setup and one warm-up step, fresh process per strategy."
    )
    return "\n".join(lines)


def run_caption(report: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """A run's Markdown heading and description line (tasks, batch, device, model size, optimizer, rounds)."""
    config = report["config"]
    renamed = [f"{name} = {rows}" for name, rows in run["task_rows"].items() if name not in BASE_TASKS]
    return [
        f"### K = {run['num_tasks']} tasks: {', '.join(run['tasks'])}",
        "",
        f"{run['batch_shape'][0]} rows × {run['batch_shape'][1]} tokens per task, {config['device']}"
        f"{' bf16' if config['bf16'] else ''}, {run['trainable_parameters'] / 1e6:.1f}M trainable parameters, "
        f"{run['optimizer']}; median of {config['repeats']} alternating rounds after {config['warmup']} warm-up."
        + (f" Renamed copies (same task, next rows): {'; '.join(renamed)}." if renamed else ""),
        "",
    ]


def load_average_note(report: dict[str, Any]) -> str:
    env = report["environment"]
    return (f"Load average (1, 5, 15 min) at start {', '.join(f'{x:.1f}' for x in env['loadavg_start'])}, at end "
            f"{', '.join(f'{x:.1f}' for x in env.get('loadavg_end', env['loadavg_start']))} on {env['cpu_count']} CPUs.")


# ---- command line ---------------------------------------------------------------------------------


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 3,6; got {value!r}") from None


def _name_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def speed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mtl bench speed",
        description="Time every weighting strategy's full optimizer step against `equal` (alternating, same batches) "
        "and measure its peak memory; prints a Markdown table and writes a JSON report.",
    )
    parser.add_argument("--weightings", type=_name_list, default=None,
                        help="comma-separated strategies (default: every registered one); equal is always included")
    add_common_arguments(parser, SpeedConfig())
    return parser


def add_common_arguments(parser: argparse.ArgumentParser, defaults: SpeedConfig) -> None:
    """The flags every suite built on `SpeedConfig` shares (all its fields but `weightings`)."""
    parser.add_argument("--tasks", type=_int_list, default=defaults.tasks, help="numbers of tasks K to run, e.g. 3,6 (default)")
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size, help="rows per task (default 16)")
    parser.add_argument("--seq_len", type=int, default=defaults.seq_len, help="tokens per row, padded/truncated (default 64)")
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="alternating timed rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed rounds first (default 1)")
    parser.add_argument("--model_name_or_path", default=defaults.model_name_or_path)
    parser.add_argument("--glue_dir", default=None, help="GLUE folder in the original TSV layout (default: $GLUE_DIR)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (accelerate mixed_precision='bf16')")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice, one per core); 1 keeps timings sane on a busy machine")
    parser.add_argument("--no_memory", dest="memory", action="store_false", help="skip the per-strategy memory subprocesses")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", default=defaults.output, help=f"JSON report (default {defaults.output})")


def _speed(argv: Sequence[str]) -> int:
    config = SpeedConfig(**vars(speed_parser().parse_args(argv)))
    report = run_speed(config, argv)
    print(markdown_table(report))
    print(f"\nJSON report: {config.output} ({report['elapsed_s']:.0f} s)")
    return 0


def _torchjd(argv: Sequence[str]) -> int:
    from .bench_torchjd import main

    return main(argv)


def _quality(argv: Sequence[str]) -> int:
    from .bench_quality import main

    return main(argv)


#: `hf-mtl bench SUITE`: each suite's entry point takes the flags after the suite's name (modules
#: imported lazily, so one suite's optional dependencies never load for another).
SUITES: dict[str, Callable[[Sequence[str]], int]] = {"speed": _speed, "torchjd": _torchjd, "quality": _quality}


def bench(argv: Sequence[str]) -> int:
    """`hf-mtl bench SUITE [flags]`; the suites are the keys of `SUITES`."""
    argv = list(argv)
    names = ", ".join(SUITES)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: hf-mtl bench SUITE [flags]   (SUITE one of: {names}; hf-mtl bench SUITE --help lists them)")
        return 0 if argv else 2
    if argv[0] not in SUITES:
        print(f"hf-mtl bench: unknown benchmark {argv[0]!r}; the available ones are: {names}", file=sys.stderr)
        return 2
    return SUITES[argv[0]](argv[1:])


def _memory_worker(payload: str) -> None:
    request = json.loads(payload)
    config = _resolve(request["config_class"])(**request["config"])
    result = measure_memory(config, request["k"], request["name"], tuple(request["optimizer"]), _resolve(request["make_step"]))
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        _memory_worker(sys.argv[2])
    else:
        sys.exit(bench(sys.argv[1:]))
