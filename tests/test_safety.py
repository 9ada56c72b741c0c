"""Bad input is caught before training, and loading never runs code from a file.

* Through `hf-mtl train`: labels outside a task's set, empty texts, a missing field, wrong column
  names, an empty split, a non-finite regression target, duplicated task names, and a saved hf_mtl
  model whose tasks or heads do not match the data: exit status 2, the file, line (or row) and value
  in the message, and nothing written to the output folder.
* Loading: weights come from safetensors only (a pickled `pytorch_model.bin` is refused, never
  unpickled), an `auto_map` pointing at code in the checkpoint is never imported, a bad config.json
  gives a clear error, a head whose saved shape differs from its config is an error; resuming
  unpickles nothing but what the Trainer loads with `weights_only=True`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import datasets
import pytest
import torch

from hf_mtl.cli import main
from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel
from hf_mtl.tasks import GLUE_TASKS, TaskSpec

from conftest import tiny_model
from resume_worker import load_tokenizer, make_datasets, make_trainer, one_thread, synthetic_rows, tasks

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def write_glue(root: Path, sst2: str | None = None, stsb: str | None = None, rows: int = 24) -> Path:
    """SST-2 and STS-B train.tsv files: synthetic valid rows, or the given file contents."""
    if sst2 is None:
        data = synthetic_rows(GLUE_TASKS["sst2"], rows, 1)
        sst2 = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(data["sentence"], data["label"]))
    if stsb is None:
        data = synthetic_rows(GLUE_TASKS["stsb"], rows, 2)
        stsb = "index\tsentence1\tsentence2\tscore\n" + "".join(
            f"{i}\t{a}\t{b}\t{y}\n" for i, (a, b, y) in enumerate(zip(data["sentence1"], data["sentence2"], data["label"])))
    for folder, text in (("SST-2", sst2), ("STS-B", stsb)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "train.tsv").write_text(text)
    return root


def train(tmp_path: Path, model: str, glue: Path, *extra: str, tasks_flag: str = "sst2,stsb") -> int:
    return main(["train", "--model_name_or_path", model, "--tasks", tasks_flag, "--glue_dir", str(glue),
                 "--do_train", "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_seq_length", "32",
                 "--output_dir", str(tmp_path / "out"), "--report_to", "none", "--disable_tqdm", "true",
                 "--use_cpu", "true", *extra])


def _header_sst2(*rows: str) -> str:
    return "sentence\tlabel\n" + "".join(f"{r}\n" for r in rows)


BAD_DATA = {
    "label outside the task's set": (
        dict(sst2=_header_sst2("a good film\t1", "a bad film\t0", "so so\t2")),
        r"SST-2/train.tsv, line 4: label '2' is not a valid classification label .*valid values are the ids 0..1"),
    "label that is no number": (
        dict(sst2=_header_sst2("a good film\t1", "a bad film\tpositive!")),
        r"SST-2/train.tsv, line 3: label 'positive!' is not a valid classification label"),
    "empty text": (
        dict(sst2=_header_sst2("a good film\t1", "   \t0")),
        r"SST-2/train.tsv, line 3: text column 'sentence' is empty"),
    "missing field": (
        dict(sst2=_header_sst2("a good film\t1", "no label at all")),
        r"SST-2/train.tsv, line 3 has 1 tab-separated fields, expected 2"),
    "wrong column names": (
        dict(sst2="text\tlabel\na good film\t1\n"),
        r"SST-2/train.tsv has no column 'sentence'; its header has columns \['text', 'label'\]"),
    "empty split": (
        dict(sst2="sentence\tlabel\n"),
        r"task 'sst2', .*SST-2/train.tsv has no rows"),
    "non-finite regression target": (
        dict(stsb="index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.2\n1\tc\td\tnan\n"),
        r"STS-B/train.tsv, line 3: label 'nan' is not a valid regression label .*numbers from 0 to 5"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused_through_the_cli_before_training(case, tmp_path, tiny_checkpoint, capsys):
    files, message = BAD_DATA[case]
    code = train(tmp_path, tiny_checkpoint, write_glue(tmp_path / "glue", **files))
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("hf-mtl: error: ")]
    assert len(errors) == 1 and errors[0].startswith("hf-mtl: error: task "), err
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_duplicated_task_names_are_refused(tmp_path, tiny_checkpoint, capsys):
    code = train(tmp_path, tiny_checkpoint, write_glue(tmp_path / "glue"), tasks_flag="sst2,SST-2")
    assert code == 2 and "sst2 given more than once in ['sst2', 'sst2']" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tokenizer) -> str:
    """A saved hf_mtl model (tasks sst2 and stsb) with its tokenizer."""
    path = tmp_path_factory.mktemp("saved-mtl")
    model = tiny_model([GLUE_TASKS["sst2"], GLUE_TASKS["stsb"]])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_a_saved_model_continues_on_its_own_tasks(tmp_path, saved_model, capsys):
    assert train(tmp_path, saved_model, write_glue(tmp_path / "glue")) == 0, capsys.readouterr().err[-2000:]
    reloaded = MultiTaskModel.from_pretrained(tmp_path / "out")
    assert [t.name for t in reloaded.config.task_specs] == ["sst2", "stsb"]


def test_a_saved_model_with_other_tasks_is_refused(tmp_path, saved_model, capsys):
    (tmp_path / "glue" / "MRPC").mkdir(parents=True)
    code = train(tmp_path, saved_model, write_glue(tmp_path / "glue"), tasks_flag="sst2,mrpc")
    err = capsys.readouterr().err
    assert code == 2
    assert ("is a saved hf_mtl model with tasks sst2 (classification, 2 labels), stsb (regression, 1 label), "
            "but --tasks is sst2,mrpc. Pass --tasks sst2,stsb") in err


def test_a_saved_head_with_another_number_of_labels_is_refused(tmp_path, tokenizer, capsys):
    path = tmp_path / "three-way-sst2"
    custom = TaskSpec("sst2", "classification", 3, ("sentence",), label_names=("neg", "neutral", "pos"))
    tiny_model([custom, GLUE_TASKS["stsb"]]).save_pretrained(path)
    tokenizer.save_pretrained(path)
    code = train(tmp_path, str(path), write_glue(tmp_path / "glue"))
    err = capsys.readouterr().err
    assert code == 2
    assert ("task 'sst2' of the saved model is classification with 3 label(s) ['neg', 'neutral', 'pos'], but the "
            "data has classification with 2 label(s) ['negative', 'positive']") in err
    assert not (tmp_path / "out").exists()


def test_labels_of_an_unprepared_dataset_are_checked_by_the_trainer(tmp_path, tokenizer):
    """A user's own tokenised split skips prepare_dataset: its labels are still checked before training."""
    train_sets = make_datasets(tokenizer, rows=8)
    labels = [float(x) for x in train_sets["stsb"]["labels"]]
    labels[5] = math.nan
    train_sets["stsb"] = train_sets["stsb"].remove_columns("labels").add_column(
        "labels", labels, feature=datasets.Value("float32"))
    with pytest.raises(ValueError, match=r"task 'stsb': row 5 has label nan, not a valid regression label"):
        make_trainer(tmp_path, train_sets, tokenizer, "equal")


# Loading runs no code ----------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates the file `marker`: what a malicious pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_refused_not_unpickled(tmp_path, saved_model, capsys):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(Path(saved_model) / "config.json", folder / "config.json")
    torch.save({"heads.sst2.classifier.bias": _Payload(marker)}, folder / "pytorch_model.bin")
    from transformers import AutoModel

    for load in (MultiTaskModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(ValueError, match=r"only pickled weights, e.g. pytorch_model.bin\). hf_mtl loads weights "
                                             r"from safetensors files only"):
            load(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(saved_model) / name, folder / name)
    code = train(tmp_path, str(folder), write_glue(tmp_path / "glue"))
    assert code == 2 and "safetensors files only" in capsys.readouterr().err
    assert not marker.exists()


def test_an_encoder_with_only_pickled_weights_is_refused(tmp_path, tiny_checkpoint):
    from transformers import BertModel

    folder = tmp_path / "bert-bin"
    shutil.copytree(tiny_checkpoint, folder)
    model = BertModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors files only"):
        MultiTaskModel.from_encoder(str(folder), tasks())
    # The caller may opt out explicitly for a file they trust (transformers then loads with weights_only=True).
    assert MultiTaskModel.from_encoder(str(folder), tasks(), use_safetensors=False).task_names == ["sst2", "stsb", "mrpc"]


def test_code_named_by_a_checkpoint_config_is_never_imported(tmp_path, saved_model):
    from transformers import AutoConfig, AutoModel

    folder = tmp_path / "remote"
    shutil.copytree(saved_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    assert type(MultiTaskModel.from_pretrained(folder)) is MultiTaskModel
    assert type(AutoModel.from_pretrained(folder)) is MultiTaskModel
    assert type(AutoConfig.from_pretrained(folder)) is MultiTaskConfig
    assert not marker.exists()


BAD_CONFIGS = {
    "one class": (lambda t: t[0].update(num_labels=1, label_names=None),
                  r"tasks\[0\] is not a valid task: TaskSpec 'sst2': a classification task needs num_labels >= 2"),
    "unknown kind": (lambda t: t[1].update(kind="ranking"), r"tasks\[1\] is not a valid task: .*kind='ranking'"),
    "missing fields": (lambda t: t[1].pop("kind"), r"tasks\[1\] .* lacks kind; each task needs name, kind"),
    "labels as text": (lambda t: t[0].update(num_labels="2"), r"tasks\[0\] \('sst2'\): num_labels='2' must be a whole"),
    "not a dict": (lambda t: t.append("mrpc"), r"tasks\[2\] is 'mrpc'; each task is a dict"),
    "bad name": (lambda t: t[0].update(name="sst 2"), r"TaskSpec name='sst 2' is not a valid task name"),
    "duplicated": (lambda t: t.append(dict(t[0])), r"task names must be unique, got \['sst2', 'stsb', 'sst2'\]"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_json_is_a_clear_error(case, tmp_path, saved_model, capsys):
    edit, message = BAD_CONFIGS[case]
    folder = tmp_path / "bad"
    shutil.copytree(saved_model, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config["tasks"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        MultiTaskModel.from_pretrained(folder)
    assert train(tmp_path, str(folder), write_glue(tmp_path / "glue")) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-mtl: error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), errors


def test_bad_classifier_dropout_in_config(tmp_path, saved_model):
    folder = tmp_path / "bad"
    shutil.copytree(saved_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["classifier_dropout"] = 1.5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"classifier_dropout=1.5 must be in \[0, 1\)"):
        MultiTaskModel.from_pretrained(folder)


def test_a_head_whose_weights_do_not_fit_its_config_is_an_error(tmp_path, saved_model):
    folder = tmp_path / "mismatch"
    shutil.copytree(saved_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["tasks"][0].update(num_labels=3, label_names=None)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        MultiTaskModel.from_pretrained(folder)


def test_resuming_unpickles_nothing_that_runs_code(tmp_path, tokenizer):
    """The weighting state is JSON/safetensors; the Trainer's own optimizer.pt is loaded with weights_only=True,
    so a tampered one is refused before any of its code runs."""
    train_sets = make_datasets(tokenizer, rows=16)
    make_trainer(tmp_path, train_sets, tokenizer, "uncertainty" if "uncertainty" in _registered() else "geometric",
                 max_steps=2, save_steps=2).train()
    marker = tmp_path / "code-ran"
    torch.save({"state": {}, "param_groups": [], "evil": _Payload(marker)}, tmp_path / "checkpoint-2" / "optimizer.pt")
    resumed = make_trainer(tmp_path, train_sets, tokenizer, "uncertainty" if "uncertainty" in _registered() else "geometric",
                           max_steps=3)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        resumed.train(resume_from_checkpoint=True)
    assert not marker.exists()


def _registered() -> list[str]:
    from hf_mtl.weighting import WEIGHTINGS

    return list(WEIGHTINGS)


def test_nothing_in_hf_mtl_asks_for_remote_code():
    """No call in hf_mtl passes `trust_remote_code` (other than False): it never runs code from a checkpoint or a Hub
    repository. (A custom-code export's model card shows its users `trust_remote_code=True` as text.)"""
    import ast

    import hf_mtl

    root = Path(hf_mtl.__file__).parent
    offenders = [
        f"{path.relative_to(root)}:{node.lineno}"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "trust_remote_code" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False)
    ]
    assert offenders == []
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
