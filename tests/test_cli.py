"""The `hf-mtl` command end to end: real tokenizer, real GLUE files, real models, offline."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from hf_mtl.cli import main
from hf_mtl.weighting import WEIGHTINGS


SEEDS = ["equal", "static", "init", "prior", "realtime", "geometric", "power"]


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "hf_mtl.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_weightings_lists_every_strategy_with_a_description():
    out = run_cli("weightings")
    assert out.returncode == 0, out.stderr
    rows = [line.split(maxsplit=1) for line in out.stdout.splitlines() if line.startswith("  ")]
    listed = [row[0] for row in rows]
    assert sorted(listed) == sorted(WEIGHTINGS)
    assert listed[: len(SEEDS)] == SEEDS
    assert all(len(row) == 2 for row in rows)
    assert "LOSS+GRADIENT" in out.stdout


@pytest.mark.parametrize(
    "tasks, keys",
    [
        ("sst2,wnli", ["eval_sst2_accuracy", "eval_wnli_accuracy"]),
        ("mrpc,stsb", ["eval_mrpc_f1", "eval_mrpc_accuracy", "eval_stsb_pearson", "eval_stsb_spearmanr"]),
    ],
)
def test_train_on_every_local_glue_task(tasks, keys, tmp_path, glue_dir, tiny_checkpoint):
    code = main(["train", "--model_name_or_path", tiny_checkpoint, "--tasks", tasks, "--glue_dir", str(glue_dir),
                 "--weighting", "prior", "--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "2",
                 "--per_device_train_batch_size", "4", "--do_train", "--do_eval", "--output_dir", str(tmp_path),
                 "--report_to", "none", "--disable_tqdm", "true"])
    assert code == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())
    for key in keys + ["eval_glue_score"]:
        assert math.isfinite(results[key]), key


def test_evaluate_only_on_a_task_with_only_a_dev_file(tmp_path, glue_dir, tiny_checkpoint):
    if not (glue_dir / "QNLI" / "dev.tsv").exists():
        pytest.skip("QNLI/dev.tsv not in the GLUE folder")
    code = main(["train", "--model_name_or_path", tiny_checkpoint, "--tasks", "qnli", "--glue_dir", str(glue_dir),
                 "--max_eval_samples", "32", "--do_eval", "--output_dir", str(tmp_path), "--report_to", "none",
                 "--disable_tqdm", "true"])
    assert code == 0
    assert 0 <= json.loads((tmp_path / "eval_results.json").read_text())["eval_qnli_accuracy"] <= 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "sst2,foo"], "unknown task 'foo'. Valid GLUE tasks: cola, sst2"),
        (["--tasks", "sst2", "--weighting", "magic"], "unknown strategy 'magic'. Choose one of: equal, static"),
        (["--tasks", "sst2", "--weighting", "power", "--gamma", "nan"], "--gamma nan is not finite"),
        (["--tasks", "sst2", "--glue_dir", "/nonexistent/glue"], "--glue_dir"),
        (["--tasks", "sst2,sst2"], "given more than once"),
        ([], "--tasks is required"),
        (["--tasks", "sst2", "--task_weights", "sst2:1"], "--task_weights"),
    ],
)
def test_bad_input_gets_a_clear_error(args, message, tmp_path, capsys):
    code = main(["train", "--output_dir", str(tmp_path), "--do_train", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_glue_dir_lacking_the_task_files_names_them(tmp_path, capsys):
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    code = main(["train", "--output_dir", str(tmp_path / "out"), "--do_train", "--tasks", "mrpc",
                 "--glue_dir", str(tmp_path / "glue")])
    assert code == 2
    assert "MRPC" in capsys.readouterr().err


def test_minilm_quick_run_learns_evaluates_and_reloads(tmp_path, glue_dir, minilm_path):
    """MiniLM on SST-2 + MRPC + STS-B subsets through the CLI: loss goes down, every metric is written, reload is exact."""
    out = tmp_path / "run"
    proc = run_cli("train", "--model_name_or_path", "sentence-transformers/all-MiniLM-L6-v2",
                   "--tasks", "sst2,mrpc,stsb", "--glue_dir", str(glue_dir), "--weighting", "geometric",
                   "--max_train_samples", "400", "--max_eval_samples", "64", "--max_seq_length", "64",
                   "--max_steps", "30", "--learning_rate", "1e-4", "--logging_steps", "5",
                   "--per_device_train_batch_size", "8", "--do_train", "--do_eval", "--output_dir", str(out),
                   "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    for key in ["eval_sst2_accuracy", "eval_mrpc_f1", "eval_mrpc_accuracy", "eval_stsb_pearson",
                "eval_stsb_spearmanr", "eval_glue_score", "train_loss"]:
        assert math.isfinite(results[key]), key
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 6
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    assert all(f"weight_{t}" in history[0] for t in ("sst2", "mrpc", "stsb"))

    from transformers import AutoModel, AutoTokenizer

    from hf_mtl.modeling import MultiTaskModel

    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["a gripping , funny film", "dull and lifeless"], ["it is good", "it is bad"],
                      return_tensors="pt", padding=True)
    reloaded = MultiTaskModel.from_pretrained(out).eval()
    auto = AutoModel.from_pretrained(out).eval()
    assert type(auto) is MultiTaskModel
    assert reloaded.config.weighting["name"] == "geometric"
    with torch.no_grad():
        for task in ("sst2", "mrpc", "stsb"):
            torch.testing.assert_close(auto(**batch, task=task).logits, reloaded(**batch, task=task).logits)
    # the predictions the trainer evaluated with are the saved model's: same eval metrics after reload
    from hf_mtl.arguments import DataArguments
    from hf_mtl.pipeline import build_datasets
    from hf_mtl.tasks import parse_tasks
    from hf_mtl.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    tasks = parse_tasks("sst2,mrpc,stsb")
    _, evaluation = build_datasets(tasks, tokenizer, DataArguments(glue_dir=str(glue_dir), max_eval_samples=64,
                                                                   max_seq_length=64))
    trainer = MultiTaskTrainer(model=reloaded, args=MultiTaskTrainingArguments(output_dir=str(tmp_path / "eval"),
                               report_to="none", disable_tqdm=True), eval_dataset=evaluation,
                               processing_class=tokenizer, tasks=tasks)
    again = trainer.evaluate()
    for key in ["eval_sst2_accuracy", "eval_mrpc_f1", "eval_stsb_pearson", "eval_glue_score"]:
        # 1e-5: the run's process and this one may sum in another order (threads); a wrong model is off by far more.
        assert again[key] == pytest.approx(results[key], abs=1e-5), key


@pytest.mark.distributed
def test_torchrun_on_a_cpu_machine_trains_data_parallel_without_use_cpu(tmp_path, glue_dir, tiny_checkpoint):
    if torch.accelerator.is_available():
        pytest.skip("on a machine with an accelerator the processes use it")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hf_mtl.cli",
         "train", "--model_name_or_path", tiny_checkpoint, "--tasks", "sst2,mrpc", "--glue_dir", str(glue_dir),
         "--max_train_samples", "16", "--max_steps", "2", "--do_train", "--output_dir", str(tmp_path),
         "--report_to", "none"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training as 2 data-parallel CPU processes" in proc.stderr
    saved = json.loads((tmp_path / "training_args.json").read_text())
    assert saved["world_size"] == 2 and saved["use_cpu"] is True


def test_torchrun_with_a_gpu_only_backend_on_a_cpu_machine_is_refused(monkeypatch, tmp_path):
    if torch.accelerator.is_available():
        pytest.skip("on a machine with an accelerator nccl may be right")
    from hf_mtl.training_args import MultiTaskTrainingArguments

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"--ddp_backend nccl: 2 processes .* without an accelerator"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), ddp_backend="nccl")
