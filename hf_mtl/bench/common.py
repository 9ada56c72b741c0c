"""What the benchmark suites share: the settings, the model/optimizer/batches setup, the timed step,
the alternating timing, the fresh-subprocess memory measurement, the JSON report and the flags.

`hf-mtl bench speed` (`hf_mtl.bench.speed`) and `hf-mtl bench torchjd` (`hf_mtl.bench.torchjd`) are
built on these; see `hf_mtl.bench.speed` for what a timed step is, how the alternating rounds cancel
machine drift and how peak memory is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
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
#: What each memory subprocess runs (`python -c MEMORY_WORKER PAYLOAD`): imports, never `-m`, so that no
#: module of the package is loaded twice (once as `__main__`).
MEMORY_WORKER = "import sys; from hf_mtl.bench.common import memory_worker; memory_worker(sys.argv[1])"


@dataclass
class SpeedConfig:
    """The settings of one `hf-mtl bench speed` run (see `hf_mtl.bench.speed`); `bench torchjd` extends them."""

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
    from ..tasks import GLUE_TASKS

    tasks = []
    for j in range(k):
        base, block = BASE_TASKS[j % len(BASE_TASKS)], j // len(BASE_TASKS)
        spec = GLUE_TASKS[base]
        if block:
            spec = dataclasses.replace(spec, name=f"{base}_{chr(ord('a') + block)}", hub_config=None)
        tasks.append((spec, base, block))
    return tasks


@dataclass
class Setup:
    """What `build` makes: the prepared model and optimizer, one batch per task, the strategies."""

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


def task_batches(config: SpeedConfig, k: int, tokenizer: Any) -> tuple[list[Any], dict[str, dict[str, Any]], dict[str, Any], dict[str, str]]:
    """The K tasks of `benchmark_tasks(k)` and one batch of each (`config.batch_size` training rows, padded
    to `config.seq_len` tokens, on the CPU): (specs, {task: batch}, {task: label statistics}, {task: rows})."""
    from datasets import DatasetDict

    from ..data import label_statistics, load_task_splits, tokenize_splits
    from ..sampling import TaskCollator
    from ..tasks import GLUE_TASKS

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
    return specs, batch, stats, sources


def build(config: SpeedConfig, k: int, names: Sequence[str], optimizer_spec: tuple[str, dict[str, Any]],
          lora: dict[str, Any] | None = None) -> Setup:
    """Model, optimizer, accelerator, one batch of every task and the strategies `names` (summed-loss aside);
    with `lora` (`MultiTaskModel.add_lora` arguments), LoRA on the encoder before the optimizer sees it."""
    import importlib

    import torch
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from ..modeling import MultiTaskModel, resolve_model_path
    from ..weighting import build_weighting

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model_path = resolve_model_path(config.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    specs, batch, stats, sources = task_batches(config, k, tokenizer)

    torch.manual_seed(config.seed)
    model = MultiTaskModel.from_encoder(model_path, specs)
    if lora is not None:
        model.add_lora(**lora)
    model.train()
    hparams = {"task_weights": {s.name: 1.0 for s in specs}}
    weightings = {name: build_weighting(name, specs, stats, hparams) for name in names if name != SUMMED}
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
    return Setup(model, optimizer, accelerator, specs, batch, weightings, description, sources)


def forward_backward_function(setup: Setup, name: str) -> Callable[[], None]:
    """Strategy `name`'s forward and backward passes (what `MultiTaskTrainer.training_step` runs):
    leaves the step's gradient in `.grad`."""
    from ..engine import TaskByTaskStep

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


def optimizer_step(setup: Setup, forward_backward: Callable[[], None]) -> Callable[[], None]:
    """One full optimizer step around `forward_backward`: what the Trainer's loop does after training_step."""
    model = setup.model

    def step() -> None:
        # clip (max_grad_norm 1.0), step, zero_grad
        forward_backward()
        setup.accelerator.clip_grad_norm_(model.parameters(), 1.0)
        setup.optimizer.step()
        model.zero_grad()

    return step


def strategy_step(setup: Setup, name: str) -> Callable[[], None]:
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


# ---- timing ---------------------------------------------------------------------------------------


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def time_strategies(config: SpeedConfig, setup: Any, names: Sequence[str], log: Callable[[str], None],
                    reference: str = "equal", step_function: Callable[[Any, str], Callable[[], None]] = strategy_step,
                    ratio_key: str = "ratio_to_equal") -> dict[str, dict[str, Any]]:
    """Alternating rounds `R, S1, R, S2, ..., R` (R = `reference`, by default `equal`); per step the times and
    the ratios to the mean of the two R steps around it (under `ratio_key`), for the wall time and for the
    CPU time of the process. `step_function(setup, name)` makes each name's full step (`setup` is whatever
    it needs: a `Setup` by default)."""
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


def measure_memory(config: SpeedConfig, k: int, name: str, optimizer_spec: tuple[str, dict[str, Any]],
                   make_step: StepFactory) -> dict[str, Any]:
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
    done = subprocess.run([sys.executable, "-c", MEMORY_WORKER, payload], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench: the memory measurement of {name!r} (K={k}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_memories(config: SpeedConfig, k: int, names: Sequence[str], optimizer_spec: tuple[str, dict[str, Any]],
                     log: Callable[[str], None], make_step: StepFactory) -> dict[str, dict[str, Any]]:
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


def log_to_stderr(message: str) -> None:
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


def new_run(config: SpeedConfig, k: int, setup: Setup) -> dict[str, Any]:
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
    write_report(report, config, started)


def write_report(report: dict[str, Any], config: SpeedConfig, started: float) -> None:
    """Write the report as it stands to `config.output` (elapsed time and load average updated)."""
    report["elapsed_s"] = time.perf_counter() - started
    report["environment"]["loadavg_end"] = os.getloadavg()
    with open(config.output, "w") as f:
        json.dump(report, f, indent=2)


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


def run_tables(report: dict[str, Any], header: str, separator: str, row: Callable[[dict[str, Any]], str]) -> list[str]:
    """One Markdown table per run of the report (per number of tasks): its caption, `header`, `separator`,
    then `row(result)` for each result."""
    lines: list[str] = []
    for run in report["runs"]:
        lines += [*run_caption(report, run), header, separator, *(row(r) for r in run["results"]), ""]
    return lines


def load_average_note(report: dict[str, Any]) -> str:
    env = report["environment"]
    return (f"Load average (1, 5, 15 min) at start {', '.join(f'{x:.1f}' for x in env['loadavg_start'])}, at end "
            f"{', '.join(f'{x:.1f}' for x in env.get('loadavg_end', env['loadavg_start']))} on {env['cpu_count']} CPUs.")


# ---- command line ---------------------------------------------------------------------------------


def int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 3,6; got {value!r}") from None


def name_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_common_arguments(parser: argparse.ArgumentParser, defaults: SpeedConfig) -> None:
    """The flags every suite built on `SpeedConfig` shares (all its fields but `weightings`)."""
    parser.add_argument("--tasks", type=int_list, default=defaults.tasks, help="numbers of tasks K to run, e.g. 3,6 (default)")
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


# ---- the memory subprocess ------------------------------------------------------------------------


def memory_worker(payload: str) -> None:
    """The memory subprocess: re-create the config and the step factory from their import paths (JSON
    `payload` from `measure_memories`), measure, print the result as JSON on the last line."""
    request = json.loads(payload)
    config = _resolve(request["config_class"])(**request["config"])
    result = measure_memory(config, request["k"], request["name"], tuple(request["optimizer"]), _resolve(request["make_step"]))
    print(json.dumps(result))


