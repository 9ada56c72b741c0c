"""Task files (`hf_mtl.task_file`): YAML and JSON lists of GLUE names, GLUE entries with overrides and your own
tasks of every kind; every mistake in an entry refused with its position, key and fix; and the acceptance of
issue #12: task files written by hand for csv, JSON Lines and parquet sources and a multiple-choice task train
and evaluate with `hf-mtl train`, beside GLUE, on a tiny model saved to disk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from hf_mtl.cli import main
from hf_mtl.kinds import KINDS
from hf_mtl.task_file import (
    ENTRY_KEYS,
    parse_task_list,
    read_task_file,
    task_from_entry,
)
from hf_mtl.tasks import GLUE_TASKS

YAML_TASKS = """\
# GLUE by name, GLUE with overrides, and one task of every kind
- sst2
- glue: mrpc
  max_train_samples: 100
  max_eval_samples: 20
  max_seq_length: 64
  pooling: mean
  metrics: [f1]
  task_weight: 2
- name: reviews
  kind: classification
  train_file: data/reviews.csv
  validation_file: data/reviews_dev.csv
  text_column: review
  label_column: stars
  label_names: [bad, good]
- name: similarity
  kind: regression
  train_file: data/pairs.tsv
  text_columns: [left, right]
  label_column: score
  label_range: [0, 5]
- name: topics
  kind: multi_label
  train_file: data/topics.parquet
  label_column: labels
  metrics: [f1_micro]
- name: ner
  kind: token_classification
  train_file: data/ner.jsonl
  validation_file: data/ner_dev.jsonl
  tokens_column: words
  tags_column: ner_tags
  max_seq_length: 96
- name: swag
  kind: multiple_choice
  dataset: some/swag
  dataset_config: regular
  validation_split: val
  context_column: startphrase
  choice_columns: [ending0, ending1, ending2, ending3]
  label_column: answer
- name: saved
  kind: classification
  load_from_disk: data/saved
  text_columns: [premise, hypothesis]
"""


def check_specs(specs) -> None:
    """What the file above declares, field by field."""
    assert [s.name for s in specs] == ["sst2", "mrpc", "reviews", "similarity", "topics", "ner", "swag", "saved"]
    sst2, mrpc, reviews, similarity, topics, ner, swag, saved = specs
    assert sst2 == GLUE_TASKS["sst2"] and sst2.source is None
    assert (mrpc.max_train_samples, mrpc.max_eval_samples, mrpc.max_seq_length, mrpc.pooling, mrpc.metrics,
            mrpc.weight) == (100, 20, 64, "mean", ("f1",), 2.0)
    assert mrpc.label_names == GLUE_TASKS["mrpc"].label_names and mrpc.source is None
    assert (reviews.kind, reviews.text_columns, reviews.label_column, reviews.label_names, reviews.num_labels) == (
        "classification", ("review",), "stars", ("bad", "good"), 2)
    assert reviews.source == {"type": "files", "train_file": "data/reviews.csv",
                              "validation_file": "data/reviews_dev.csv"}
    assert (similarity.kind, similarity.text_columns, similarity.label_range, similarity.num_labels) == (
        "regression", ("left", "right"), (0.0, 5.0), 1)
    assert (topics.kind, topics.num_labels, topics.metrics) == ("multi_label", None, ("f1_micro",))
    assert topics.source == {"type": "files", "train_file": "data/topics.parquet"}
    assert (ner.kind, ner.text_columns, ner.label_column, ner.max_seq_length, ner.metrics) == (
        "token_classification", ("words",), "ner_tags", 96, ("accuracy", "seqeval"))
    assert (swag.kind, swag.text_columns, swag.label_column, swag.num_labels) == (
        "multiple_choice", ("startphrase", "ending0", "ending1", "ending2", "ending3"), "answer", None)
    assert swag.source == {"type": "hub", "dataset": "some/swag", "dataset_config": "regular", "validation_split": "val"}
    assert (saved.text_columns, saved.label_column, saved.source) == (
        ("premise", "hypothesis"), "label", {"type": "disk", "load_from_disk": "data/saved"})
    assert {s.kind for s in specs} == set(KINDS)


def test_a_yaml_task_file(tmp_path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(YAML_TASKS)
    check_specs(read_task_file(path))


def test_the_same_tasks_as_json_and_as_a_tasks_mapping(tmp_path) -> None:
    import yaml

    entries = yaml.safe_load(YAML_TASKS)
    (tmp_path / "tasks.json").write_text(json.dumps(entries, indent=2))
    check_specs(read_task_file(tmp_path / "tasks.json"))
    (tmp_path / "mapping.yml").write_text(yaml.safe_dump({"tasks": entries}))
    check_specs(read_task_file(tmp_path / "mapping.yml"))
    check_specs(parse_task_list(json.dumps(entries)))  # --tasks '[...]'


def test_column_defaults_of_each_kind() -> None:
    def spec(kind: str):
        return task_from_entry({"name": "t", "kind": kind, "train_file": "t.jsonl"})

    assert (spec("classification").text_columns, spec("classification").label_column) == (("text",), "label")
    assert (spec("token_classification").text_columns, spec("token_classification").label_column) == (("tokens",), "tags")
    assert (spec("multiple_choice").text_columns, spec("multiple_choice").label_column) == (("context", "choices"), "label")
    assert spec("regression").num_labels == 1 and spec("multi_label").num_labels is None


def test_comma_separated_names_still_work() -> None:
    assert [s.name for s in parse_task_list("sst2, MRPC,sts-b")] == ["sst2", "mrpc", "stsb"]


#: An entry (as the YAML would give it) and the parts its error names.
BAD_ENTRIES = {
    "unknown key": ({"name": "r", "kind": "classification", "train_file": "r.csv", "lable_column": "y"},
                    ["tasks[0] ('r')", "unknown key 'lable_column' (did you mean label_column?)", "A task entry takes"]),
    "two sources": ({"name": "r", "kind": "classification", "train_file": "r.csv", "dataset": "imdb"},
                    ["it has ['train_file', 'dataset'], which name 2 sources", "give exactly one"]),
    "three sources": ({"name": "r", "kind": "classification", "train_file": "r.csv", "dataset": "imdb",
                       "load_from_disk": "x"}, ["which name 3 sources"]),
    "no source": ({"name": "r", "kind": "classification"}, ["it has no source", "train_file", "load_from_disk: FOLDER"]),
    "another source's key": ({"name": "r", "kind": "classification", "train_file": "r.csv", "dataset_config": "x"},
                             ["['dataset_config'] do not apply to a files source (keys: train_file"]),
    "token key on classification": ({"name": "r", "kind": "classification", "train_file": "r.csv",
                                     "tags_column": "y"},
                                    ["['tags_column'] do not apply to a classification task",
                                     "its column keys are label_column, text_column, text_columns"]),
    "label_column on tokens": ({"name": "n", "kind": "token_classification", "train_file": "n.jsonl",
                                "label_column": "tags"},
                               ["['label_column'] do not apply to a token_classification task",
                                "its column keys are tags_column, tokens_column"]),
    "text_columns on choices": ({"name": "m", "kind": "multiple_choice", "train_file": "m.jsonl",
                                 "text_columns": ["a", "b"]},
                                ["['text_columns'] do not apply to a multiple_choice task",
                                 "choice_columns, choices_column, context_column, label_column"]),
    "both choice keys": ({"name": "m", "kind": "multiple_choice", "train_file": "m.jsonl", "choices_column": "c",
                          "choice_columns": ["a", "b"]}, ["give choices_column (one list column) or choice_columns"]),
    "one choice column": ({"name": "m", "kind": "multiple_choice", "train_file": "m.jsonl", "choice_columns": ["a"]},
                          ["choice_columns=['a'] must list at least 2 column names"]),
    "choices vs num_labels": ({"name": "m", "kind": "multiple_choice", "train_file": "m.jsonl",
                               "choice_columns": ["a", "b", "c"], "num_labels": 4},
                              ["3 choice columns but num_labels=4"]),
    "three text columns": ({"name": "r", "kind": "classification", "train_file": "r.csv",
                            "text_columns": ["a", "b", "c"]}, ["must list one column (single text) or two"]),
    "kind typo": ({"name": "r", "kind": "clasification", "train_file": "r.csv"},
                  ["kind='clasification': give one of classification, regression, multi_label"]),
    "kind as a list": ({"name": "r", "kind": ["classification"], "train_file": "r.csv"},
                       ["kind=['classification']: give one of"]),
    "no name": ({"kind": "classification", "train_file": "r.csv"}, ["tasks[0]: a task entry needs name:"]),
    "label_names as text": ({"name": "r", "kind": "classification", "train_file": "r.csv", "label_names": "bad good"},
                            ["label_names='bad good' must be a list of label names"]),
    "label_names twice": ({"name": "r", "kind": "classification", "train_file": "r.csv", "label_names": ["a", "a"]},
                          ["label_names ['a', 'a'] name a label twice"]),
    "label_range on classes": ({"name": "r", "kind": "classification", "train_file": "r.csv", "label_range": [0, 1]},
                               ["label_range=(0, 1) is for a regression task's targets"]),
    "format unknown": ({"name": "r", "kind": "classification", "train_file": "r.csv", "format": "xlsx"},
                       ["format='xlsx' is not one of csv, tsv, json, jsonl, parquet"]),
    "extension unknown": ({"name": "r", "kind": "classification", "train_file": "r.xlsx"},
                          ["train_file r.xlsx: cannot tell its format from the extension '.xlsx'", "set format:"]),
    "bad pooling": ({"name": "r", "kind": "classification", "train_file": "r.csv", "pooling": "max"},
                    ["pooling='max' is not one of pooler, cls, mean"]),
    "bad weight": ({"name": "r", "kind": "classification", "train_file": "r.csv", "task_weight": -1},
                   ["task_weight=-1 must be a number > 0"]),
    "bad cap": ({"name": "r", "kind": "classification", "train_file": "r.csv", "max_train_samples": 0},
                ["max_train_samples=0 must be a whole number >= 1"]),
    "GLUE entry with own keys": ({"glue": "mrpc", "kind": "regression", "train_file": "x.csv"},
                                 ["tasks[0] ('mrpc'): a GLUE entry takes glue: NAME and the overrides",
                                  "['kind', 'train_file'] describe your own task"]),
    "unknown GLUE task": ({"glue": "imdb"}, ["unknown task 'imdb'. Valid GLUE tasks"]),
    "not a mapping": (["sst2"], ["tasks[0] is ['sst2']; give a GLUE name, {glue: NAME} or a task entry"]),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_a_bad_entry_is_refused_with_its_position_key_and_fix(case) -> None:
    entry, parts = BAD_ENTRIES[case]
    with pytest.raises(ValueError) as error:
        parse_task_list([entry])
    for part in parts:
        assert part in str(error.value), (part, str(error.value))


def test_the_entry_keys_are_listed_once() -> None:
    assert len(ENTRY_KEYS) == len(set(ENTRY_KEYS))


def test_errors_in_a_file_name_the_file_and_the_entry(tmp_path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text("- sst2\n- name: r\n  kind: classification\n  train_file: r.csv\n  colour: red\n")
    with pytest.raises(ValueError, match=rf"task file {path}: tasks\[1\] \('r'\): unknown key 'colour'"):
        read_task_file(path)


@pytest.mark.parametrize(("text", "message"), [
    ("- sst2\n- glue: sst2\n", r"sst2 given more than once"),
    ("- name: r\n  kind: classification\n  train_file: a.csv\n  train_file: b.csv\n",
     r"key 'train_file' is given twice, on line 3 and line 4"),
    ("- name: r\n  kind: [classification\n", r", line 3, column 1: not valid YAML"),
    ("", r"task file .* is empty"),
    ("tasks: []\n", r"expected a non-empty list of tasks"),
    ("task: [sst2]\n", r"expected a list of tasks, or a mapping with just a `tasks:` list; got the keys \['task'\]"),
])
def test_a_malformed_task_file_is_refused_with_the_reason(text, message, tmp_path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_task_file(path)


# ---- acceptance: hand-written task files train and evaluate ----------------------------------------------

def _rows(kind: str, count: int) -> list[dict]:
    rows = []
    for n in range(count):
        if kind == "classification":
            rows.append({"review": f"the film was {'wonderful' if n % 2 else 'dreadful'} number {n}",
                         "stars": "good" if n % 2 else "bad"})
        elif kind == "token_classification":
            words = ["Amrozi", "met", "Tim", "Cook", "in", "Cupertino"][: 2 + n % 5]
            rows.append({"id": f"row-{n}", "tokens": words,
                         "ner_tags": ["B-PER", "O", "B-PER", "I-PER", "O", "B-LOC"][: len(words)]})
        elif kind == "multi_label":
            rows.append({"text": f"news item {n}", "labels": [["sport"], ["sport", "money"], [], ["money"]][n % 4]})
        elif kind == "multiple_choice":
            rows.append({"context": f"Question {n}: where is Cupertino?", "choices": ["California", "the sea", "Mars"],
                         "label": (0, 1, 2, 0)[n % 4]})
        elif kind == "choice_columns":
            rows.append({"startphrase": f"He opened door {n} and", "ending0": "walked in", "ending1": "ate it",
                         "answer": n % 2})
        elif kind == "regression":
            rows.append({"left": f"sentence {n}", "right": f"another {n}", "score": n % 6 * 1.0})
    return rows


def _write(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return str(path)


def _train(*args: str) -> int:
    return main(["train", *args, "--max_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4",
                 "--max_eval_samples", "8", "--do_train", "--do_eval", "--report_to", "none", "--disable_tqdm", "true"])


def test_a_hand_written_task_file_with_csv_json_lines_parquet_and_multiple_choice_trains_and_evaluates(
        tmp_path, tiny_checkpoint, glue_dir) -> None:
    data = tmp_path / "data"
    data.mkdir()
    files = {kind: (_write(data / f"{kind}.{ext}", _rows(kind, 16)), _write(data / f"{kind}_dev.{ext}", _rows(kind, 6)))
             for kind, ext in (("classification", "csv"), ("token_classification", "jsonl"),
                               ("multi_label", "parquet"), ("multiple_choice", "jsonl"))}
    (tmp_path / "tasks.yaml").write_text(f"""\
- glue: sst2
  max_train_samples: 16
- name: reviews
  kind: classification
  train_file: {files['classification'][0]}
  validation_file: {files['classification'][1]}
  text_column: review
  label_column: stars
- name: ner
  kind: token_classification
  train_file: {files['token_classification'][0]}
  validation_file: {files['token_classification'][1]}
  tags_column: ner_tags
- name: topics
  kind: multi_label
  train_file: {files['multi_label'][0]}
  validation_file: {files['multi_label'][1]}
  label_column: labels
  pooling: mean
- name: quiz
  kind: multiple_choice
  train_file: {files['multiple_choice'][0]}
  validation_file: {files['multiple_choice'][1]}
""")
    out = tmp_path / "out"
    assert _train("--model_name_or_path", tiny_checkpoint, "--task_config", str(tmp_path / "tasks.yaml"),
                  "--glue_dir", str(glue_dir), "--weighting", "prior", "--output_dir", str(out)) == 0

    results = json.loads((out / "eval_results.json").read_text())
    for key in ("eval_sst2_accuracy", "eval_reviews_accuracy", "eval_ner_accuracy", "eval_ner_precision",
                "eval_ner_recall", "eval_ner_f1", "eval_topics_f1_micro", "eval_topics_f1_macro",
                "eval_topics_exact_match", "eval_quiz_accuracy", "eval_score"):
        assert math.isfinite(results[key]), key
    assert "eval_glue_score" not in results

    config = json.loads((out / "config.json").read_text())
    tasks = {t["name"]: t for t in config["tasks"]}
    assert tasks["reviews"]["label_names"] == ["bad", "good"]
    assert tasks["ner"]["label_names"] == ["B-LOC", "B-PER", "I-PER", "O"] and tasks["ner"]["kind"] == "token_classification"
    assert tasks["topics"]["label_names"] == ["money", "sport"] and tasks["topics"]["pooling"] == "mean"
    assert tasks["quiz"]["num_labels"] == 3
    assert tasks["reviews"]["source"] == {"type": "files", "train_file": files["classification"][0],
                                          "validation_file": files["classification"][1]}
    assert "source" not in tasks["sst2"]
    logged = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [h for h in logged if "loss_quiz" in h]
    assert losses and all(math.isfinite(h[f"loss_{name}"]) for h in losses for name in tasks)


def test_a_train_config_with_an_inline_task_list(tmp_path, tiny_checkpoint) -> None:
    """`hf-mtl train run.yaml` whose `tasks:` lists entries: a tsv regression and a multiple-choice task with one
    column per choice, in csv."""
    pairs = _write(tmp_path / "pairs.tsv", _rows("regression", 16))
    swag = _write(tmp_path / "swag.csv", _rows("choice_columns", 16))
    (tmp_path / "run.yaml").write_text(f"""\
model_name_or_path: {tiny_checkpoint}
tasks:
  - name: similarity
    kind: regression
    train_file: {pairs}
    validation_file: {pairs}
    text_columns: [left, right]
    label_column: score
    label_range: [0, 5]
  - name: swag
    kind: multiple_choice
    train_file: {swag}
    validation_file: {swag}
    context_column: startphrase
    choice_columns: [ending0, ending1]
    label_column: answer
weighting: init
output_dir: {tmp_path / 'out'}
""")
    assert _train(str(tmp_path / "run.yaml")) == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    for key in ("eval_similarity_pearson", "eval_similarity_spearmanr", "eval_swag_accuracy", "eval_score"):
        assert math.isfinite(results[key]), key
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert [t["text_columns"] for t in config["tasks"]] == [["left", "right"], ["startphrase", "ending0", "ending1"]]
    assert config["weighting"]["name"] == "init"


def test_disk_and_local_folder_sources_train_and_evaluate(tmp_path, tiny_checkpoint) -> None:
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(_rows("multi_label", 16)),
                          "test": datasets.Dataset.from_list(_rows("multi_label", 6))}).save_to_disk(tmp_path / "saved")
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder / "train.jsonl", _rows("token_classification", 16))
    _write(folder / "validation.jsonl", _rows("token_classification", 6))
    (tmp_path / "tasks.json").write_text(json.dumps([
        {"name": "topics", "kind": "multi_label", "load_from_disk": str(tmp_path / "saved"), "validation_split": "test",
         "label_column": "labels"},
        {"name": "ner", "kind": "token_classification", "dataset": str(folder), "tags_column": "ner_tags"},
    ]))
    out = tmp_path / "out"
    assert _train("--model_name_or_path", tiny_checkpoint, "--task_config", str(tmp_path / "tasks.json"),
                  "--weighting", "equal", "--output_dir", str(out)) == 0
    results = json.loads((out / "eval_results.json").read_text())
    for key in ("eval_topics_f1_micro", "eval_ner_accuracy", "eval_ner_f1"):
        assert math.isfinite(results[key]), key


@pytest.mark.parametrize("rows, message", [
    ([{"tokens": ["Tim", "Cook"], "ner_tags": ["B-PER", "I-PER"]}, {"tokens": ["in", "Paris"], "ner_tags": ["O"]}],
     "ner.jsonl, line 2: 2 words in 'tokens' but 1 tags in 'ner_tags'"),
    ([{"tokens": ["Tim", "Cook"], "ner_tags": ["B-PER", "I-PER"]}, {"tokens": [], "ner_tags": []}],
     "ner.jsonl, line 2: tokens column 'tokens' is empty (no word). Fix or remove the row."),
])
def test_bad_data_is_refused_before_training(rows, message, tmp_path, tiny_checkpoint, capsys) -> None:
    path = _write(tmp_path / "ner.jsonl", rows)
    (tmp_path / "tasks.yaml").write_text(f"- name: ner\n  kind: token_classification\n  train_file: {path}\n"
                                         "  tags_column: ner_tags\n")
    out = tmp_path / "out"
    code = _train("--model_name_or_path", tiny_checkpoint, "--task_config", str(tmp_path / "tasks.yaml"),
                  "--output_dir", str(out))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))


def test_a_bad_task_file_is_refused_before_any_data_or_model_is_read(tmp_path, capsys) -> None:
    (tmp_path / "tasks.yaml").write_text("- name: r\n  kind: classification\n  train_file: r.csv\n  dataset: imdb\n")
    code = _train("--model_name_or_path", str(tmp_path / "no-model"), "--task_config", str(tmp_path / "tasks.yaml"),
                  "--output_dir", str(tmp_path / "out"))
    assert code == 2
    err = capsys.readouterr().err
    assert f"task file {tmp_path / 'tasks.yaml'}: tasks[0] ('r'): it has ['train_file', 'dataset'], which name 2 sources" in err


def test_task_weight_entries_become_task_weights_for_static(tmp_path) -> None:
    """`task_weight` in a task entry is that task's --task_weights entry (1 for tasks without one), in time for
    `--weighting static` to check its weights when the flags are parsed; given with --task_weights too, refused."""
    import json

    from hf_mtl.arguments import parse_train_args

    config = tmp_path / "run.yaml"
    config.write_text(
        "tasks:\n"
        "  - glue: sst2\n"
        "    task_weight: 2.5\n"
        "  - name: mine\n"
        "    kind: classification\n"
        "    train_file: train.csv\n"
        "weighting: static\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    _, _, training_args = parse_train_args([str(config)])
    assert json.loads(training_args.task_weights) == {"sst2": 2.5, "mine": 1.0}
    with pytest.raises(ValueError, match=r"--task_weights and the task_weight entries .* both set task weights"):
        parse_train_args([str(config), "--task_weights", "sst2=1,mine=1"])
