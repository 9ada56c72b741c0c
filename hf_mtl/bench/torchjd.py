"""`hf-mtl bench torchjd`: our gradient aggregators' optimizer step next to torchjd's own path, on the
same model, optimizer and batches.

    hf-mtl bench torchjd [--weightings upgrad,mgda,pcgrad] [--tasks 3,6] [--batch_size 16] [--seq_len 64]
        [--repeats 3] [--warmup 1] [--model_name_or_path M] [--glue_dir DIR] [--device cpu|cuda] [--bf16]
        [--threads N] [--no_memory] [--output bench-torchjd.json]

Needs torchjd 0.18 (`pip install "torchjd[quadprog-projector]>=0.18,<0.19"`, part of the `test` extra).
The model, the optimizer and the per-task batches (real GLUE rows) are those of `hf-mtl bench speed`
(`hf_mtl.bench.common`). For each aggregator and each number of tasks K, two full optimizer steps:

* `hf_mtl`: our step exactly as `bench speed` times it: `hf_mtl.engine.TaskByTaskStep` with the
  weighting (each task's forward and backward in turn, so one task's activations at a time; the K × P
  matrix of the shared (encoder) parameters' task gradients; the aggregated update written into `.grad`
  of the encoder, each head keeping its own task's gradient), then `clip_grad_norm_(1.0)`, the
  optimizer step (the Trainer's default, fused AdamW) and `zero_grad()`.
* `torchjd`: torchjd's own multi-task path (its "Multi-Task Learning" example, torchjd 0.18 API):
  the K task batches forward through the model one after the other, all graphs kept; the shared
  representation of each task (`features`) is what the model feeds its head, the pooled encoder output
  (taken by a forward pre-hook on the head, so the forward and the loss are the model's own); then
  `torchjd.autojac.mtl_backward(losses, features, tasks_params=heads, shared_params=encoder)` (each
  head's gradient into its `.grad`, the K-row Jacobian of the encoder parameters into their `.jac`)
  and `torchjd.autojac.jac_to_grad(encoder parameters, aggregator)` with torchjd's `UPGrad()`,
  `MGDA()` or `PCGrad()`; then the same clipping, optimizer step and `zero_grad()`. Every torchjd knob
  is at its default: `parallel_chunk_size=None` (all K Jacobian rows in one `torch.vmap`-ed backward),
  `retain_graph=False`, `optimize_gramian_computation=False`, UPGrad's quadprog projector
  (`reg_eps=1e-4` on the normalised Gram matrix), MGDA's Frank-Wolfe solver (`epsilon=1e-3`, at most
  100 iterations). Passing the parameter lists spares torchjd its search of the graph for them.

What differs by construction: torchjd keeps all K task graphs alive until its backward (ours holds one
at a time), and because every task here has its own batch, each of the K Jacobian rows is
back-propagated through all K forward graphs (zeros through K − 1 of them): its backward does about
K times our backward's work. (torchjd's examples give all heads one shared batch, where that does not
arise.) `torch.vmap` has no batching rule for the CPU backward of PyTorch's fused attention and loops
over the K rows there (torch warns about it); that costs torchjd little: with eager attention its step
took 4–8% less CPU time on MiniLM, K = 3, and ours gained about as much. Our aggregators solve their
QPs exactly on the Gram matrix; torchjd's UPGrad regularises it and its MGDA iterates to a tolerance;
PCGrad draws its task orders from torch's generator, ours from a seeded numpy one.

The same update: both sides give each head its raw task gradient ∇L_i (L_i the mean loss of task i's
batch) and the encoder the aggregate of the rows ∇L_i with the same scale convention: UPGrad the
mean (1/K) of the projected rows (torchjd's default preference vector), MGDA a convex combination,
PCGrad the sum of the projected rows. Before timing, `update_gap` runs both forward/backward passes
once on the same parameters and batches (same dropout masks: the same seed, and both draw them in the
same order) and reports the relative difference and the cosine between the two gradients (all
parameters); with torchjd's defaults it shows the solver differences above (tests/test_bench_torchjd.py
checks 1e-5 with torchjd's solvers made exact and PCGrad's orders replayed; observed ≤ 2e-7).

Timing: as `bench speed`, with torchjd's step as the reference: after `--warmup` rounds, each of
`--repeats` rounds runs `torchjd, hf_mtl, torchjd`; the ratio is our step time over the mean of the two
torchjd steps around it, the table gives the median over rounds and the quartiles, from the wall time
and from the CPU time of the process (`--threads 1` on a shared machine, and read the CPU column).
Peak memory: as `bench speed`, each side in a fresh subprocess: the step's peak above the memory after
setup and one warm-up step, and the whole process's peak. Ratios below 1 mean ours is cheaper.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import (
    Setup,
    SpeedConfig,
    add_common_arguments,
    add_run,
    build,
    forward_backward_function,
    load_average_note,
    log_to_stderr,
    measure_memories,
    name_list,
    new_report,
    new_run,
    optimizer_step,
    run_tables,
    time_strategies,
    trainer_optimizer,
)

#: Our aggregators with a torchjd counterpart (same name in hf_mtl, torchjd's class name).
AGGREGATORS = {"upgrad": "UPGrad", "mgda": "MGDA", "pcgrad": "PCGrad"}
#: The two sides of every comparison; a step is named `side/aggregator`.
OURS, THEIRS = "hf_mtl", "torchjd"
#: pip requirement of the torchjd version whose API this module uses (pyproject's `test` extra has it too).
TORCHJD_REQUIREMENT = "torchjd[quadprog-projector]>=0.18,<0.19"


@dataclass
class TorchJDConfig(SpeedConfig):
    """The settings of one `hf-mtl bench torchjd` run: those of `bench speed`, `weightings` limited to
    the aggregators torchjd also has."""

    weightings: list[str] | None = field(default_factory=lambda: list(AGGREGATORS))
    output: str = "bench-torchjd.json"

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [name for name in self.weightings or [] if name not in AGGREGATORS]
        if unknown or not self.weightings:
            raise ValueError(
                f"--weightings {','.join(self.weightings or [])}: hf-mtl bench torchjd compares only the aggregators "
                f"torchjd also implements ({', '.join(f'{ours} = {theirs}' for ours, theirs in AGGREGATORS.items())}); "
                f"{'unsupported: ' + ', '.join(unknown) if unknown else 'none given'}. Use e.g. --weightings upgrad,mgda,pcgrad "
                "(hf-mtl bench speed times every strategy)."
            )


def require_torchjd() -> Any:
    """The torchjd module, or ImportError saying how to install it."""
    try:
        import torchjd
        from torchjd.autojac import jac_to_grad, mtl_backward  # noqa: F401  (the 0.18 API this module uses)
    except ImportError as err:
        raise ImportError(
            f"hf-mtl bench torchjd needs torchjd 0.18 ({err}): pip install \"{TORCHJD_REQUIREMENT}\" "
            "(or the project's test extra: pip install -e \".[test]\")."
        ) from None
    return torchjd


def torchjd_aggregator(name: str) -> Any:
    """torchjd's counterpart of our aggregator `name`, at torchjd's defaults."""
    import torchjd.aggregation

    try:
        return getattr(torchjd.aggregation, AGGREGATORS[name])()
    except ImportError as err:  # UPGrad's default projector needs quadprog (torchjd's extra)
        raise ImportError(f"torchjd's {AGGREGATORS[name]} needs an optional solver ({err}): pip install \"{TORCHJD_REQUIREMENT}\".") from None


def torchjd_forward_backward(setup: Setup, aggregator: Any) -> Callable[[], None]:
    """torchjd's forward and backward passes on `setup`'s model and batches (see the module docstring):
    leaves the heads' task gradients and the encoder's aggregated gradient in `.grad`."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    model, batch = setup.model, setup.batch
    task_names = [s.name for s in setup.specs]
    unwrapped = setup.accelerator.unwrap_model(model)
    shared = [p for p in unwrapped.encoder.parameters() if p.requires_grad]
    heads = [[p for p in unwrapped.heads[t].parameters() if p.requires_grad] for t in task_names]

    def forward_backward() -> None:
        features: list[Any] = []
        hooks = [unwrapped.heads[t].register_forward_pre_hook(lambda _, args: features.append(args[0]))
                 for t in task_names]
        try:
            losses = [model(**batch[t]).loss for t in task_names]
        finally:
            for hook in hooks:
                hook.remove()
        mtl_backward(losses, features, tasks_params=heads, shared_params=shared)
        jac_to_grad(shared, aggregator)

    return forward_backward


def _side_and_aggregator(name: str) -> tuple[str, str]:
    side, _, aggregator = name.partition("/")
    return side, aggregator


def step_function(setup: Setup, name: str) -> Callable[[], None]:
    """The full optimizer step `hf_mtl/AGG` (ours, as bench speed) or `torchjd/AGG` (torchjd's path)."""
    side, aggregator = _side_and_aggregator(name)
    if side == THEIRS:
        return optimizer_step(setup, torchjd_forward_backward(setup, torchjd_aggregator(aggregator)))
    return optimizer_step(setup, forward_backward_function(setup, aggregator))


def fresh_step(config: SpeedConfig, k: int, name: str, optimizer_spec: tuple[str, dict[str, Any]]) -> Callable[[], None]:
    """A fresh setup and the step `name` on it: what a memory subprocess measures."""
    return step_function(build(config, k, [_side_and_aggregator(name)[1]], optimizer_spec), name)


def update_gap(setup: Setup, name: str, aggregator: Any, seed: int = 0) -> dict[str, float]:
    """Our and torchjd's gradients for aggregator `name` on the same parameters and batches (no optimizer
    step): their relative difference ‖ours − torchjd‖ / ‖torchjd‖ and cosine, over every trainable parameter."""
    import torch

    params = setup.params
    gradients = []
    for forward_backward in (forward_backward_function(setup, name), torchjd_forward_backward(setup, aggregator)):
        torch.manual_seed(seed)  # the same dropout masks on both sides
        forward_backward()
        gradients.append(torch.cat([torch.zeros(p.numel(), dtype=torch.float64) if p.grad is None else p.grad.detach().reshape(-1).double().cpu()
                                    for p in params]))
        setup.model.zero_grad()
    ours, theirs = gradients
    return {
        "update_relative_difference": float((ours - theirs).norm() / theirs.norm()),
        "update_cosine": float(ours @ theirs / (ours.norm() * theirs.norm())),
    }


def run_torchjd(config: TorchJDConfig, argv: Sequence[str] = (), log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the comparison; returns the JSON report (also written to `config.output`)."""
    require_torchjd()
    log = log or log_to_stderr
    names = list(dict.fromkeys(config.weightings or []))
    report = new_report("torchjd", config, argv, (
        "hf_mtl = bench speed's step (TaskByTaskStep with the aggregator); torchjd = K forwards with the pooled "
        "encoder output as features, torchjd.autojac.mtl_backward(losses, features, tasks_params=heads, "
        "shared_params=encoder) + jac_to_grad(encoder, torchjd.aggregation.X()) at torchjd's defaults; both then "
        "clip_grad_norm_(1.0), optimizer.step(), zero_grad(); rounds torchjd,hf_mtl,torchjd, ratio = our step time / "
        "mean of the neighbouring torchjd steps, median over rounds; peak memory from a fresh subprocess per side"
    ))
    report["environment"]["torchjd"] = _installed_version("torchjd")
    started = time.perf_counter()
    optimizer_spec = trainer_optimizer(config)
    for k in config.tasks:
        log(f"K={k}: building model, optimizer and batches")
        setup = build(config, k, names, optimizer_spec)
        run = new_run(config, k, setup)
        for name in names:
            aggregator = torchjd_aggregator(name)
            ours, theirs = f"{OURS}/{name}", f"{THEIRS}/{name}"
            gap = update_gap(setup, name, aggregator, config.seed)
            log(f"K={k} {name}: update relative difference {gap['update_relative_difference']:.2e}, "
                f"cosine {gap['update_cosine']:.6f}; timing ({config.warmup} warm-up + {config.repeats} rounds)")
            timings = time_strategies(config, setup, [theirs, ours], log, reference=theirs, step_function=step_function,
                                      ratio_key="ratio_to_torchjd")
            run["results"].append({
                "aggregator": name,
                "torchjd_aggregator": repr(aggregator),
                **gap,
                OURS: timings[ours],
                THEIRS: timings[theirs],
            })
        del setup
        gc.collect()
        if config.memory:
            memories = measure_memories(config, k, [f"{side}/{r['aggregator']}" for r in run["results"] for side in (OURS, THEIRS)],
                                        optimizer_spec, log, make_step=fresh_step)
            for result in run["results"]:
                for side in (OURS, THEIRS):
                    result[side].update(memories[f"{side}/{result['aggregator']}"])
                ours_memory, theirs_memory = result[OURS], result[THEIRS]
                if "peak_mb" in ours_memory and "peak_mb" in theirs_memory:
                    result["memory_ratio"] = _ratio(ours_memory["peak_mb"], theirs_memory["peak_mb"])
                    result["process_memory_ratio"] = _ratio(ours_memory["peak_total_mb"], theirs_memory["peak_total_mb"])
        add_run(report, run, config, started)
    return report


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 else math.nan


def _installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per number of tasks, ratios ours / torchjd."""

    def row(r: dict[str, Any]) -> str:
        ours, theirs = r[OURS], r[THEIRS]
        memory = (f"{ours['peak_mb']:.0f} | {theirs['peak_mb']:.0f} | {r['memory_ratio']:.3f} | {r['process_memory_ratio']:.3f}"
                  if "memory_ratio" in r else "– | – | – | –")
        return (f"| {r['aggregator']} | {ours['median_step_s']:.3f} | {theirs['median_step_s']:.3f} | {ours['ratio_to_torchjd']:.3f} | "
                f"{ours['ratio_q25']:.3f}–{ours['ratio_q75']:.3f} | {ours['cpu_ratio_to_torchjd']:.3f} | "
                f"{ours['cpu_ratio_q25']:.3f}–{ours['cpu_ratio_q75']:.3f} | {memory} | {r['update_relative_difference']:.1e} |")

    lines = run_tables(
        report,
        ("| aggregator | hf_mtl step (s) | torchjd step (s) | time × torchjd (median) | (quartiles) | CPU time × torchjd "
         "(median) | (quartiles) | hf_mtl peak step (MB) | torchjd peak step (MB) | step memory × torchjd "
         "| process peak × torchjd | update rel. diff. |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", row)
    lines.append(
        load_average_note(report) + f" torchjd {report['environment'].get('torchjd')}, its aggregators at their defaults. "
        "Ratios are hf_mtl / torchjd (below 1: ours is cheaper). Time: our step over the mean of the two torchjd steps "
        "around it, per round. Peak step memory: above the memory after setup and one warm-up step, fresh process per "
        "side; process peak: the whole process. Update rel. diff.: ‖ours − torchjd‖ / ‖torchjd‖ of the gradients of "
        "one step on the same parameters and batches (torchjd's UPGrad regularises its QP, its MGDA iterates to a "
        "tolerance, PCGrad's task orders are random on both sides)."
    )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    defaults = TorchJDConfig()
    result = argparse.ArgumentParser(
        prog="hf-mtl bench torchjd",
        description="Our aggregators' full optimizer step against torchjd's mtl_backward + aggregator on the same "
        "model, optimizer and batches (alternating): step time and peak memory as ratios ours / torchjd; prints a "
        "Markdown table and writes a JSON report.",
    )
    result.add_argument("--weightings", type=name_list, default=defaults.weightings,
                        help=f"comma-separated aggregators among {', '.join(AGGREGATORS)} (default: all three)")
    add_common_arguments(result, defaults)
    return result


def main(argv: Sequence[str]) -> int:
    """`hf-mtl bench torchjd [flags]`."""
    config = TorchJDConfig(**vars(parser().parse_args(argv)))
    try:
        report = run_torchjd(config, argv)  # checks torchjd (and its solvers) before building anything
    except ImportError as err:
        print(f"hf-mtl: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(report))
    print(f"\nJSON report: {config.output} ({report['elapsed_s']:.0f} s)")
    return 0
