"""Issue #17, the training run's arguments: a careless user's flags, config files and output folder get a
clear refusal that names the flag (or the file and line), the value and the fix; nothing is overwritten
or evaluated partially without being asked. Real tokenizer, tiny real BERT, real GLUE files."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from hf_mtl.cli import main

NEW_RUN = "--overwrite_output_dir"


def train_flags(tiny_checkpoint: str, glue_dir: Path | str, tasks: str = "sst2,mrpc") -> list[str]:
    return ["--model_name_or_path", tiny_checkpoint, "--glue_dir", str(glue_dir), "--tasks", tasks,
            "--max_train_samples", "16", "--max_eval_samples", "8", "--per_device_train_batch_size", "4",
            "--report_to", "none", "--disable_tqdm", "true"]


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-mtl: error: ")]
    assert lines, err[-2000:]
    return lines[-1]


def global_step(run: Path) -> int:
    return json.loads((run / "trainer_state.json").read_text())["global_step"]


# ---- 1. the output folder: a finished run is not overwritten silently -------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_checkpoint, glue_dir) -> Path:
    """A real finished run: trained 1 step and evaluated, no checkpoint."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *train_flags(tiny_checkpoint, glue_dir), "--max_steps", "1", "--save_strategy", "no",
                 "--do_train", "--do_eval", "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory, tiny_checkpoint, glue_dir) -> Path:
    """A real run with checkpoint-1 and checkpoint-2."""
    out = tmp_path_factory.mktemp("checkpointed") / "run"
    assert main(["train", *train_flags(tiny_checkpoint, glue_dir), "--max_steps", "2", "--save_strategy", "steps",
                 "--save_steps", "1", "--do_train", "--output_dir", str(out)]) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_into_a_finished_run_is_refused_before_any_data_is_read(finished_run, tmp_path, tiny_checkpoint, capsys):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    before = snapshot(run)
    # A --glue_dir that does not exist: had any data been read first, the error would be about it.
    code = main(["train", *train_flags(tiny_checkpoint, tmp_path / "no-glue-here"), "--max_steps", "2", "--do_train",
                 "--output_dir", str(run)])
    assert code == 2
    error = error_of(capsys)
    assert f"--output_dir {run} already holds a finished run" in error
    assert "model.safetensors" in error and "all_results.json" in error and NEW_RUN in error
    assert snapshot(run) == before


@pytest.mark.parametrize("files", [["config.json", "model.safetensors"], ["all_results.json"], ["trainer_state.json"],
                                   ["eval_results.json", "training_args.json"]])
def test_any_model_or_results_file_makes_a_finished_run(files, finished_run, tmp_path, tiny_checkpoint, glue_dir, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in files:
        shutil.copy(finished_run / name, run / name)
    code = main(["train", *train_flags(tiny_checkpoint, glue_dir), "--max_steps", "1", "--do_train",
                 "--output_dir", str(run)])
    assert code == 2
    error = error_of(capsys)
    assert f"holds a finished run ({', '.join(files)})" in error and NEW_RUN in error


def test_the_python_api_refuses_a_finished_run_too(finished_run, tmp_path, tiny_checkpoint):
    from hf_mtl.arguments import DataArguments, ModelArguments
    from hf_mtl.pipeline import run_training
    from hf_mtl.training_args import MultiTaskTrainingArguments

    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    args = MultiTaskTrainingArguments(output_dir=str(run), tasks="sst2", do_train=True, report_to="none")
    with pytest.raises(ValueError, match="already holds a finished run"):
        run_training(ModelArguments(model_name_or_path=tiny_checkpoint), DataArguments(glue_dir=str(tmp_path / "none")), args)


def test_overwrite_output_dir_trains_from_scratch_and_drops_the_old_results(finished_run, tmp_path, tiny_checkpoint,
                                                                            glue_dir, caplog):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    assert any(k.startswith("eval_") for k in json.loads((run / "all_results.json").read_text()))
    with caplog.at_level(logging.WARNING):
        code = main(["train", *train_flags(tiny_checkpoint, glue_dir), "--max_steps", "2", "--save_strategy", "no",
                     "--do_train", "--output_dir", str(run), NEW_RUN])
    assert code == 0
    assert "--overwrite_output_dir: deleting the previous run's all_results.json" in caplog.text
    results = json.loads((run / "all_results.json").read_text())
    assert not [k for k in results if k.startswith("eval_")], results  # the old run's metrics are not mixed in
    assert not (run / "eval_results.json").exists()
    assert global_step(run) == 2


def test_overwrite_output_dir_does_not_resume_and_drops_the_old_checkpoints(checkpointed_run, tmp_path,
                                                                            tiny_checkpoint, glue_dir):
    run = Path(shutil.copytree(checkpointed_run, tmp_path / "run"))
    code = main(["train", *train_flags(tiny_checkpoint, glue_dir), "--max_steps", "1", "--save_strategy", "steps",
                 "--save_steps", "1", "--do_train", "--output_dir", str(run), NEW_RUN])
    assert code == 0
    assert global_step(run) == 1  # resumed from checkpoint-2 it would be 2
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]  # a later resume cannot pick the old one


def test_a_folder_with_checkpoints_still_resumes(checkpointed_run, tmp_path, tiny_checkpoint, glue_dir, caplog):
    run = Path(shutil.copytree(checkpointed_run, tmp_path / "run"))
    with caplog.at_level(logging.INFO):
        code = main(["train", *train_flags(tiny_checkpoint, glue_dir), "--max_steps", "3", "--save_strategy", "no",
                     "--do_train", "--output_dir", str(run)])
    assert code == 0
    assert f"resuming from {run / 'checkpoint-2'}" in caplog.text
    assert global_step(run) == 3


def test_a_folder_with_unrelated_files_is_trained_into(tmp_path, tiny_checkpoint, glue_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("bench quality writes its log here before training\n")
    code = main(["train", *train_flags(tiny_checkpoint, glue_dir, "sst2"), "--max_steps", "1", "--save_strategy", "no",
                 "--do_train", "--output_dir", str(run)])
    assert code == 0
    assert global_step(run) == 1 and (run / "train.log").exists()


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, tiny_checkpoint, glue_dir, capsys):
    path = tmp_path / "out.txt"
    path.write_text("not a folder")
    assert main(["train", *train_flags(tiny_checkpoint, glue_dir), "--do_train", "--output_dir", str(path)]) == 2
    assert f"--output_dir {path} is a file, not a folder" in error_of(capsys)


# ---- 2 and 3. count flags: refused up front, naming the flag, the value and the valid range ---------------


BAD_COUNTS = [
    ("per_device_train_batch_size", 0, "a whole number >= 1"),
    ("per_device_train_batch_size", -4, "a whole number >= 1"),
    ("per_device_eval_batch_size", 0, "a whole number >= 1"),
    ("gradient_accumulation_steps", -2, "a whole number >= 1"),
    ("gradient_accumulation_steps", 0, "a whole number >= 1"),
    ("gradient_accumulation_steps", 2.5, "a whole number >= 1"),
    ("max_steps", 0, "a whole number >= 1 (optimizer steps to train), or -1"),
    ("max_steps", -5, "or -1 (the default: train for --num_train_epochs)"),
    ("num_train_epochs", 0, "a finite number > 0"),
    ("num_train_epochs", -1.0, "a finite number > 0"),
    ("num_train_epochs", float("inf"), "a finite number > 0"),
    ("logging_steps", -5, "a whole number of optimizer steps >= 1, or a fraction in (0, 1)"),
    ("logging_steps", float("nan"), "a whole number of optimizer steps >= 1"),
    ("save_steps", 0, "--save_strategy no turns it off"),
    ("save_steps", -1, "a whole number of optimizer steps >= 1"),
    ("save_total_limit", 0, "a whole number >= 1"),
    ("save_total_limit", -1, "a whole number >= 1"),
    ("eval_accumulation_steps", 0, "a whole number >= 1"),
    ("dataloader_num_workers", -1, "a whole number >= 0"),
]


@pytest.mark.parametrize("flag, value, requirement", BAD_COUNTS)
def test_the_training_arguments_refuse_a_bad_count(flag, value, requirement, tmp_path):
    from hf_mtl.training_args import MultiTaskTrainingArguments

    with pytest.raises(ValueError) as error:
        MultiTaskTrainingArguments(output_dir=str(tmp_path), **{flag: value})
    assert str(error.value).startswith(f"--{flag} must be ")
    assert requirement in str(error.value) and str(error.value).endswith(f"got {value!r}.")


def test_eval_steps_is_checked_when_it_is_used(tmp_path):
    from hf_mtl.training_args import MultiTaskTrainingArguments

    with pytest.raises(ValueError, match=r"--eval_steps must be .* \(with --eval_strategy steps; --eval_strategy no "
                       r"turns it off\), got -1\."):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=-1)
    with pytest.raises(ValueError, match=r"--dataloader_prefetch_factor must be a whole number >= 1 .* got 0\."):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), dataloader_num_workers=1, dataloader_prefetch_factor=0)


def test_valid_edge_values_are_accepted(tmp_path):
    from hf_mtl.training_args import MultiTaskTrainingArguments

    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), max_steps=-1, num_train_epochs=0.5, logging_steps=0.1,
                                      save_strategy="steps", save_steps=0.5, eval_strategy="steps", eval_steps=0,
                                      dataloader_num_workers=0, save_total_limit=1, eval_accumulation_steps=1,
                                      tasks=["sst2", "mrpc"])
    assert args.eval_steps == 0.1  # transformers' own reading of eval_steps 0: the logging interval
    assert args.tasks == "sst2,mrpc"  # a list of tasks works from Python too
    # A count the strategy does not use is not checked (--save_steps without --save_strategy steps).
    MultiTaskTrainingArguments(output_dir=str(tmp_path), save_strategy="no", save_steps=-1)


@pytest.mark.parametrize("flag, value, requirement", [
    ("max_seq_length", 0, "a whole number >= 1 (tokens per input"),
    ("max_seq_length", -5, "a whole number >= 1"),
    ("max_train_samples", 0, "a whole number >= 1 (rows kept per task), or unset (every row is kept)"),
    ("max_eval_samples", -1, "a whole number >= 1"),
])
def test_the_data_arguments_refuse_a_bad_count(flag, value, requirement):
    from hf_mtl.arguments import DataArguments

    with pytest.raises(ValueError) as error:
        DataArguments(**{flag: value})
    assert str(error.value).startswith(f"--{flag} must be ") and requirement in str(error.value)
    assert str(error.value).endswith(f"got {value!r}.")


@pytest.mark.parametrize("flags, message", [
    (["--gradient_accumulation_steps", "-2"], "--gradient_accumulation_steps must be a whole number >= 1 (micro-batches"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be a whole number >= 1"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be a whole number >= 1"),
    (["--max_steps", "0"], "--max_steps must be a whole number >= 1 (optimizer steps to train), or -1"),
    (["--max_steps", "-3"], "--max_steps must be a whole number >= 1"),
    (["--num_train_epochs", "0", "--max_steps", "-1"], "--num_train_epochs must be a finite number > 0"),
    (["--save_strategy", "steps", "--save_steps", "0"], "--save_steps must be a whole number of optimizer steps >= 1"),
    (["--save_strategy", "steps", "--save_total_limit", "0"], "--save_total_limit must be a whole number >= 1"),
    (["--max_seq_length", "0"], "--max_seq_length must be a whole number >= 1"),
    (["--max_train_samples", "-3"], "--max_train_samples must be a whole number >= 1"),
    (["--classifier_dropout", "1.5"], "--classifier_dropout must be a probability in [0, 1)"),
    (["--validation_split_percentage", "100"], "--validation_split_percentage must be a percentage between 0 and 100"),
    (["--validation_split_percentage", "0"], "--validation_split_percentage must be a percentage between 0 and 100"),
    (["--validation_split_percentage", "99", "--max_train_samples", "16"],
     "--validation_split_percentage=99.0: task 'sst2' has 16 training rows, so it would hold out 16"),
])
def test_hf_mtl_train_refuses_a_bad_count_before_training(flags, message, tmp_path, tiny_checkpoint, glue_dir, capsys):
    out = tmp_path / "out"
    code = main(["train", *train_flags(tiny_checkpoint, glue_dir), *flags, "--do_train", "--output_dir", str(out)])
    assert code == 2
    assert error_of(capsys).startswith(f"hf-mtl: error: {message}")
    assert not (out / "model.safetensors").exists()


def test_the_sampler_refuses_zero_batches_per_step():
    from hf_mtl.sampling import MultiTaskBatchSampler

    with pytest.raises(ValueError, match=r"batches_per_step=0 .* --gradient_accumulation_steps 1 or more"):
        MultiTaskBatchSampler([10, 20], batch_size=4, batches_per_step=0)
    with pytest.raises(ValueError, match="task_sizes is empty"):
        MultiTaskBatchSampler([], batch_size=4)


# ---- 4. config files: strict, every problem named with the file and the line ------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_CONFIGS = [
    ("dup.yaml", "tasks: sst2\nmax_steps: 2\ntasks: mrpc\n", ["key 'tasks' is given twice, on line 1 and line 3"]),
    ("nested-dup.yaml", "tasks: sst2\ntask_weights:\n  sst2: 1\n  sst2: 2\n", ["key 'sst2' is given twice, on line 3 and line 4"]),
    ("dup.json", '{"tasks": "sst2",\n "max_steps": 2,\n "tasks": "mrpc"}\n',
     ["key 'tasks' is given twice, at line 1, column 2 and line 3, column 2"]),
    ("alias.yaml", "max_steps: 2\nmax-steps: 3\n", ["max_steps is given twice, as 'max_steps' (line 1) and 'max-steps' (line 2)"]),
    ("trailing.json", '{"tasks": "sst2"} x\n', ["line 1, column 19: not valid JSON: text after the end of the JSON value"]),
    ("comma.json", '{"tasks": "sst2"\n "max_steps": 2}\n', ["line 2, column 2: not valid JSON: Expecting ',' delimiter"]),
    ("bad.yaml", "tasks: [sst2, mrpc\nmax_steps: 2\n", ["line 2, column 10: not valid YAML", "lists as [a, b]"]),
    ("tab.yaml", "tasks: sst2\n\tmax_steps: 2\n", ["line 2, column 1: not valid YAML"]),
    ("seq.yaml", "- tasks: sst2\n- max_steps: 2\n", ["expected a mapping of flag names to values", "got a list"]),
    ("scalar.json", '"sst2"\n', ["expected a mapping of flag names to values (e.g. `tasks: sst2,mrpc`"]),
    ("empty.yaml", "", ["is empty: write one `flag: value` per line"]),
    ("unknown.yaml", "tasks: sst2\nmax_stepz: 2\n", ["line 2: unknown key 'max_stepz'; did you mean max_steps?"]),
    ("dashes.yaml", "--max_steps: 2\n", ["line 1: unknown key '--max_steps'; did you mean max_steps?"]),
    ("type.yaml", "tasks: sst2\nmax_steps: two\n", ["line 2: max_steps is 'two', but --max_steps takes a whole number"]),
    ("float.json", '{"tasks": "sst2",\n "max_steps": 2.5}', ["line 2: max_steps is 2.5, but --max_steps takes a whole number"]),
    ("list.yaml", "tasks: sst2\nmax_steps: [1, 2]\n", ["line 2: max_steps is a list [1, 2], but --max_steps takes one value"]),
    ("choice.yaml", "nan_policy: skip\n", ["line 1: nan_policy is 'skip', but --nan_policy takes one of raise, skip_step"]),
    ("yes-no.yaml", "report_to: no\n", ["line 1: report_to is false, but --report_to takes a string", "quote"]),
    ("switch.yaml", "no_checkpoint_on_signal: maybe\n", ["line 1: no_checkpoint_on_signal is 'maybe', but it is a switch"]),
    ("empty-list.yaml", "tasks: []\n", ["line 1: tasks is an empty list"]),
]


@pytest.mark.parametrize("name, text, fragments", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_file_is_refused_naming_the_file_and_the_line(name, text, fragments, tmp_path, tiny_checkpoint,
                                                                   glue_dir, capsys):
    path = write(tmp_path, name, text)
    # Flags that keep a run short where a config was accepted (as before this check): never --tasks.
    quick = ["--model_name_or_path", tiny_checkpoint, "--glue_dir", str(glue_dir), "--max_train_samples", "8",
             "--max_steps", "1", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
    code = main(["train", str(path), *quick, "--output_dir", str(tmp_path / "out"), "--do_train"])
    assert code == 2
    error = error_of(capsys)
    assert error.startswith(f"hf-mtl: error: config file {path}")
    for fragment in fragments:
        assert fragment in error


def test_a_missing_config_file_or_one_with_another_suffix_is_named(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nothere.yaml"), "--do_train"]) == 2
    assert error_of(capsys).startswith(f"hf-mtl: error: config file {tmp_path / 'nothere.yaml'}: no such file")
    path = write(tmp_path, "config.txt", "tasks: sst2\n")
    assert main(["train", str(path), "--do_train"]) == 2
    assert "a config file's name ends in .yaml, .yml or .json" in error_of(capsys)


@pytest.mark.parametrize("name, text", [("tasks.yaml", "tasks: [sst2, mrpc]\nmax_steps: 2\n"),
                                        ("tasks.json", '{"tasks": ["sst2", "mrpc"], "max_steps": 2}'),
                                        ("block.yml", "tasks:\n  - sst2\n  - mrpc\nmax_steps: 2\n")])
def test_a_list_of_tasks_in_a_config_file_works(name, text, tmp_path):
    from hf_mtl.arguments import parse_train_args

    _, _, args = parse_train_args([str(write(tmp_path, name, text)), "--output_dir", str(tmp_path)])
    assert args.tasks == "sst2,mrpc" and args.max_steps == 2


def test_config_values_of_every_kind_reach_their_flags(tmp_path):
    from hf_mtl.arguments import parse_train_args

    path = write(tmp_path, "kinds.yaml", "tasks: sst2\nweighting: static\ntask_weights: {sst2: 1}\ndo_train: yes\n"
                 "no_checkpoint_on_signal: true\nlabel_names: [labels]\nlearning_rate: 2.0e-5\nmax_train_samples: null\n")
    _, data_args, args = parse_train_args([str(path), "--output_dir", str(tmp_path), "--learning_rate", "1e-4"])
    assert args.do_train is True and args.checkpoint_on_signal is False and args.label_names == ["labels"]
    assert json.loads(args.task_weights) == {"sst2": 1} and args.learning_rate == 1e-4  # the flag after the file wins
    assert data_args.max_train_samples is None


def test_the_shipped_configs_still_parse(tmp_path):
    from hf_mtl.arguments import config_to_argv, parse_train_args

    repo = Path(__file__).resolve().parents[1]
    _, _, args = parse_train_args([str(repo / "configs" / "quickstart-cpu.yaml"), "--output_dir", str(tmp_path)])
    assert args.tasks
    # bench quality reads its own keys (seeds, weightings) through config_to_argv: not checked against train flags
    argv = config_to_argv(str(repo / "configs" / "quality-cpu.yaml"))
    assert argv[argv.index("--seeds") + 1: argv.index("--seeds") + 4] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="key 'seeds' is given twice, on line 1 and line 2"):
        config_to_argv(str(write(tmp_path, "quality.yaml", "seeds: [1]\nseeds: [2]\n")))


def test_a_yaml_list_of_tasks_trains_and_evaluates_every_task(tmp_path, tiny_checkpoint, glue_dir):
    path = write(tmp_path, "run.yaml", "tasks: [sst2, mrpc]\nmax_steps: 1\nsave_strategy: 'no'\ndo_train: true\n"
                 "do_eval: true\n")
    flags = train_flags(tiny_checkpoint, glue_dir)
    i = flags.index("--tasks")
    del flags[i:i + 2]
    assert main(["train", str(path), *flags, "--output_dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert "eval_sst2_accuracy" in results and "eval_mrpc_f1" in results


@pytest.mark.parametrize("flags, message", [
    (["--tasks", "sst2", "mrpc"], ("unexpected argument 'mrpc' after --tasks sst2: --tasks takes one value; for "
                                   "several, join them with commas: --tasks sst2,mrpc.")),
    (["--tasks", "sst2", "--evaluation_strategy", "steps"], "unknown flag --evaluation_strategy (did you mean --eval_strategy?)"),
    (["sst2", "--tasks", "sst2"], "unexpected argument 'sst2': hf-mtl train takes a config file"),
])
def test_a_stray_command_line_argument_is_explained(flags, message, tmp_path, capsys):
    assert main(["train", *flags, "--output_dir", str(tmp_path), "--do_train"]) == 2
    assert error_of(capsys).startswith(f"hf-mtl: error: {message}")


# ---- 5. evaluation data: a task without it is refused, or left out when asked, and said so -----------------


@pytest.fixture
def glue_without_mrpc_dev(tmp_path, glue_dir) -> Path:
    """A GLUE folder with SST-2/train.tsv, SST-2/dev.tsv and MRPC/train.tsv (links to the real files)."""
    folder = tmp_path / "glue"
    for name in ("SST-2/train.tsv", "SST-2/dev.tsv", "MRPC/train.tsv"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(glue_dir / name, folder / name)
    return folder


@pytest.mark.parametrize("do_train", [["--do_train"], []], ids=["train-and-eval", "eval-only"])
def test_do_eval_refuses_a_task_without_evaluation_data_before_training(do_train, glue_without_mrpc_dev, tmp_path,
                                                                        tiny_checkpoint, capsys):
    out = tmp_path / "out"
    code = main(["train", *train_flags(tiny_checkpoint, glue_without_mrpc_dev), "--max_steps", "1", *do_train,
                 "--do_eval", "--output_dir", str(out)])
    assert code == 2
    error = error_of(capsys)
    assert f"--do_eval: task mrpc: {glue_without_mrpc_dev / 'MRPC' / 'dev.tsv'} not found" in error
    assert "--eval_available_only to evaluate sst2 only" in error
    assert not (out / "model.safetensors").exists() and not (out / "trainer_state.json").exists()


def test_eval_available_only_evaluates_what_exists_and_records_it(glue_without_mrpc_dev, tmp_path, tiny_checkpoint,
                                                                  caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code = main(["train", *train_flags(tiny_checkpoint, glue_without_mrpc_dev), "--max_steps", "1", "--save_strategy",
                     "no", "--do_train", "--do_eval", "--eval_available_only", "--output_dir", str(out)])
    assert code == 0
    assert "eval_glue_score covers sst2 only" in caplog.text and "mrpc/validation" in caplog.text
    for name in ("eval_results.json", "all_results.json"):
        results = json.loads((out / name).read_text())
        assert results["eval_glue_score_tasks"] == "sst2" and results["eval_not_evaluated"] == "mrpc/validation"
        assert not [k for k in results if k.startswith("eval_mrpc")]
        assert results["eval_glue_score"] == pytest.approx(results["eval_sst2_accuracy"])


def test_eval_available_only_with_no_evaluation_data_at_all_is_refused(tmp_path, glue_dir, tiny_checkpoint, capsys):
    folder = tmp_path / "glue"
    for name in ("SST-2/train.tsv", "MRPC/train.tsv"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(glue_dir / name, folder / name)
    code = main(["train", *train_flags(tiny_checkpoint, folder), "--do_train", "--do_eval", "--eval_available_only",
                 "--output_dir", str(tmp_path / "out")])
    assert code == 2
    error = error_of(capsys)
    assert "--do_eval: none of the tasks has evaluation data (task sst2: " in error
    assert str(folder / "MRPC" / "dev.tsv") in error and "drop --do_eval" in error
