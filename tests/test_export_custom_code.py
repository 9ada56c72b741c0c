"""`hf-mtl export` of sentence-level and multiple-choice tasks trained with `cls` or `mean` pooling: a Hugging Face
custom-code model (`hf_mtl/pooled_encoder.py` copied into the folder, named in config.json's `auto_map`).

Tiny random BERTs with the real MiniLM tokenizer. The exported folders are loaded in a fresh Python that cannot
import hf_mtl (an import hook refuses it, and the child reports what it imported), with `trust_remote_code=True`:
its logits on real tokenised inputs must equal the multi-task model's (computed here and written to a safetensors
file), and `pipeline("text-classification", ...)` must give the multi-task model's scores under the label names.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_kinds_export import (
    KIND_TASKS,
    SENTENCES,
    real_inputs,
    tiny_family,
    with_pooling,
)

import hf_mtl
from hf_mtl.cli import main
from hf_mtl.export import export_task, remote_code_note, save_task_model
from hf_mtl.tasks import GLUE_TASKS

#: Every sentence-level kind (classification of one text and of a pair, regression of 1 and 3 outputs,
#: multi-label) and multiple choice.
TASKS = [KIND_TASKS[0], GLUE_TASKS["mrpc"], KIND_TASKS[1], KIND_TASKS[2], KIND_TASKS[3], KIND_TASKS[5]]
PAIR = {"text": SENTENCES[0], "text_pair": SENTENCES[1]}
CLASSES = {"answer": "PooledEncoderForMultipleChoice"}

CHILD = r"""
import importlib.abc, json, sys

class NoHfMtl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_mtl" or name.startswith("hf_mtl."):
            raise ImportError("this process loads exports without hf_mtl")

sys.meta_path.insert(0, NoHfMtl())
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification, pipeline

root, jobs = sys.argv[1], json.loads(sys.argv[2])
tensors = load_file(f"{root}/expected.safetensors")
report = {}
for name, pipeline_input in jobs.items():
    folder = f"{root}/{name}"
    auto_class = AutoModelForSequenceClassification if pipeline_input is not None else AutoModelForMultipleChoice
    model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
    prefix = f"{name}/inputs/"
    inputs = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    with torch.no_grad():
        logits = model(**inputs).logits
    entry = {"class": type(model).__name__, "shape": list(logits.shape),
             "max_difference": (logits - tensors[f"{name}/logits"]).abs().max().item()}
    if pipeline_input is not None:
        classifier = pipeline("text-classification", model=folder, trust_remote_code=True, device="cpu")
        scores = classifier(pipeline_input, top_k=None)
        entry["pipeline"] = {score["label"]: score["score"] for score in scores}
    report[name] = entry
report["hf_mtl_modules"] = sorted(m for m in sys.modules if m == "hf_mtl" or m.startswith("hf_mtl."))
print(json.dumps(report))
"""


def _expected_scores(model, spec, tokenizer, folder: Path) -> dict[str, float]:
    """What `pipeline("text-classification", top_k=None)` should give: the multi-task model's logits on the one
    input, through softmax (classification), sigmoid (multi-label) or as they are (regression), by the export's
    label names (a regression's are the task's output names)."""
    text = PAIR if len(spec.text_columns) == 2 else SENTENCES[0]
    encoded = tokenizer(text["text"], text["text_pair"], return_tensors="pt") if isinstance(text, dict) else (
        tokenizer(text, return_tensors="pt"))
    with torch.no_grad():
        logits = model(**encoded, task=spec.name).logits[0]
    scores = {"classification": logits.softmax(-1), "multi_label": logits.sigmoid()}.get(spec.kind, logits)
    id2label = json.loads((folder / "config.json").read_text())["id2label"]
    return {id2label[str(i)]: score for i, score in enumerate(scores.tolist())}


@pytest.fixture(scope="module")
def exports(tokenizer, tmp_path_factory):
    """Every task of `TASKS` exported from a `cls`- and a `mean`-pooled tiny model into ROOT/<pooling>-<task>, with
    the multi-task model's logits on real inputs and the pipeline's expected scores."""
    root = tmp_path_factory.mktemp("custom-code")
    tensors, expected_scores, models = {}, {}, {}
    for seed, pooling in enumerate(("cls", "mean")):
        model = models[pooling] = with_pooling(TASKS, pooling, seed=seed)
        with torch.no_grad():  # heads far from zero, so that scores differ between rows and labels
            for head in model.heads.values():
                head.classifier.weight.normal_(0, 1.0)
        for spec in TASKS:
            name = f"{pooling}-{spec.name}"
            save_task_model(model, spec.name, root / name, tokenizer=tokenizer)
            inputs = real_inputs(spec, tokenizer)
            assert inputs["attention_mask"].min() == 0, "rows of different lengths: the mean skips the padding"
            with torch.no_grad():
                tensors[f"{name}/logits"] = model(**inputs, task=spec.name).logits
            tensors.update({f"{name}/inputs/{key}": value.contiguous() for key, value in inputs.items()})
            if spec.kind != "multiple_choice":
                expected_scores[name] = _expected_scores(model, spec, tokenizer, root / name)
    save_file(tensors, root / "expected.safetensors")
    return root, tensors, expected_scores, models


def test_exports_load_with_trust_remote_code_in_a_python_without_hf_mtl(exports):
    root, tensors, expected_scores, _ = exports
    jobs = {f"{pooling}-{spec.name}": None if spec.kind == "multiple_choice" else (
        PAIR if len(spec.text_columns) == 2 else SENTENCES[0]) for pooling in ("cls", "mean") for spec in TASKS}
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(root / "modules"), TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), json.dumps(jobs)], check=False, cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report.pop("hf_mtl_modules") == []
    assert set(report) == set(jobs)
    for name, entry in report.items():
        task = name.split("-", 1)[1]
        assert entry["class"] == CLASSES.get(task, "PooledEncoderForSequenceClassification"), name
        assert entry["shape"] == list(tensors[f"{name}/logits"].shape), name
        assert entry["max_difference"] <= 1e-5, (name, entry)
        if name in expected_scores:
            assert entry["pipeline"].keys() == expected_scores[name].keys(), name
            for label, score in expected_scores[name].items():
                assert entry["pipeline"][label] == pytest.approx(score, abs=1e-5), (name, label)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("spec", TASKS, ids=[spec.name for spec in TASKS])
def test_the_folder_names_its_code_and_the_card_says_trust_remote_code(exports, pooling, spec):
    root = exports[0]
    folder = root / f"{pooling}-{spec.name}"
    config = json.loads((folder / "config.json").read_text())
    architecture = CLASSES.get(spec.name, "PooledEncoderForSequenceClassification")
    auto_class = "AutoModelForMultipleChoice" if spec.kind == "multiple_choice" else "AutoModelForSequenceClassification"
    assert config["auto_map"] == {"AutoConfig": "pooled_encoder.PooledEncoderConfig",
                                  auto_class: f"pooled_encoder.{architecture}"}
    assert config["architectures"] == [architecture] and config["pooling"] == pooling
    assert config["model_type"] == "hf_mtl_pooled_encoder" and config["encoder"]["model_type"] == "bert"
    problem_types = {"classification": "single_label_classification", "regression": "regression",
                     "multi_label": "multi_label_classification"}
    assert config.get("problem_type") == problem_types.get(spec.kind)
    if spec.label_names and spec.kind != "multiple_choice":
        assert config["id2label"] == {str(i): name for i, name in enumerate(spec.label_names)}
    shipped = (folder / "pooled_encoder.py").read_text()
    assert shipped == (Path(hf_mtl.__file__).parent / "pooled_encoder.py").read_text()
    card = (folder / "README.md").read_text()
    assert "trust_remote_code=True" in card and "custom_code" in card and f"`{pooling}` pooling" in card
    assert f"custom-code `{architecture}`" in card and "standard `" not in card


def test_without_trust_remote_code_loading_fails_instead_of_reading_the_pooler(exports):
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModelForSequenceClassification.from_pretrained(exports[0] / "mean-sst2")


def test_the_shipped_modeling_file_needs_only_torch_and_transformers():
    source = (Path(hf_mtl.__file__).parent / "pooled_encoder.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import would not travel with the file"
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "torch", "transformers"}, imported


def test_the_export_command_writes_a_custom_code_model_and_says_how_to_load_it(exports, tokenizer, tmp_path, capsys):
    run = tmp_path / "run"
    exports[3]["mean"].save_pretrained(run)
    tokenizer.save_pretrained(run)
    assert main(["export", str(run), "--task", "mrpc", "--output", str(tmp_path / "mrpc")]) == 0
    out = capsys.readouterr().out
    assert f"Exported task mrpc to {tmp_path / 'mrpc'}" in out
    assert f'pipeline("text-classification", model="{tmp_path / "mrpc"}", trust_remote_code=True)' in out
    assert main(["export", str(run), "--task", "answer", "--output", str(tmp_path / "answer")]) == 0
    assert f'AutoModelForMultipleChoice.from_pretrained("{tmp_path / "answer"}", trust_remote_code=True)' in (
        capsys.readouterr().out)
    assert remote_code_note(tmp_path / "mrpc") is not None and remote_code_note(tmp_path / "nowhere") is None
    assert main(["export", str(run), "--task", "mrpc", "--output", str(tmp_path / "mrpc")]) == 2  # not empty
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run), "--task", "mrpc", "--output", str(tmp_path / "mrpc"), "--overwrite"]) == 0


def test_a_pooler_export_stays_standard_and_prints_no_note(tokenizer, tmp_path, capsys):
    run = tmp_path / "run"
    with_pooling([GLUE_TASKS["sst2"]], "pooler").save_pretrained(run)
    tokenizer.save_pretrained(run)
    assert main(["export", str(run), "--task", "sst2", "--output", str(tmp_path / "sst2")]) == 0
    assert "trust_remote_code" not in capsys.readouterr().out
    config = json.loads((tmp_path / "sst2" / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == ["BertForSequenceClassification"]
    assert not (tmp_path / "sst2" / "pooled_encoder.py").exists()


@pytest.mark.parametrize(("family", "overrides"), [
    ("distilbert", {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 37}), ("roberta", {}),
])
def test_mean_pooling_exports_encoders_whose_standard_heads_do_not_match(family, overrides, tokenizer, tmp_path):
    specs = [dataclasses.replace(spec, pooling="mean") for spec in (GLUE_TASKS["sst2"], KIND_TASKS[5])]
    model = tiny_family(family, specs, **overrides)
    input_ids = torch.randint(3, 100, (3, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    for task, shape in (("sst2", (3, 10)), ("answer", (1, 3, 10))):
        exported = export_task(model, task).eval()
        inputs = {"input_ids": input_ids.reshape(shape), "attention_mask": attention_mask.reshape(shape)}
        with torch.no_grad():
            torch.testing.assert_close(exported(**inputs).logits, model(**inputs, task=task).logits, rtol=0, atol=1e-6)
        assert exported.config.encoder["model_type"] == family
