"""`hf-mtl bench lora`: what LoRA on the shared encoder (`--peft lora`) saves per optimizer step, against full
fine-tuning, for a few strategies.

    hf-mtl bench lora [--weightings equal,grad_normalize,upgrad] [--tasks 3,6] [--lora_r 8] [--lora_alpha 16]
        [--lora_dropout 0.1] [--lora_target_modules query,value] [the flags of bench speed but --weightings]

For each K and strategy, two setups built as `hf-mtl bench speed` builds one (`hf_mtl.bench.common.build`: the
same encoder, the same per-task GLUE batches, the Trainer's default optimizer over the trainable parameters, an
accelerate-prepared model): `full` fine-tunes every weight, `lora` has LoRA on the encoder
(`MultiTaskModel.add_lora` with the flags' settings; the benchmark's heads read BERT's pooler, which is then
trained in full) and trains the adapter, the pooler and the heads. A timed step is the strategy's full optimizer
step (`TaskByTaskStep`, clipping at 1.0, `optimizer.step()`, `zero_grad()`), as in `bench speed`.

Timing alternates `full, lora, full` per round (`hf_mtl.bench.common.time_strategies`): `lora / full` is the LoRA
step time over the mean of the two full steps around it, median over rounds (quartiles beside), for the wall
time and the process CPU time. Peak memory: each (setup, strategy) in a fresh subprocess, the peak of one step
above the memory after setup and a warm-up step (see `hf_mtl.bench.speed`); `lora / full` is the ratio of those
peaks. `extra buffer` is what the engine holds beyond `.grad` (`hf_mtl.bench.speed.extra_buffer_mb`: the K × P
matrix of the trainable shared parameters' task gradients for an aggregator such as `upgrad`), computed from
the trainable parameters of each setup.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import (
    Setup,
    SpeedConfig,
    add_common_arguments,
    build,
    load_average_note,
    log_to_stderr,
    measure_memories,
    name_list,
    new_report,
    strategy_step,
    time_strategies,
    trainer_optimizer,
    write_report,
)

#: The two sides of every comparison: full fine-tuning (the reference) and LoRA.
FULL, LORA = "full", "lora"
#: The strategies of the issue's comparison: loss-level, gradient-level and an aggregator (K × P matrix).
DEFAULT_WEIGHTINGS = ("equal", "grad_normalize", "upgrad")


@dataclass
class LoraSpeedConfig(SpeedConfig):
    """`SpeedConfig` plus the LoRA settings (None: `hf-mtl train --peft lora`'s defaults)."""

    weightings: list[str] | None = field(default_factory=lambda: list(DEFAULT_WEIGHTINGS))
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    lora_target_modules: str | None = None
    output: str = "bench-lora.json"

    def __post_init__(self) -> None:
        from ..lora import check_peft_installed, lora_settings

        super().__post_init__()
        lora_settings(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)
        check_peft_installed()
        if not self.weightings:
            raise ValueError("--weightings must name at least one strategy, e.g. equal,grad_normalize,upgrad.")

    @property
    def lora(self) -> dict[str, Any]:
        """The `MultiTaskModel.add_lora` arguments."""
        return {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "target_modules": self.lora_target_modules}


def side_setup(config: LoraSpeedConfig, k: int, side: str, name: str, optimizer_spec: tuple[str, dict[str, Any]]) -> Setup:
    """One side's setup (full or LoRA) for strategy `name` at K tasks."""
    return build(config, k, [name], optimizer_spec, lora=config.lora if side == LORA else None)


def lora_step(config: LoraSpeedConfig, k: int, name: str, optimizer_spec: tuple[str, dict[str, Any]]) -> Callable[[], None]:
    """A fresh setup and the step `SIDE:STRATEGY` (`name`): what each memory subprocess measures."""
    side, _, strategy = name.partition(":")
    return strategy_step(side_setup(config, k, side, strategy, optimizer_spec), strategy)


def _trainable(setup: Setup) -> int:
    return sum(p.numel() for p in setup.params)


def run_lora(config: LoraSpeedConfig, argv: Sequence[str] = (), log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the comparison; returns the JSON report (also written to `config.output`)."""
    from ..weighting import WEIGHTINGS, get_weighting_class
    from .speed import extra_buffer_mb

    log = log or log_to_stderr
    names = [get_weighting_class(n).name for n in dict.fromkeys(config.weightings or DEFAULT_WEIGHTINGS)]
    report = new_report("lora", config, argv, (
        "per K and strategy: full fine-tuning and LoRA on the encoder (adapter, pooler and heads trained), each the "
        "strategy's full step (TaskByTaskStep, clip 1.0, optimizer.step(), zero_grad()) on the same batches; rounds "
        "full,lora,full, ratio = LoRA step time / mean of the neighbouring full steps, median over rounds; peak "
        "memory from a fresh subprocess per side and strategy, above the memory after setup and one warm-up step"
    ))
    started = time.perf_counter()
    optimizer_spec = trainer_optimizer(config)
    for k in config.tasks:
        run: dict[str, Any] = {"num_tasks": k, "batch_shape": [config.batch_size, config.seq_len], "results": []}
        for name in names:
            log(f"K={k} {name}: building the full and the LoRA setups")
            setups = {side: side_setup(config, k, side, name, optimizer_spec) for side in (FULL, LORA)}
            run.setdefault("tasks", [s.name for s in setups[FULL].specs])
            run.setdefault("task_rows", setups[FULL].sources)
            run.setdefault("optimizer", setups[FULL].optimizer_name)
            timings = time_strategies(config, setups, [FULL, LORA], log, reference=FULL,
                                      step_function=lambda s, side, n=name: strategy_step(s[side], n),
                                      ratio_key="ratio_to_full")
            cls = WEIGHTINGS[name]
            result = {"strategy": name, "level": cls.kind,
                      **{f"{side}_trainable_parameters": _trainable(setups[side]) for side in (FULL, LORA)},
                      **{f"{side}_extra_buffer_mb": extra_buffer_mb(cls, setups[side].model, k) for side in (FULL, LORA)},
                      **{f"{side}_median_step_s": timings[side]["median_step_s"] for side in (FULL, LORA)},
                      **{key: timings[LORA][key] for key in ("ratio_to_full", "ratio_q25", "ratio_q75",
                                                             "cpu_ratio_to_full", "cpu_ratio_q25", "cpu_ratio_q75")},
                      FULL: timings[FULL], LORA: timings[LORA]}
            del setups
            gc.collect()
            run["results"].append(result)
        if config.memory:
            sides = [f"{side}:{name}" for name in names for side in (FULL, LORA)]
            memories = measure_memories(config, k, sides, optimizer_spec, log, make_step=lora_step)
            for result in run["results"]:
                for side in (FULL, LORA):
                    result[f"{side}_memory"] = memories[f"{side}:{result['strategy']}"]
                full, lora = (result[f"{side}_memory"].get("peak_mb") for side in (FULL, LORA))
                result["memory_ratio_to_full"] = lora / full if full and lora is not None else None
        report["runs"].append(run)
        write_report(report, config, started)
    return report


def _number(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per number of tasks."""
    config = report["config"]
    lines: list[str] = []
    for run in report["runs"]:
        lines += [
            f"### K = {run['num_tasks']} tasks: {', '.join(run['tasks'])}",
            "",
            (f"{run['batch_shape'][0]} rows × {run['batch_shape'][1]} tokens per task, {config['device']}"
             f"{' bf16' if config['bf16'] else ''}, {run['optimizer']}; LoRA r={config['lora_r'] or 'default'}, "
             f"targets {config['lora_target_modules'] or 'default'}; median of {config['repeats']} alternating rounds "
             f"after {config['warmup']} warm-up."),
            "",
            ("| strategy | level | trainable full / LoRA | full step (s) | LoRA step (s) | LoRA / full time (median) "
             "| (quartiles) | CPU time LoRA / full | peak step memory full / LoRA (MB) | LoRA / full memory "
             "| extra buffer full / LoRA (MB) |"),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in run["results"]:
            peaks = [r.get(f"{side}_memory", {}).get("peak_mb") for side in (FULL, LORA)]
            lines.append(
                f"| {r['strategy']} | {r['level']} | {r['full_trainable_parameters'] / 1e6:.2f}M / "
                f"{r['lora_trainable_parameters'] / 1e6:.3f}M | {r['full_median_step_s']:.3f} | "
                f"{r['lora_median_step_s']:.3f} | {r['ratio_to_full']:.3f} | {r['ratio_q25']:.3f}–{r['ratio_q75']:.3f} | "
                f"{r['cpu_ratio_to_full']:.3f} | {_number(peaks[0], '.0f')} / {_number(peaks[1], '.0f')} | "
                f"{_number(r.get('memory_ratio_to_full'), '.2f')} | {r['full_extra_buffer_mb']:.1f} / "
                f"{r['lora_extra_buffer_mb']:.2f} |")
        lines.append("")
    lines.append(load_average_note(report) + " Ratios < 1: LoRA is cheaper. Peak step memory: above the memory after "
                 "setup and one warm-up step, fresh process per side and strategy.")
    return "\n".join(lines)


def lora_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mtl bench lora",
        description="Time and measure the peak memory of LoRA on the shared encoder (--peft lora) against full "
        "fine-tuning, per strategy and number of tasks; prints a Markdown table of LoRA / full ratios and writes a "
        "JSON report.",
    )
    defaults = LoraSpeedConfig()
    parser.add_argument("--weightings", type=name_list, default=defaults.weightings,
                        help=f"comma-separated strategies (default: {','.join(DEFAULT_WEIGHTINGS)})")
    parser.add_argument("--lora_r", type=int, default=None, help="LoRA rank (default: hf-mtl train's)")
    parser.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default: hf-mtl train's)")
    parser.add_argument("--lora_dropout", type=float, default=None, help="LoRA dropout (default: hf-mtl train's)")
    parser.add_argument("--lora_target_modules", default=None, help="LoRA target modules (default: hf-mtl train's)")
    add_common_arguments(parser, defaults)
    return parser


def main(argv: Sequence[str]) -> int:
    """`hf-mtl bench lora [flags]`."""
    config = LoraSpeedConfig(**vars(lora_parser().parse_args(argv)))
    report = run_lora(config, argv)
    print(markdown_table(report))
    print(f"\nJSON report: {config.output} ({report['elapsed_s']:.0f} s)")
    return 0

