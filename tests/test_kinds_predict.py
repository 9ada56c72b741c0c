"""`hf-mtl predict`, `evaluate` and the model card for a run whose tasks come from a task file, one task of every
kind: token classification (the real silver NER data), multi-label (the real silver entity types), and a
classification, a vector regression and a multiple-choice task whose files are built here from the real silver
sentences. The run is a real `hf-mtl train` of the tiny random BERT (conftest) with the real MiniLM tokenizer.

Predictions are checked against the multi-task model run directly on the same rows; the silver data is found by
conftest's `silver_dir_or_skip` (../shared/data/silver or $SILVER_DIR); the tests are skipped when it is absent.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import silver_dir_or_skip

from hf_mtl.cli import main
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.pipeline import train

TRAINING_ONLY = ("runtime", "per_second", "preparation_time")


def silver_rows(name: str, split: str, count: int) -> list[dict]:
    with (silver_dir_or_skip() / name / f"{split}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def own_rows(split: str, count: int) -> dict[str, list[dict]]:
    """Rows of the three tasks built from real silver sentences: a classification (does the sentence name an
    entity?), a 2-dimensional regression (words / 10, entity types) and a 3-way multiple choice."""
    rows = silver_rows("entity_types", split, count + 3)
    texts = [row["text"] for row in rows]
    return {
        "mentions": [{"text": row["text"], "label": "entity" if row["labels"] else "none"} for row in rows[:count]],
        "shape": [{"text": row["text"], "target": [len(row["text"].split()) / 10, float(len(row["labels"]))]}
                  for row in rows[:count]],
        "follow": [{"context": texts[i], "choices": texts[i + 1: i + 4], "answer": i % 3} for i in range(count)],
    }


TASK_FILE = [
    {"name": "ner", "kind": "token_classification", "train_file": "SILVER/ner/train.jsonl",
     "validation_file": "SILVER/ner/dev.jsonl", "tags_column": "ner_tags", "label_names": "TAGS ner ner_tags"},
    {"name": "entity_types", "kind": "multi_label", "train_file": "SILVER/entity_types/train.jsonl",
     "validation_file": "SILVER/entity_types/dev.jsonl", "label_column": "labels",
     "label_names": "TAGS entity_types labels"},
    {"name": "mentions", "kind": "classification", "train_file": "data/mentions-train.jsonl",
     "validation_file": "data/mentions-dev.jsonl"},
    {"name": "shape", "kind": "regression", "num_labels": 2, "train_file": "data/shape-train.jsonl",
     "validation_file": "data/shape-dev.jsonl", "label_column": "target"},
    {"name": "follow", "kind": "multiple_choice", "train_file": "data/follow-train.jsonl",
     "validation_file": "data/follow-dev.jsonl", "label_column": "answer", "pooling": "mean"},
]


def label_set(name: str, column: str) -> list[str]:
    """Every label of a silver training file (its whole label set, also the rare ones)."""
    with (silver_dir_or_skip() / name / "train.jsonl").open(encoding="utf-8") as handle:
        return sorted({label for line in handle for label in json.loads(line)[column]})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with the task file (relative paths for the tasks built here) and their data: the first rows of the
    real silver files (their whole label sets given in the task file), and the three tasks built from them."""
    silver_dir_or_skip()
    folder = tmp_path_factory.mktemp("work")
    (folder / "data").mkdir()
    for split, count in (("train", 48), ("dev", 12)):
        for name, rows in own_rows(split, count).items():
            write_jsonl(folder / "data" / f"{name}-{'train' if split == 'train' else 'dev'}.jsonl", rows)
    for name in ("ner", "entity_types"):
        (folder / "silver" / name).mkdir(parents=True)
        for split, count in (("train", 200), ("dev", 24)):
            write_jsonl(folder / "silver" / name / f"{split}.jsonl", silver_rows(name, split, count))

    def resolve(value):
        if isinstance(value, str) and value.startswith("TAGS "):
            return label_set(*value.split()[1:])
        return value.replace("SILVER", str(folder / "silver")) if isinstance(value, str) else value

    entries = [{key: resolve(value) for key, value in entry.items()} for entry in TASK_FILE]
    (folder / "tasks.yaml").write_text(yaml.safe_dump({"tasks": entries}), encoding="utf-8")
    return folder


@contextlib.contextmanager
def working_directory(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def run(workdir, tiny_checkpoint) -> tuple[Path, dict]:
    """`hf-mtl train` on the task file, run from `workdir` (relative data paths): 3 steps, evaluation at the end;
    `cls` pooling for every sentence-level task but `follow`, which asks for `mean` itself."""
    with working_directory(workdir):
        results = train([
            "--model_name_or_path", tiny_checkpoint, "--task_config", "tasks.yaml", "--max_train_samples", "32",
            "--max_eval_samples", "12", "--max_seq_length", "48", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "8", "--max_steps", "3", "--learning_rate", "1e-3",
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
            "--pooling", "cls", "--do_train", "--do_eval", "--output_dir", "run",
        ])
    return workdir / "run", results


@pytest.fixture(scope="module")
def model(run) -> MultiTaskModel:
    return MultiTaskModel.from_pretrained(run[0]).eval()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_tsv_predictions(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "index\tprediction"
    return [tuple(line.split("\t")) for line in lines[1:]]


def predict(run_dir: Path, task: str, source: Path, output: Path, *flags: str) -> Path:
    assert main(["predict", str(run_dir), "--task", task, "--input", str(source), "--output", str(output), *flags]) == 0
    return output


# ---- token classification: one tag per word -----------------------------------------------------------


def expected_tags(model, tokenizer, words: list[list[str]], max_length: int) -> list[list[str | None]]:
    """The tag of each word at its first piece, from the multi-task model itself; None past `max_length` tokens."""
    names = next(t["label_names"] for t in model.config.tasks if t["name"] == "ner")
    tags = []
    for row in words:
        encoded = tokenizer(row, is_split_into_words=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            predicted = model(**encoded, task="ner").logits[0].argmax(-1).tolist()
        ids, seen = encoded.word_ids(), {}
        for position, word in enumerate(ids):
            if word is not None and word not in seen:
                seen[word] = names[predicted[position]]
        tags.append([seen.get(i) for i in range(len(row))])
    return tags


def test_predict_token_classification_writes_one_tag_per_word(run, model, tokenizer, tmp_path, caplog):
    rows = silver_rows("ner", "dev", 6)
    rows[2] = {**rows[2], "tokens": rows[2]["tokens"] * 6, "ner_tags": rows[2]["ner_tags"] * 6}  # longer than 48 tokens
    source = write_jsonl(tmp_path / "ner.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="hf_mtl.inference"):
        written = read_jsonl(predict(run[0], "ner", source, tmp_path / "preds.jsonl", "--max_seq_length", "48"))
    words = [row["tokens"] for row in rows]
    assert [row["index"] for row in written] == list(range(6))
    assert [len(row["prediction"]) for row in written] == [len(w) for w in words]
    expected = expected_tags(model, tokenizer, words, 48)
    assert [row["prediction"] for row in written] == expected
    cut = sum(tag is None for tag in written[2]["prediction"])
    assert cut > 0 and all(tag is not None for row in written[:2] + written[3:] for tag in row["prediction"])
    assert f"{cut} word(s) in 1 row(s) lie past --max_seq_length 48 tokens" in caplog.text

    # TSV: the same tags joined with spaces, `_` for a word without one; a TSV input gives words split on spaces.
    (tmp_path / "ner.tsv").write_text("index\ttokens\n" + "".join(f"s{i}\t{' '.join(w)}\n" for i, w in enumerate(words)),
                                      encoding="utf-8")
    lines = read_tsv_predictions(predict(run[0], "ner", tmp_path / "ner.tsv", tmp_path / "preds.tsv",
                                         "--max_seq_length", "48"))
    assert [index for index, _ in lines] == [f"s{i}" for i in range(6)]
    assert [tags.split(" ") for _, tags in lines] == [[tag or "_" for tag in row] for row in expected]


def test_predict_reports_a_missing_words_column_and_a_row_that_is_not_words(run, tmp_path, capsys):
    write_jsonl(tmp_path / "text.jsonl", [{"text": "Tim Cook visited London."}])
    assert main(["predict", str(run[0]), "--task", "ner", "--input", str(tmp_path / "text.jsonl"),
                 "--output", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"--input {tmp_path / 'text.jsonl'}: no column 'tokens' for task 'ner'; the file has columns ['text']" in err
    assert "as a list under 'tokens'" in err
    write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["Tim"]}, {"tokens": []}])
    assert main(["predict", str(run[0]), "--task", "ner", "--input", str(tmp_path / "bad.jsonl"),
                 "--output", str(tmp_path / "p.jsonl")]) == 2
    assert f"{tmp_path / 'bad.jsonl'}, line 2: tokens column 'tokens' is empty" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


# ---- sentence-level kinds and multiple choice -----------------------------------------------------------


def sentence_logits(model, tokenizer, task: str, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**tokenizer([text], truncation=True, max_length=128, return_tensors="pt"),
                                task=task).logits for text in texts])


def test_predict_multi_label_writes_label_sets(run, model, tokenizer, tmp_path):
    rows = silver_rows("entity_types", "dev", 8)
    source = write_jsonl(tmp_path / "types.jsonl", [{"text": row["text"]} for row in rows])
    names = next(t["label_names"] for t in model.config.tasks if t["name"] == "entity_types")
    logits = sentence_logits(model, tokenizer, "entity_types", [row["text"] for row in rows])
    expected = [[names[j] for j in torch.nonzero(row > 0).flatten().tolist()] for row in logits]
    assert [row["prediction"] for row in read_jsonl(predict(run[0], "entity_types", source, tmp_path / "p.jsonl"))] == expected
    lines = read_tsv_predictions(predict(run[0], "entity_types", source, tmp_path / "p.tsv"))
    assert [value for _, value in lines] == [",".join(labels) for labels in expected]


def test_predict_classification_from_csv_and_a_vector_regression_from_parquet(run, model, tokenizer, tmp_path):
    import datasets

    texts = [row["text"] for row in silver_rows("entity_types", "dev", 7)]
    datasets.Dataset.from_dict({"text": texts}).to_csv(str(tmp_path / "in.csv"), index=False)
    names = next(t["label_names"] for t in model.config.tasks if t["name"] == "mentions")
    expected = [names[i] for i in sentence_logits(model, tokenizer, "mentions", texts).argmax(-1).tolist()]
    lines = read_tsv_predictions(predict(run[0], "mentions", tmp_path / "in.csv", tmp_path / "mentions.tsv"))
    assert lines == [(str(i), name) for i, name in enumerate(expected)]

    datasets.Dataset.from_dict({"index": [f"r{i}" for i in range(7)], "text": texts}).to_parquet(str(tmp_path / "in.parquet"))
    vectors = sentence_logits(model, tokenizer, "shape", texts).tolist()
    written = read_jsonl(predict(run[0], "shape", tmp_path / "in.parquet", tmp_path / "shape.jsonl"))
    assert [row["index"] for row in written] == [f"r{i}" for i in range(7)]
    assert all(len(row["prediction"]) == 2 for row in written)
    assert [row["prediction"] for row in written] == [pytest.approx(vector, rel=1e-4, abs=1e-6) for vector in vectors]
    lines = read_tsv_predictions(predict(run[0], "shape", tmp_path / "in.parquet", tmp_path / "shape.tsv"))
    assert [[float(x) for x in value.split(",")] for _, value in lines] == [
        pytest.approx(vector, rel=1e-4, abs=1e-6) for vector in vectors]


def test_predict_multiple_choice_gives_the_chosen_index(run, model, tokenizer, workdir, tmp_path, capsys):
    rows = read_jsonl(workdir / "data" / "follow-dev.jsonl")[:6]
    source = write_jsonl(tmp_path / "follow.jsonl", [{"context": r["context"], "choices": r["choices"]} for r in rows])
    expected = []
    for row in rows:
        encoded = tokenizer([row["context"]] * 3, row["choices"], padding=True, return_tensors="pt")
        with torch.no_grad():
            scores = model(**{k: v.unsqueeze(0) for k, v in encoded.items()}, task="follow").logits[0]
        expected.append(scores.argmax().item())
    written = read_jsonl(predict(run[0], "follow", source, tmp_path / "follow.jsonl.out.jsonl"))
    assert [row["prediction"] for row in written] == expected
    lines = read_tsv_predictions(predict(run[0], "follow", source, tmp_path / "follow.tsv"))
    assert [int(value) for _, value in lines] == expected

    (tmp_path / "follow.tsv.in").write_text("context\tchoices\na\tb\n", encoding="utf-8")
    assert main(["predict", str(run[0]), "--task", "follow", "--input", str(tmp_path / "follow.tsv.in"),
                 "--output", str(tmp_path / "x.tsv")]) == 2
    assert "reads its choices as a list (column 'choices'), which a TSV file cannot hold" in capsys.readouterr().err
    write_jsonl(tmp_path / "two.jsonl", [{"context": "a", "choices": ["b", "c"]}])
    assert main(["predict", str(run[0]), "--task", "follow", "--input", str(tmp_path / "two.jsonl"),
                 "--output", str(tmp_path / "x.tsv")]) == 2
    assert "2 choices in 'choices', but the task has 3" in capsys.readouterr().err


# ---- evaluate -------------------------------------------------------------------------------------------


def test_evaluate_reloads_the_recorded_sources_and_gives_the_training_metrics(run, workdir, tmp_path, capsys):
    run_dir, trained = run
    config = json.loads((run_dir / "config.json").read_text())
    assert {t["name"]: t["source"]["validation_file"] for t in config["tasks"]}["mentions"] == "data/mentions-dev.jsonl"
    with working_directory(workdir):
        assert main(["evaluate", "run", "--max_eval_samples", "12", "--max_seq_length", "48",
                     "--per_device_eval_batch_size", "8", "--output_dir", str(tmp_path / "eval")]) == 0
    written = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    keys = {k for k in trained if k.startswith("eval_") and not k.endswith(TRAINING_ONLY)}
    assert "eval_score" in keys and "eval_glue_score" not in keys
    assert {"eval_ner_f1", "eval_ner_accuracy", "eval_entity_types_f1_micro", "eval_shape_pearson",
            "eval_follow_accuracy", "eval_mentions_accuracy"} <= keys
    assert {k for k in written if not k.endswith(TRAINING_ONLY)} == keys
    for key in keys:
        assert written[key] == pytest.approx(trained[key], rel=1e-6, abs=1e-7, nan_ok=True), key
    assert "eval_score" in capsys.readouterr().out

    # From another folder, the relative path recorded at training time is not found: the error says why.
    with working_directory(tmp_path):
        assert main(["evaluate", str(run_dir), "--tasks", "mentions", "--output_dir", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err
    assert "data/mentions-dev.jsonl: no such file" in err and "recorded in the run's config.json" in err
    assert "Traceback" not in err


def test_evaluate_reads_no_training_file(run, workdir, tmp_path):
    """Evaluating needs the validation file only: a run whose training files are gone still evaluates."""
    (workdir / "data" / "shape-train.jsonl").rename(workdir / "data" / "shape-train.moved")
    try:
        with working_directory(workdir):
            assert main(["evaluate", "run", "--tasks", "shape", "--max_eval_samples", "12", "--max_seq_length", "48",
                         "--output_dir", str(tmp_path)]) == 0
    finally:
        (workdir / "data" / "shape-train.moved").rename(workdir / "data" / "shape-train.jsonl")
    written = json.loads((tmp_path / "eval_results.json").read_text())
    # The same rows and model as the run's own evaluation; batches of another size round float32 sums differently,
    # and a Pearson of near-constant outputs (a barely trained head) magnifies that: compared to 1e-4.
    assert written["eval_shape_pearson"] == pytest.approx(run[1]["eval_shape_pearson"], abs=1e-4, nan_ok=True)
    assert written["eval_score"] == pytest.approx(
        (written["eval_shape_pearson"] + written["eval_shape_spearmanr"]) / 2, nan_ok=True)


# ---- the model card of the run ---------------------------------------------------------------------------


def test_the_run_card_lists_kinds_sources_labels_pooling_and_its_snippet_runs(run):
    from hf_mtl.model_card import write_run_model_card

    card = write_run_model_card(run[0], model_id="tester/kinds").read_text()
    assert "| task | kind | labels | pooling | source |" in card
    assert "| ner | token_classification | B-CARDINAL, B-DATE," in card and "none (every token)" in card
    assert "files `train.jsonl` (train), `dev.jsonl` (validation)" in card and "/silver/" not in card
    assert "| shape | regression | vector of 2 floats | `cls` | files `shape-train.jsonl` (train)" in card
    assert "| follow | multiple_choice | 3 choices | `mean` |" in card
    assert "| mentions | classification | entity, none | `cls` |" in card
    assert "**Score**" in card and "GLUE score" not in card and "nyu-mll/glue" not in card
    assert "token-classification" in card and "multiple-choice" in card

    code = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.replace('"tester/kinds"', json.dumps(str(run[0]))), "card-snippet", "exec"), {})  # noqa: S102 (the card's own snippet)
    lines = dict(line.split(" ", 1) for line in printed.getvalue().splitlines())
    assert list(lines) == ["ner", "entity_types", "mentions", "shape", "follow"]
    assert len(lines["ner"].split()) == 7  # one tag per word of the example
    assert lines["mentions"] in ("entity", "none")
    assert len(json.loads(lines["shape"])) == 2
