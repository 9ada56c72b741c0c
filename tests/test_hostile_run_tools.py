"""Careless and hostile inputs to the commands on a trained run (`hf-mtl export`, `predict`, `evaluate`,
`push`): nothing is overwritten without `--overwrite`, a run's own model never, and a bad path is refused
with the flag, the path and the fix (exit status 2), never a traceback.

The run is a real saved `MultiTaskModel` (the tiny BERT of conftest, three GLUE tasks) with the real
MiniLM tokenizer: what `hf-mtl train` leaves in its output_dir, without the training.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import TASKS, tiny_model

from hf_mtl.cli import main
from hf_mtl.export import save_task_model

SENTENCES = "sentence\nit is a good film\na dull , lifeless mess\n"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("saved-run") / "run"
    tiny_model(TASKS).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def run(saved_run, tmp_path) -> Path:
    """A fresh copy of the saved run per test (some tests try to destroy it)."""
    return Path(shutil.copytree(saved_run, tmp_path / "run"))


def model_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


def error_of(argv: list[str], capsys) -> str:
    """Run `hf-mtl ARGV`, check it is refused with exit status 2, and return its one-line message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-mtl: error: ") and "Traceback" not in err, err
    return err


def model_type(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["model_type"]


# ---- case 1: export never writes over a run, nor over a non-empty folder without --overwrite --------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("where", ["run", "run/", "checkpoint"])
def test_export_into_a_folder_holding_a_multitask_model_is_refused_even_with_overwrite(run, where, overwrite, capsys):
    target = {"run": str(run), "run/": f"{run}/", "checkpoint": str(run / "checkpoint-2")}[where]
    if where == "checkpoint":  # a Trainer checkpoint of the run: it holds the multi-task model too
        (run / "checkpoint-2").mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copy(run / name, run / "checkpoint-2" / name)
    before = model_files(Path(target))
    err = error_of(["export", str(run), "--task", "mrpc", "--output", target, *overwrite], capsys)
    assert f"--output {Path(target)} holds a multi-task hf_mtl model" in err
    assert "refused even with --overwrite" in err and f"e.g. --output {run}-mrpc" in err
    assert model_files(Path(target)) == before and model_type(run) == "hf_mtl"


def test_export_into_a_non_empty_folder_needs_overwrite_and_keeps_other_files(run, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.json").write_text('{"mine": 1}\n')
    (user / "README.md").write_text("# my notes\n")
    err = error_of(["export", str(run), "--task", "mrpc", "--output", str(user)], capsys)
    assert f"--output {user} is not empty (README.md, config.json)" in err and "pass --overwrite" in err
    assert (user / "config.json").read_text() == '{"mine": 1}\n' and (user / "README.md").read_text() == "# my notes\n"

    (user / "notes.txt").write_text("keep me\n")
    assert main(["export", str(run), "--task", "mrpc", "--output", str(user), "--overwrite"]) == 0
    assert model_type(user) == "bert" and (user / "notes.txt").read_text() == "keep me\n"
    assert (user / "README.md").read_text().startswith("---")  # the export's model card


def test_export_over_a_previous_export_of_the_same_task_needs_overwrite(run, tmp_path, capsys):
    folder = tmp_path / "run-mrpc"
    assert main(["export", str(run), "--task", "mrpc", "--output", str(folder)]) == 0
    capsys.readouterr()
    before = model_files(folder)
    err = error_of(["export", str(run), "--task", "mrpc", "--output", str(folder)], capsys)
    assert f"--output {folder} is not empty (README.md, config.json, model.safetensors, tokenizer.json, " in err
    assert model_files(folder) == before
    assert main(["export", str(run), "--task", "sst2", "--output", str(folder), "--overwrite"]) == 0
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}


def test_export_to_a_file_is_refused_and_a_new_subfolder_of_the_run_is_fine(run, tmp_path, capsys):
    (tmp_path / "afile.txt").write_text("x\n")
    err = error_of(["export", str(run), "--task", "mrpc", "--output", str(tmp_path / "afile.txt")], capsys)
    assert f"--output {tmp_path / 'afile.txt'} is a file; the export is a folder" in err
    assert (tmp_path / "afile.txt").read_text() == "x\n"
    assert main(["export", str(run), "--task", "mrpc", "--output", str(run / "export-mrpc")]) == 0
    assert model_type(run) == "hf_mtl" and model_type(run / "export-mrpc") == "bert"


def test_save_task_model_has_the_same_rules(run, tokenizer, tmp_path):
    from hf_mtl.modeling import MultiTaskModel

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is not empty \(config.json\).*overwrite=True in Python"):
        save_task_model(run, "mrpc", tmp_path / "mine")
    assert (tmp_path / "mine" / "config.json").read_text() == "{}"
    assert save_task_model(run, "mrpc", tmp_path / "mine", overwrite=True) == tmp_path / "mine"
    before = model_files(run)
    model = MultiTaskModel.from_pretrained(run)
    for overwrite in (False, True):  # a model object written back into its own folder
        with pytest.raises(ValueError, match="holds a multi-task hf_mtl model"):
            save_task_model(model, "mrpc", run, tokenizer=tokenizer, overwrite=overwrite)
    assert model_files(run) == before


# ---- case 2: predict's --input and --output ----------------------------------------------------------


def test_predict_output_that_is_a_folder_or_under_a_file_is_refused(run, tmp_path, capsys):
    (tmp_path / "in.tsv").write_text(SENTENCES)
    (tmp_path / "outdir").mkdir()
    predict = ["predict", str(run), "--task", "sst2", "--input", str(tmp_path / "in.tsv"), "--output"]
    err = error_of([*predict, str(tmp_path / "outdir")], capsys)
    assert f"--output {tmp_path / 'outdir'} is a folder; pass the path of the file to write, e.g. --output " \
           f"{tmp_path / 'outdir' / 'sst2-predictions.tsv'}" in err
    (tmp_path / "afile.tsv").write_text("x\n")
    err = error_of([*predict, str(tmp_path / "afile.tsv" / "preds.tsv")], capsys)
    assert f"--output {tmp_path / 'afile.tsv' / 'preds.tsv'}: {tmp_path / 'afile.tsv'} is a file, not a folder" in err
    # missing folders are created (the choice for a parent that does not exist)
    assert main([*predict, str(tmp_path / "new" / "nested" / "preds.tsv")]) == 0
    assert (tmp_path / "new" / "nested" / "preds.tsv").read_text().splitlines()[0] == "index\tprediction"


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "symlink"])
def test_predict_output_that_is_the_input_file_is_refused(run, tmp_path, spelling, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in.tsv").write_text(SENTENCES)
    if spelling == "symlink":
        os.symlink("in.tsv", "link.tsv")
    output = {"same": "in.tsv", "dot-slash": "./sub/../in.tsv", "symlink": "link.tsv"}[spelling]
    Path("sub").mkdir()
    err = error_of(["predict", str(run), "--task", "sst2", "--input", "in.tsv", "--output", output], capsys)
    assert f"--output {Path(output)} is the --input file" in err and "e.g. --output" in err
    assert Path("in.tsv").read_text() == SENTENCES


def test_predict_input_that_is_missing_or_a_folder_names_the_flag(run, tmp_path, glue_dir, capsys):
    predict = ["predict", str(run), "--task", "sst2", "--output", str(tmp_path / "p.tsv"), "--input"]
    err = error_of([*predict, str(tmp_path / "missing.tsv")], capsys)
    assert f"--input {tmp_path / 'missing.tsv'}: no such file" in err
    err = error_of([*predict, str(glue_dir / "SST-2")], capsys)
    assert f"--input {glue_dir / 'SST-2'} is a folder (it holds dev.tsv" in err
    assert f"e.g. --input {glue_dir / 'SST-2' / 'dev.tsv'}" in err
    assert not (tmp_path / "p.tsv").exists()


def test_evaluate_output_dir_that_is_a_file_is_refused(run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x\n")
    err = error_of(["evaluate", str(run), "--output_dir", str(tmp_path / "afile")], capsys)
    assert f"--output_dir {tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, not a folder" in err


# ---- case 3: a RUN_DIR that is not there, not a folder, or holds no model -----------------------------


def commands(run: str, tmp_path: Path) -> dict[str, list[str]]:
    (tmp_path / "in.tsv").write_text(SENTENCES)
    return {
        "evaluate": ["evaluate", run],
        "predict": ["predict", run, "--task", "sst2", "--input", str(tmp_path / "in.tsv"), "--output", str(tmp_path / "p.tsv")],
        "export": ["export", run, "--task", "mrpc", "--output", str(tmp_path / "x")],
    }


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_a_missing_run_dir_says_so_and_is_not_looked_up_on_the_hub(command, tmp_path, capsys):
    missing = str(tmp_path / "no" / "such" / "run")
    err = error_of(commands(missing, tmp_path)[command], capsys)
    assert f"RUN_DIR {missing}: there is no such folder (looked for {missing}), and it is not a Hub id either" in err


@pytest.mark.parametrize("name", ["someone/mtl-model", "out/quickstrat", "quickstart"])
def test_offline_a_hub_like_run_dir_says_it_cannot_be_downloaded(name, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    for command in ("evaluate", "predict", "export"):
        err = error_of(commands(name, tmp_path)[command], capsys)
        assert f"RUN_DIR {name}: there is no such folder (looked for {tmp_path / name})" in err
        assert "with HF_HUB_OFFLINE=1 it cannot be downloaded as a Hub repository id" in err


def test_push_of_a_missing_run_dir_is_refused_before_any_upload(tmp_path, capsys):
    err = error_of(["push", str(tmp_path / "nope"), "--hub_model_id", "someone/x"], capsys)
    assert f"RUN_DIR {tmp_path / 'nope'} does not exist" in err


def test_a_run_dir_without_a_model_names_the_last_checkpoint(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for command in ("evaluate", "push"):
        err = error_of([command, str(tmp_path / "empty")], capsys)
        assert f"RUN_DIR {tmp_path / 'empty'}: the folder has no config.json, so it holds no saved model" in err
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoint-4").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(run / name, unfinished / "checkpoint-4" / name)
    (unfinished / "checkpoint-2").mkdir()  # an earlier one, and a folder a crash left without a model
    shutil.copy(run / "config.json", unfinished / "checkpoint-2" / "config.json")
    (unfinished / "checkpoint-6").mkdir()
    err = error_of(commands(str(unfinished), tmp_path)["predict"], capsys)
    assert f"its latest checkpoint holds one: {unfinished / 'checkpoint-4'}. Pass that folder" in err
    assert main(commands(str(unfinished / "checkpoint-4"), tmp_path)["predict"]) == 0


def test_a_run_dir_that_is_a_file_or_lacks_its_weights_is_refused(run, tmp_path, capsys):
    err = error_of(commands(str(run / "config.json"), tmp_path)["predict"], capsys)
    assert f"RUN_DIR {run / 'config.json'} is a file, not a folder" in err
    (run / "model.safetensors").unlink()
    err = error_of(commands(str(run), tmp_path)["export"], capsys)
    assert str(run) in err and "no model.safetensors" in err


def test_offline_a_hub_id_in_the_local_cache_still_loads(saved_run, tmp_path, monkeypatch):
    """The offline refusal must not block a Hub id that transformers can load from the local cache."""
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-mtl" / "snapshots" / ("0" * 40)
    shutil.copytree(saved_run, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    Path("in.tsv").write_text(SENTENCES)
    assert main(["predict", "someone/tiny-mtl", "--task", "sst2", "--input", "in.tsv", "--output", "p.tsv"]) == 0
    assert len(Path("p.tsv").read_text().splitlines()) == 3


def test_online_a_hub_id_is_still_handed_to_the_hub(tmp_path, monkeypatch):
    """Not offline, a Hub-like RUN_DIR that is no local folder goes on to the Hub (no request is made here); a path
    that cannot be a Hub id is refused without one."""
    from huggingface_hub import constants

    from hf_mtl.hub import run_location

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.chdir(tmp_path)
    assert run_location("someone/mtl-model") == "someone/mtl-model"
    with pytest.raises(FileNotFoundError, match="and it is not a Hub id either"):
        run_location(str(tmp_path / "no" / "such" / "run"))
