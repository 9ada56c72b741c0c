"""`hf-mtl bench speed`: what each weighting strategy's optimizer step costs next to `equal`.

    hf-mtl bench speed [--tasks 3,6] [--weightings equal,geometric,...] [--batch_size 16] [--seq_len 64]
        [--repeats 3] [--warmup 1] [--model_name_or_path M] [--glue_dir DIR] [--device cpu|cuda] [--bf16]
        [--threads N] [--no_memory] [--no_trainer_baseline] [--output bench-speed.json]

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

K = 1 against a plain Trainer (`k1_vs_trainer` in the JSON, on by default, `--no_trainer_baseline`
skips it): what our machinery costs on top of the Hugging Face `Trainer` when there is nothing to
balance. One task (sst2, the first `--batch_size` training rows padded to `--seq_len`), two models
loaded from the same checkpoint with the same starting weights (the plain model's encoder and
classifier are copied into ours, so the two random heads agree too): a plain
`transformers.Trainer` with `AutoModelForSequenceClassification`, and our `MultiTaskTrainer`
(`MultiTaskTrainingArguments(weighting="equal", tasks="sst2")`) with
`MultiTaskModel.from_encoder(path, [GLUE_TASKS["sst2"]])`. Both trainers are built with
`report_to="none"` (and `use_cpu` on CPU), each creates its own default optimizer
(`Trainer.create_optimizer`) and prepares model and optimizer with its accelerator, as the training
loop does; dropout is as the models have it (the same configuration on both sides). A timed step is
each side's `training_step(model, inputs)` (`inputs` the batch for the plain side, `{"sst2": batch}`
for ours), then what transformers 5's training loop does next, through each trainer's own methods:
`_clip_grad_norm(model)` (`max_grad_norm` 1.0; ours reuses the norm its step measured) and
`_get_grad_norm` (the logged norm), `optimizer.step()` and `model.zero_grad()`. Before timing,
one step of each side from the same weights and the same seed gives `gradient_relative_difference`
(‖ours − trainer‖ / ‖trainer‖ of the gradients after `training_step`) and `update_relative_difference`
(the same for the parameter updates): both did the same step when they are ~0 (dropout masks agree
when both models draw them in the same order, as BERT's do).
Timing alternates `trainer, hf_mtl, trainer` as above; `ratio_to_trainer` is our step time over the
mean of the two Trainer steps around it, median over rounds and quartiles, wall and CPU time. The
goal is a ratio ≤ 1.02. It needs a BERT-like checkpoint, whose sequence-classification model is the
encoder plus a linear classifier on the pooled output (our head); no memory is measured for it.
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .common import (
    SUMMED,
    SpeedConfig,
    add_common_arguments,
    add_run,
    build,
    load_average_note,
    log_to_stderr,
    measure_memories,
    name_list,
    new_report,
    new_run,
    run_tables,
    strategy_step,
    task_batches,
    time_strategies,
    trainer_optimizer,
    write_report,
)

#: The two sides of the K = 1 comparison: the plain Trainer (the reference) and ours.
TRAINER, OURS = "trainer", "hf_mtl"
#: The task of the K = 1 comparison (the first of `BASE_TASKS`).
BASELINE_TASK = "sst2"


def extra_buffer_mb(weighting_cls: Any, model: Any, num_tasks: int, gradient_accumulation_steps: int = 1) -> float:
    """What the engine holds beyond `.grad` (MB): nothing when every task's backward adds straight into
    `.grad`; one parameter-sized buffer when each task's gradient is kept apart (a gradient-level
    strategy, or gradient accumulation); a K × P matrix of the shared parameters' task gradients for
    strategies that need all K at once (`AggregatorWeighting`), plus the K × P buffers of their own state
    (`state_matrices`: DB-MTL's moving averages, MoCo's tracked gradients, ExcessMTL's squared sums)."""
    from ..weighting import AggregatorWeighting

    def size(params: Any) -> float:
        return sum(p.numel() * p.element_size() for p in params if p.requires_grad) / 2**20

    if isinstance(weighting_cls, type) and issubclass(weighting_cls, AggregatorWeighting):
        head_params = {id(p) for p in model.heads.parameters()}
        matrices = 1 + getattr(weighting_cls, "state_matrices", 0)
        return matrices * num_tasks * size(p for p in model.parameters() if id(p) not in head_params)
    if weighting_cls.kind != "loss" or gradient_accumulation_steps > 1:
        return size(model.parameters())
    return 0.0


def speed_step(config: SpeedConfig, k: int, name: str, optimizer_spec: tuple[str, dict[str, Any]]) -> Callable[[], None]:
    """A fresh setup and strategy `name`'s step on it: what `bench speed`'s memory subprocess measures."""
    return strategy_step(build(config, k, ["equal", name], optimizer_spec), name)


# ---- K = 1 against a plain Trainer ----------------------------------------------------------------


@dataclass
class TrainerPair:
    """The two sides of the K = 1 comparison (`TRAINER`, `OURS`): each side's trainer, its prepared model
    and the inputs of its `training_step`; `parameters` pairs each plain-model parameter with ours."""

    trainers: dict[str, Any]
    models: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    parameters: list[tuple[Any, Any]]
    task_rows: str
    trainer_model: str
    optimizer_name: str


def matching_parameters(plain: Any, ours: Any, task: str) -> list[tuple[Any, Any]]:
    """(plain model's parameter, our model's parameter) for every parameter of both, matched by name: the
    plain model's base model (`bert.` for BERT) is our encoder, its `classifier` our task head's linear layer.
    ValueError when the two are not the same network (e.g. a classifier with an extra layer)."""
    theirs = dict(plain.named_parameters())
    prefix, head = plain.base_model_prefix, f"heads.{task}."
    pairs, unmatched = [], []
    for name, parameter in ours.named_parameters():
        if name.startswith("encoder."):
            other = f"{prefix}.{name.removeprefix('encoder.')}"
        elif name.startswith(head + "classifier."):
            other = name.removeprefix(head)
        else:
            other = None
        if other not in theirs or theirs[other].shape != parameter.shape:
            unmatched.append(name)
            continue
        pairs.append((theirs.pop(other), parameter))
    if unmatched or theirs:
        raise ValueError(
            f"bench speed: the K = 1 comparison needs a checkpoint whose {type(plain).__name__} is the encoder plus a "
            f"linear classifier on its pooled output (BERT-like), as MultiTaskModel's head; unmatched parameters: "
            f"{', '.join([*unmatched, *theirs][:5])}. Pass --no_trainer_baseline to skip it."
        )
    return pairs


def build_trainer_pair(config: SpeedConfig, output_dir: str) -> TrainerPair:
    """Both sides of the K = 1 comparison, from the same checkpoint, with the same weights and batch."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    from ..modeling import MultiTaskModel, resolve_model_path
    from ..tasks import GLUE_TASKS
    from ..trainer import MultiTaskTrainer
    from ..training_args import MultiTaskTrainingArguments

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model_path = resolve_model_path(config.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    (spec,), batches, _, sources = task_batches(config, 1, tokenizer)
    assert spec.name == BASELINE_TASK, spec.name
    torch.manual_seed(config.seed)
    plain = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=spec.num_labels, use_safetensors=True)
    ours = MultiTaskModel.from_encoder(model_path, [GLUE_TASKS[BASELINE_TASK]])
    parameters = matching_parameters(plain, ours, spec.name)
    with torch.no_grad():  # the same starting point: the encoder (from the same checkpoint anyway) and the head
        for theirs, mine in parameters:
            mine.copy_(theirs)
    settings = {"output_dir": output_dir, "report_to": "none", "use_cpu": config.device == "cpu", "bf16": config.bf16,
                "seed": config.seed, "max_grad_norm": 1.0}
    trainers = {
        TRAINER: Trainer(model=plain, args=TrainingArguments(**settings)),
        OURS: MultiTaskTrainer(model=ours, args=MultiTaskTrainingArguments(**settings, weighting="equal", tasks=spec.name)),
    }
    models = {}
    for side, trainer in trainers.items():
        # What Trainer.train does before its loop: the default optimizer, model and optimizer prepared.
        trainer.create_optimizer()
        models[side], trainer.optimizer = trainer.accelerator.prepare(trainer.model, trainer.optimizer)
        trainer.current_gradient_accumulation_steps = 1  # set per step by the training loop
    device = trainers[OURS].args.device
    batch = {key: v.to(device) if isinstance(v, torch.Tensor) else v for key, v in batches[spec.name].items()}
    inputs = {TRAINER: {key: v for key, v in batch.items() if key != "task"}, OURS: {spec.name: batch}}
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(trainers[TRAINER].args)
    optimizer_name = f"{cls.__name__}({', '.join(f'{key}={v}' for key, v in kwargs.items())})"
    return TrainerPair(trainers, models, inputs, parameters, sources[spec.name], type(plain).__name__, optimizer_name)


def trainer_pair_step(pair: TrainerPair, side: str) -> Callable[[], None]:
    """One full optimizer step of `side` (`TRAINER` or `OURS`): its trainer's `training_step`, then what the
    Trainer's loop does after it (its clipping and grad-norm methods, optimizer.step(), zero_grad())."""
    trainer, model, inputs = pair.trainers[side], pair.models[side], pair.inputs[side]

    def step() -> None:
        trainer.training_step(model, inputs)
        _after_training_step(trainer, model)

    return step


def _after_training_step(trainer: Any, model: Any) -> None:
    """What transformers 5's training loop does after `training_step` (no gradient accumulation), through the
    trainer's own methods, so that each side clips (and measures the logged norm) its own way."""
    grad_norm = trainer._clip_grad_norm(model) if trainer.args.max_grad_norm > 0 else None
    trainer._get_grad_norm(model, grad_norm=grad_norm)
    trainer.optimizer.step()
    model.zero_grad()


def _relative_gap(pairs: Sequence[tuple[Any, Any]], reference: Sequence[Any] | None = None) -> tuple[float, float]:
    """‖ours − theirs‖ / ‖theirs − reference‖ (reference 0 when None) and max |ours − theirs| over `pairs`."""
    import torch

    squared_gap = squared_norm = largest = 0.0
    with torch.no_grad():
        for i, (theirs, mine) in enumerate(pairs):
            gap = mine.double() - theirs.double()
            squared_gap += float(gap.square().sum())
            base = theirs.double() if reference is None else theirs.double() - reference[i].double()
            squared_norm += float(base.square().sum())
            largest = max(largest, float(gap.abs().max()))
    return (math.sqrt(squared_gap / squared_norm) if squared_norm > 0 else math.nan), largest


def update_difference(pair: TrainerPair, seed: int = 0) -> dict[str, float]:
    """One step of each side from the same weights (same seed: same dropout masks if both draw them in the
    same order): the relative difference ‖ours − trainer‖ / ‖trainer‖ of the gradients after `training_step`
    (the optimizer step, like clipping, is blind to a common scale of the gradient; this is not), then of the
    parameter updates, and the largest parameter gap after the step."""
    import torch

    before = [theirs.detach().clone() for theirs, _ in pair.parameters]
    start_gap = max(float((theirs.detach() - mine.detach()).abs().max()) for theirs, mine in pair.parameters)
    if start_gap != 0.0:
        raise RuntimeError(f"bench speed: the K = 1 models start {start_gap:.2e} apart; they must start equal.")
    for side in (TRAINER, OURS):
        torch.manual_seed(seed)
        pair.trainers[side].training_step(pair.models[side], pair.inputs[side])
    gradients = [(theirs.grad if theirs.grad is not None else torch.zeros_like(theirs),
                  mine.grad if mine.grad is not None else torch.zeros_like(mine)) for theirs, mine in pair.parameters]
    gradient_gap, _ = _relative_gap(gradients)
    for side in (TRAINER, OURS):
        _after_training_step(pair.trainers[side], pair.models[side])
    update_gap, largest = _relative_gap(pair.parameters, reference=before)
    return {"gradient_relative_difference": gradient_gap, "update_relative_difference": update_gap,
            "update_max_abs_difference": largest}


def run_trainer_baseline(config: SpeedConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """The K = 1 comparison (see the module docstring): the `k1_vs_trainer` entry of the report."""
    with tempfile.TemporaryDirectory() as output_dir:  # the trainers' output_dir; nothing is written there
        log(f"K=1 vs a plain Trainer: building both models and trainers ({BASELINE_TASK})")
        pair = build_trainer_pair(config, output_dir)
        gap = update_difference(pair, config.seed)
        log(f"K=1 vs a plain Trainer: relative difference of the gradients {gap['gradient_relative_difference']:.2e}, "
            f"of the updates {gap['update_relative_difference']:.2e}; "
            f"timing ({config.warmup} warm-up + {config.repeats} rounds)")
        timings = time_strategies(config, pair, [TRAINER, OURS], log, reference=TRAINER, step_function=trainer_pair_step,
                                  ratio_key="ratio_to_trainer")
        ours, theirs = timings[OURS], timings[TRAINER]
        result = {
            "task": BASELINE_TASK,
            "task_rows": pair.task_rows,
            "batch_shape": [config.batch_size, config.seq_len],
            "trainable_parameters": sum(p.numel() for _, p in pair.parameters if p.requires_grad),
            "trainer_model": pair.trainer_model,
            "optimizer": pair.optimizer_name,
            "method": (f"trainer = transformers.Trainer + {pair.trainer_model}, hf_mtl = MultiTaskTrainer(weighting=equal, "
                       f"tasks={BASELINE_TASK}) + MultiTaskModel, same starting weights and batch; step = "
                       "training_step(model, inputs), the trainer's _clip_grad_norm (1.0) and _get_grad_norm, "
                       "optimizer.step(), zero_grad(); rounds "
                       "trainer,hf_mtl,trainer, ratio = our step time / mean of the neighbouring trainer steps, median "
                       "over rounds"),
            **gap,
            **{key: ours[key] for key in ("ratio_to_trainer", "ratio_q25", "ratio_q75",
                                          "cpu_ratio_to_trainer", "cpu_ratio_q25", "cpu_ratio_q75")},
            "trainer_median_step_s": theirs["median_step_s"],
            "hf_mtl_median_step_s": ours["median_step_s"],
            "trainer_median_cpu_step_s": theirs["median_cpu_step_s"],
            "hf_mtl_median_cpu_step_s": ours["median_cpu_step_s"],
            TRAINER: theirs,
            OURS: ours,
        }
        del pair
        gc.collect()
    return result


def trainer_baseline_table(report: dict[str, Any]) -> list[str]:
    """The K = 1 comparison as Markdown lines (none when it was not run)."""
    result, config = report.get("k1_vs_trainer"), report["config"]
    if not result:
        return []
    rows = []
    for side, label in ((TRAINER, f"Trainer + {result['trainer_model']}"), (OURS, "MultiTaskTrainer (equal) + MultiTaskModel")):
        r = result[side]
        rows.append(
            f"| {label} | {r['median_step_s']:.3f} | {r['ratio_to_trainer']:.3f} | {r['ratio_q25']:.3f}–{r['ratio_q75']:.3f} | "
            f"{r['median_cpu_step_s']:.3f} | {r['cpu_ratio_to_trainer']:.3f} | {r['cpu_ratio_q25']:.3f}–{r['cpu_ratio_q75']:.3f} |"
        )
    return [
        "### K = 1 vs a plain Trainer step",
        "",
        (f"{result['task_rows']}, {result['batch_shape'][0]} rows × {result['batch_shape'][1]} tokens, {config['device']}"
         f"{' bf16' if config['bf16'] else ''}, {result['trainable_parameters'] / 1e6:.1f}M trainable parameters, "
         f"{result['optimizer']}, same starting weights; each side's training_step, its own clipping at 1.0, optimizer.step(), "
         f"zero_grad(); median of {config['repeats']} alternating rounds after {config['warmup']} warm-up. One step from the "
         f"same weights: relative difference of the gradients {result['gradient_relative_difference']:.1e}, of the "
         f"updates {result['update_relative_difference']:.1e}. "
         f"**Ours × Trainer: {result['ratio_to_trainer']:.3f} (wall), {result['cpu_ratio_to_trainer']:.3f} (CPU)**; "
         "the goal is ≤ 1.02."),
        "",
        "| side | median step (s) | × Trainer (median) | (quartiles) | median CPU step (s) | CPU time × Trainer (median) | (quartiles) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


# ---- the report -----------------------------------------------------------------------------------


def _level(weighting_cls: Any) -> str:
    """`loss`, `gradient` (per-task gradient factors), `aggregator` (all K gradients at once) or `reference`."""
    return "reference" if weighting_cls is None else weighting_cls.kind


def _strategy_names(config: SpeedConfig) -> list[str]:
    from ..weighting import WEIGHTINGS, get_weighting_class

    names = list(WEIGHTINGS) if config.weightings is None else [get_weighting_class(n).name for n in config.weightings]
    names = ["equal", *[n for n in dict.fromkeys(names) if n != "equal"]]
    return [*names, SUMMED]


def run_speed(config: SpeedConfig, argv: Sequence[str] = (), log: Callable[[str], None] | None = None,
              trainer_baseline: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the JSON report (also written to `config.output`). `trainer_baseline`: the K = 1
    comparison against a plain Trainer first (`k1_vs_trainer`; None when skipped)."""
    from ..weighting import WEIGHTINGS

    log = log or log_to_stderr
    names = _strategy_names(config)
    report = new_report("speed", config, argv, (
        "step = hf_mtl.engine.TaskByTaskStep (what MultiTaskTrainer.training_step runs) on an "
        "accelerate.Accelerator-prepared model and optimizer, then clip_grad_norm_(1.0), optimizer.step(), "
        "zero_grad(); summed-loss = mean of the K task losses, one backward; rounds equal,S1,equal,S2,...,equal, "
        "ratio = step time / mean of the neighbouring equal steps, median over rounds; peak memory from a fresh "
        "subprocess per strategy, above the memory after setup and one warm-up step"
    ))
    started = time.perf_counter()
    report["k1_vs_trainer"] = run_trainer_baseline(config, log) if trainer_baseline else None
    write_report(report, config, started)
    optimizer_spec = trainer_optimizer(config)
    for k in config.tasks:
        log(f"K={k}: building model, optimizer and batches")
        setup = build(config, k, names, optimizer_spec)
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
            memories = measure_memories(config, k, names, optimizer_spec, log, make_step=speed_step)
            for result in run["results"]:
                result.update(memories[result["strategy"]])
            equal_peak = run["results"][0].get("peak_mb", math.nan)
            for result in run["results"]:
                if "peak_mb" in result:
                    result["memory_ratio_to_equal"] = result["peak_mb"] / equal_peak if equal_peak > 0 else math.nan
        add_run(report, run, config, started)
    return report


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per number of tasks."""

    def row(r: dict[str, Any]) -> str:
        memory = (f"{r['peak_mb']:.0f} | {r['memory_ratio_to_equal']:.2f} | {r['peak_total_mb']:.0f}"
                  if "peak_mb" in r else "– | – | –")
        return (f"| {r['strategy']} | {r['level']} | {r['median_step_s']:.3f} | {r['ratio_to_equal']:.3f} | "
                f"{r['ratio_q25']:.3f}–{r['ratio_q75']:.3f} | {r['cpu_ratio_to_equal']:.3f} | {memory} | {r['extra_buffer_mb']:.1f} |")

    lines = run_tables(
        report,
        ("| strategy | level | median step (s) | × equal (median) | × equal (quartiles) | CPU time × equal (median) "
         "| peak step memory (MB) | × equal | peak process memory (MB) | extra buffer (MB) |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|", row)
    lines += trainer_baseline_table(report)
    lines.append(
        load_average_note(report) + " "
        "`summed-loss`: the K losses averaged into one scalar, one backward (all activations alive at once). "
        "`equal` quartiles: each equal step against its two equal neighbours (the noise floor). "
        "CPU time: of this process, all threads (robust to other jobs with --threads 1; with more threads it includes "
        "spin-waiting). "
        "Peak step memory: above the memory after setup and one warm-up step, fresh process per strategy."
    )
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------------


def speed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mtl bench speed",
        description="Time every weighting strategy's full optimizer step against `equal` (alternating, same batches) "
        "and measure its peak memory, and one task's step against a plain Trainer step; prints a Markdown table and "
        "writes a JSON report.",
    )
    parser.add_argument("--weightings", type=name_list, default=None,
                        help="comma-separated strategies (default: every registered one); equal is always included")
    add_common_arguments(parser, SpeedConfig())
    parser.add_argument("--no_trainer_baseline", dest="trainer_baseline", action="store_false",
                        help="skip the K = 1 comparison of our step against a plain Trainer step (sst2, equal)")
    return parser


def main(argv: Sequence[str]) -> int:
    """`hf-mtl bench speed [flags]`."""
    args = vars(speed_parser().parse_args(argv))
    trainer_baseline = args.pop("trainer_baseline")
    config = SpeedConfig(**args)
    report = run_speed(config, argv, trainer_baseline=trainer_baseline)
    print(markdown_table(report))
    print(f"\nJSON report: {config.output} ({report['elapsed_s']:.0f} s)")
    return 0

