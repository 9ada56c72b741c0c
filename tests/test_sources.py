"""Data sources of tasks declared in task files (`hf_mtl.sources`) and the checks every row goes through.

Real files written to tmp_path in every format (csv, tsv, json, JSON Lines, parquet), `save_to_disk` folders,
local dataset folders read by `datasets.load_dataset`, and the real silver files in ../shared/data/silver.
Each bad input is refused while the data is loaded (before any model exists), and the message names the
file, the row, the value and the fix.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from hf_mtl.data import label_statistics, load_task, tokenize_splits
from hf_mtl.kinds import IGNORE_INDEX
from hf_mtl.sources import SOURCES, get_source
from hf_mtl.task_file import task_from_entry

SILVER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "silver"


def write(path: Path, rows: list[dict], form: str | None = None) -> str:
    """`rows` as a file in the format of `path`'s extension (or `form`)."""
    form = form or path.suffix.lstrip(".")
    if form == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif form == "json":
        path.write_text(json.dumps(rows))
    elif form in ("csv", "tsv"):
        pd.DataFrame(rows).to_csv(path, index=False, sep="\t" if form == "tsv" else ",")
    elif form == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    return str(path)


def load(entry: dict):
    """(resolved spec, prepared splits) of one task-file entry."""
    return load_task(task_from_entry(entry))


REVIEWS = [{"review": "a wonderful film", "stars": "good"}, {"review": "dreadful, truly", "stars": "bad"},
           {"review": "fine", "stars": "good"}]


# ---- files: every format ------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_file_format_reads_into_prepared_splits(form, tmp_path) -> None:
    train = write(tmp_path / f"train.{form}", REVIEWS)
    dev = write(tmp_path / f"dev.{form}", REVIEWS[:2])
    spec, splits = load({"name": "reviews", "kind": "classification", "train_file": train, "validation_file": dev,
                         "text_column": "review", "label_column": "stars"})
    assert spec.label_names == ("bad", "good") and spec.num_labels == 2
    assert spec.source == {"type": "files", "train_file": train, "validation_file": dev}
    assert splits["train"].column_names == ["review", "label"]
    assert splits["train"]["label"] == [1, 0, 1] and splits["validation"]["label"] == [1, 0]
    assert splits["train"]["review"] == [row["review"] for row in REVIEWS]


def test_format_overrides_a_misleading_extension(tmp_path) -> None:
    path = tmp_path / "reviews.txt"
    write(path, REVIEWS, form="tsv")
    with pytest.raises(ValueError, match=r"cannot tell its format from the extension '\.txt'.*set format"):
        load({"name": "r", "kind": "classification", "train_file": str(path), "text_column": "review",
              "label_column": "stars"})
    _, splits = load({"name": "r", "kind": "classification", "train_file": str(path), "format": "tsv",
                         "text_column": "review", "label_column": "stars"})
    assert splits["train"]["label"] == [1, 0, 1]


def test_lists_survive_json_lines_and_parquet(tmp_path) -> None:
    rows = [{"tokens": ["Tim", "Cook"], "tags": ["B-PER", "I-PER"], "text": "Tim Cook", "topics": ["person"]},
            {"tokens": ["in", "Cupertino"], "tags": ["O", "B-LOC"], "text": "in Cupertino", "topics": ["place"]},
            {"tokens": ["hello"], "tags": ["O"], "text": "hello", "topics": []}]
    for form in ("jsonl", "parquet"):
        path = write(tmp_path / f"rows.{form}", rows)
        spec, splits = load({"name": "ner", "kind": "token_classification", "train_file": path})
        assert spec.label_names == ("B-LOC", "B-PER", "I-PER", "O")
        assert splits["train"]["label"] == [[1, 2], [3, 0], [3]]
        spec, splits = load({"name": "topics", "kind": "multi_label", "train_file": path, "label_column": "topics"})
        assert spec.label_names == ("person", "place")
        assert splits["train"]["label"] == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]


def test_numeric_label_names_are_names_in_every_format(tmp_path) -> None:
    """Star ratings 1..5 with label_names [1, 2, 3, 4, 5]: csv and parquet give numbers, JSON Lines strings; both
    are the names (1 -> id 0), never ids (which would shift every row by one and refuse 5)."""
    rows = [{"text": "great", "stars": 5}, {"text": "poor", "stars": 1}, {"text": "ok", "stars": 3}]
    text_rows = [{**row, "stars": str(row["stars"])} for row in rows]
    for path in (write(tmp_path / "s.csv", rows), write(tmp_path / "s.parquet", rows),
                 write(tmp_path / "s.jsonl", text_rows)):
        _, splits = load({"name": "stars", "kind": "classification", "train_file": path, "label_column": "stars",
                             "label_names": [1, 2, 3, 4, 5]})
        assert splits["train"]["label"] == [4, 0, 2], path
    with pytest.raises(ValueError, match=r"s\.csv, data row 1 .*label 0 .*valid values are the names \['1', '2'"):
        load({"name": "stars", "kind": "classification", "train_file": write(tmp_path / "s.csv", [{"text": "x", "stars": 0}]),
              "label_column": "stars", "label_names": [1, 2, 3, 4, 5]})


def test_class_ids_stay_ids_without_label_names(tmp_path) -> None:
    path = write(tmp_path / "ids.csv", [{"text": "a", "label": 2}, {"text": "b", "label": 0}])
    spec, splits = load({"name": "ids", "kind": "classification", "train_file": path})
    assert spec.num_labels == 3 and spec.label_names is None
    assert splits["train"]["label"] == [2, 0]


def test_true_and_false_labels_are_the_names_false_and_true(tmp_path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "a", "label": true}\n{"text": "b", "label": false}\n')
    spec, splits = load({"name": "b", "kind": "classification", "train_file": str(path)})
    assert spec.label_names == ("False", "True") and splits["train"]["label"] == [1, 0]
    path.write_text('{"tokens": ["a", "b"], "tags": [true, false]}\n')
    spec, splits = load({"name": "b", "kind": "token_classification", "train_file": str(path)})
    assert spec.label_names == ("False", "True") and splits["train"]["label"] == [[1, 0]]


def test_ids_read_as_floats_are_ids_and_a_blank_label_is_named(tmp_path) -> None:
    """A csv column of ids with one blank cell is read as floats (1.0, 2.0, NaN): still ids, and the blank row is
    the one refused (not a label set of '1.0', '2.0' and 'nan')."""
    path = tmp_path / "ids.jsonl"
    path.write_text('{"text": "a", "label": 1.0}\n{"text": "b", "label": 2.0}\n')
    spec, splits = load({"name": "i", "kind": "classification", "train_file": str(path)})
    assert (spec.num_labels, spec.label_names, splits["train"]["label"]) == (3, None, [1, 2])
    blank = tmp_path / "blank.csv"
    blank.write_text("text,label\na,1\nb,2\nc,\n")
    with pytest.raises(ValueError, match=r"blank\.csv, data row 3 \(line 4 .*\): label None is not a valid "
                                         r"classification label \(1 such row\(s\)\); valid values are the ids 0\.\.2"):
        load({"name": "i", "kind": "classification", "train_file": str(blank)})
    tags = tmp_path / "tags.jsonl"
    tags.write_text('{"tokens": ["a"], "tags": [0]}\n{"tokens": ["b", "c"], "tags": [2, null]}\n')
    with pytest.raises(ValueError, match=r"tags\.jsonl, line 2: tag None is not a valid token_classification label"):
        load({"name": "t", "kind": "token_classification", "train_file": str(tags)})


# ---- save_to_disk folders and local dataset folders -----------------------------------------------------

def test_a_save_to_disk_folder_with_class_labels_and_split_names(tmp_path) -> None:
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))})
    folder = tmp_path / "conll_like"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"tokens": [["Tim", "Cook"], ["hi"]], "ner_tags": [[1, 2], [0]]}, features),
        "dev": datasets.Dataset.from_dict({"tokens": [["Tim"]], "ner_tags": [[1]]}, features),
    }).save_to_disk(folder)
    entry = {"name": "ner", "kind": "token_classification", "load_from_disk": str(folder), "tags_column": "ner_tags",
             "validation_split": "dev"}
    spec, splits = load(entry)
    assert spec.label_names == ("O", "B-PER", "I-PER")  # the ClassLabel's names, in its order
    assert splits["train"]["label"] == [[1, 2], [0]] and splits["validation"]["label"] == [[1]]

    _, splits = load({**entry, "validation_split": None})  # no `validation` split in the folder
    assert list(splits) == ["train"]


def test_a_save_to_disk_folder_of_one_dataset_is_the_training_split(tmp_path) -> None:
    datasets.Dataset.from_list(REVIEWS).save_to_disk(tmp_path / "one")
    _, splits = load({"name": "r", "kind": "classification", "load_from_disk": str(tmp_path / "one"),
                         "text_column": "review", "label_column": "stars"})
    assert list(splits) == ["train"] and splits["train"]["label"] == [1, 0, 1]


def test_bad_save_to_disk_folders_are_refused(tmp_path) -> None:
    base = {"name": "r", "kind": "classification", "text_column": "review", "label_column": "stars"}
    with pytest.raises(FileNotFoundError, match=r"load_from_disk .*missing: no such folder"):
        load({**base, "load_from_disk": str(tmp_path / "missing")})
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "train.csv").write_text("review,stars\na,good\n")
    with pytest.raises(ValueError, match=r"plain is not a folder written by save_to_disk"):
        load({**base, "load_from_disk": str(tmp_path / "plain")})
    datasets.DatasetDict({"fit": datasets.Dataset.from_list(REVIEWS)}).save_to_disk(tmp_path / "odd")
    with pytest.raises(ValueError, match=r"has splits \['fit'\]; map them with train_split: NAME"):
        load({**base, "load_from_disk": str(tmp_path / "odd")})
    _, splits = load({**base, "load_from_disk": str(tmp_path / "odd"), "train_split": "fit"})
    assert len(splits["train"]) == 3
    with pytest.raises(ValueError, match=r"validation_split='dev': no such split in .*odd; it has \['fit'\]"):
        load({**base, "load_from_disk": str(tmp_path / "odd"), "train_split": "fit", "validation_split": "dev"})


def test_a_local_folder_as_dataset(tmp_path) -> None:
    folder = tmp_path / "reviews"
    folder.mkdir()
    write(folder / "train.csv", REVIEWS)
    write(folder / "dev.csv", REVIEWS[:1])  # datasets reads dev.* as the validation split
    spec, splits = load({"name": "r", "kind": "classification", "dataset": str(folder), "text_column": "review",
                         "label_column": "stars"})
    assert spec.source == {"type": "hub", "dataset": str(folder)}
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 3, "validation": 1}
    assert "dataset " + str(folder) in get_source("r", spec.source).describe("train")

    with pytest.raises(ValueError, match=r"validation_split='valid' is not a split of .*reviews; it has \['train', "
                                         r"'validation'\]"):
        load({"name": "r", "kind": "classification", "dataset": str(folder), "validation_split": "valid",
              "text_column": "review", "label_column": "stars"})


def test_a_hub_id_offline_says_what_loads_offline() -> None:
    with pytest.raises(ValueError, match=r"load_dataset\('no-such-user/no-such-dataset'\) failed: .*Offline, only a "
                                         r"dataset in the local cache or a local folder loads"):
        load({"name": "r", "kind": "classification", "dataset": "no-such-user/no-such-dataset"})


def test_every_source_refuses_keys_it_does_not_read() -> None:
    for kind, cls in SOURCES.items():
        with pytest.raises(ValueError, match=rf"unknown key\(s\) \['colour'\] for a {kind} source; it takes"):
            cls("t", {cls.selecting_keys[0]: "x.csv", "colour": "red"})
    with pytest.raises(ValueError, match=r"source type 'ftp' is not one of files, hub, disk"):
        get_source("t", {"type": "ftp"})


# ---- the real silver data -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def silver() -> Path:
    if not (SILVER / "ner" / "train.jsonl").exists():
        pytest.skip(f"the silver data is not at {SILVER}")
    return SILVER


def test_silver_tasks_load_with_their_tag_sets(silver, tokenizer) -> None:
    ner, ner_splits = load({"name": "ner", "kind": "token_classification", "train_file": str(silver / "ner/train.jsonl"),
                            "validation_file": str(silver / "ner/dev.jsonl"), "tags_column": "ner_tags"})
    pos, _ = load({"name": "pos", "kind": "token_classification", "train_file": str(silver / "pos/train.jsonl"),
                   "tags_column": "upos"})
    types, types_splits = load({"name": "entity_types", "kind": "multi_label",
                                "train_file": str(silver / "entity_types/train.jsonl"),
                                "validation_file": str(silver / "entity_types/dev.jsonl"), "label_column": "labels"})
    # The README: 35 BIO tags over 18 OntoNotes types seen in train, 17 UPOS tags, 18 entity types.
    assert ner.num_labels == 35 and "O" in ner.label_names and "B-PERSON" in ner.label_names
    assert pos.num_labels == 17 and "PROPN" in pos.label_names
    assert types.num_labels == 18 and types.label_names == tuple(sorted(types.label_names))
    assert {name[2:] for name in ner.label_names if name != "O"} == set(types.label_names)
    assert (len(ner_splits["train"]), len(ner_splits["validation"])) == (7052, 807)
    assert (len(types_splits["train"]), len(types_splits["validation"])) == (7052, 807)

    # Every word of an untruncated row gets exactly one labelled piece, its tag.
    rows = ner_splits["train"].select(range(200))
    tokenized = tokenize_splits(datasets.DatasetDict({"train": rows}), ner, tokenizer, 512)["train"]
    for prepared, encoded in zip(rows, tokenized):
        labelled = [tag for tag in encoded["labels"] if tag != IGNORE_INDEX]
        assert labelled == prepared["label"]
    stats = label_statistics(tokenized, ner)
    counts = np.bincount([t for row in rows["label"] for t in row], minlength=35)
    assert stats.class_counts.tolist() == counts.tolist()
    assert stats.initial_loss == pytest.approx(math.log(35))


# ---- bad input: refused while loading, with the file, the row, the value and the fix ----------------------

def test_tags_and_words_of_different_lengths(tmp_path) -> None:
    path = tmp_path / "ner.jsonl"
    path.write_text('{"tokens": ["Tim", "Cook"], "tags": ["B-PER", "I-PER"]}\n\n'  # a blank line: lines still count
                    '{"tokens": ["in", "Cupertino", "today"], "tags": ["O", "B-LOC"]}\n')
    with pytest.raises(ValueError) as error:
        load({"name": "ner", "kind": "token_classification", "train_file": str(path)})
    message = str(error.value)
    assert f"{path}, line 3: 3 words in 'tokens' but 2 tags in 'tags'" in message
    assert "one tag per word. Fix or remove the row(s)" in message


def test_a_tag_in_dev_that_train_lacks(tmp_path) -> None:
    train = write(tmp_path / "train.jsonl", [{"tokens": ["Tim"], "tags": ["B-PER"]}, {"tokens": ["hi"], "tags": ["O"]}])
    dev = write(tmp_path / "dev.jsonl", [{"tokens": ["Tim"], "tags": ["B-PER"]}, {"tokens": ["Paris"], "tags": ["B-LOC"]}])
    with pytest.raises(ValueError) as error:
        load({"name": "ner", "kind": "token_classification", "train_file": train, "validation_file": dev})
    message = str(error.value)
    assert f"{dev}" in message and "'B-LOC'" in message
    assert f"does not occur in the training data ({train})" in message and "['B-PER', 'O']" in message
    assert "list every label in the task's label_names" in message
    # Listing it in label_names is the documented way out.
    _, splits = load({"name": "ner", "kind": "token_classification", "train_file": train, "validation_file": dev,
                         "label_names": ["O", "B-PER", "B-LOC"]})
    assert splits["validation"]["label"] == [[1], [2]]


def test_a_label_missing_from_train_is_named_by_its_line(tmp_path) -> None:
    train = write(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    dev = write(tmp_path / "dev.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "z"}])
    with pytest.raises(ValueError, match=rf"{dev}, line 2: label 'z'"):
        load({"name": "c", "kind": "classification", "train_file": train, "validation_file": dev})


def test_a_training_file_with_a_single_label(tmp_path) -> None:
    path = write(tmp_path / "train.jsonl", [{"tokens": ["Tim"], "tags": ["O"]}, {"tokens": ["hi"], "tags": ["O"]}])
    with pytest.raises(ValueError, match=rf"{path}.*'O'.*label_names"):
        load({"name": "ner", "kind": "token_classification", "train_file": path})


def test_a_varying_number_of_choices(tmp_path) -> None:
    path = write(tmp_path / "mc.jsonl", [{"context": "Fish", "choices": ["swim", "fly", "bark"], "label": 0},
                                         {"context": "Cats", "choices": ["purr", "fly"], "label": 0}])
    with pytest.raises(ValueError) as error:
        load({"name": "mc", "kind": "multiple_choice", "train_file": path})
    message = str(error.value)
    assert f"{path}, line 2: 2 choices in 'choices', but the task has 3" in message
    assert "the same number of choices" in message and "Pad or fix the row, or remove it" in message


@pytest.mark.parametrize("form", ["csv", "tsv", "json", "jsonl", "parquet", "disk", "hub"])
def test_a_missing_column_lists_the_columns_present(form, tmp_path) -> None:
    rows = [{"sentence": "a fine film", "stars": "good"}, {"sentence": "dull", "stars": "bad"}]
    if form == "disk":
        datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "disk")
        source = {"load_from_disk": str(tmp_path / "disk")}
    elif form == "hub":
        (tmp_path / "folder").mkdir()
        write(tmp_path / "folder" / "train.jsonl", rows)
        source = {"dataset": str(tmp_path / "folder")}
    else:
        source = {"train_file": write(tmp_path / f"train.{form}", rows)}
    with pytest.raises(ValueError) as error:
        load({"name": "r", "kind": "classification", **source, "text_column": "review", "label_column": "stars"})
    message = str(error.value)
    assert "column 'review' is missing; columns present: ['sentence', 'stars']" in message
    assert "point the task at it" in message
    where = source.get("train_file") or next(iter(source.values()))
    assert where in message


#: A bad label of every kind: (entry fields, rows, the row's place, the bad value as shown, what is valid).
BAD_LABELS = {
    "classification": ({"label_names": ["bad", "good"]},
                       [{"text": "a", "label": "good"}, {"text": "b", "label": "meh"}],
                       "'meh' is not a valid classification label", "valid values are the ids 0..1 or the names"),
    "regression": ({"label_range": [0, 5]}, [{"text": "a", "label": 2.5}, {"text": "b", "label": 7.0}],
                   "7.0 is not a valid regression label", "numbers from 0 to 5, both included"),
    "multi_label": ({"label_names": ["person", "place"]},
                    [{"text": "a", "label": ["person"]}, {"text": "b", "label": ["place", "time"]}],
                    "['place', 'time'] is not a valid multi_label label", "a list of names from ['person', 'place']"),
    "token_classification": ({"label_names": ["O", "B-PER"], "tags_column": "label"},
                             [{"tokens": ["Tim"], "label": ["B-PER"]}, {"tokens": ["in", "Paris"], "label": ["O", "B-LOC"]}],
                             "tag 'B-LOC' is not a valid token_classification label", "lists of tags, each one of"),
    "multiple_choice": ({}, [{"context": "Fish", "choices": ["swim", "fly"], "label": 0},
                             {"context": "Cats", "choices": ["purr", "fly"], "label": 2}],
                        "label 2 is not a valid multiple_choice label", "the index of the right choice, the ids 0..1"),
}


@pytest.mark.parametrize("kind", list(BAD_LABELS))
def test_a_label_outside_the_label_set_of_every_kind(kind, tmp_path) -> None:
    fields, rows, value, valid = BAD_LABELS[kind]
    path = write(tmp_path / "train.jsonl", rows)
    with pytest.raises(ValueError) as error:
        load({"name": "t", "kind": kind, "train_file": path, **fields})
    message = str(error.value)
    assert f"task 't': {path}, line 2: " in message
    assert value in message and valid in message and "(1 such row(s))" in message
    assert "Fix or remove the row(s)" in message


@pytest.mark.parametrize("form", ["csv", "jsonl", "parquet", "json"])
def test_an_empty_file(form, tmp_path) -> None:
    path = tmp_path / f"train.{form}"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"train_file {path} is empty. Give a file with rows, or drop train_file"):
        load({"name": "r", "kind": "classification", "train_file": str(path)})


@pytest.mark.parametrize("name, text", [("train.csv", "text,label\n"), ("train.jsonl", "\n\n  \n")])
def test_a_file_without_rows(name, text, tmp_path) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"train_file {path} has no rows \(only a header, or blank lines\?\)"):
        load({"name": "r", "kind": "classification", "train_file": str(path)})


def test_missing_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"validation_file .*nowhere\.csv: no such file .*Fix the path"):
        load({"name": "r", "kind": "classification", "train_file": write(tmp_path / "t.csv", REVIEWS),
              "validation_file": str(tmp_path / "nowhere.csv")})
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl cannot be read as jsonl: .*Fix the file"):
        load({"name": "r", "kind": "classification", "train_file": str(broken)})
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(ValueError, match=r"data\.csv is a folder; give the data file itself"):
        load({"name": "r", "kind": "classification", "train_file": str(tmp_path / "data.csv")})


def test_words_that_are_not_lists_or_empty_texts(tmp_path) -> None:
    path = write(tmp_path / "ner.csv", [{"tokens": "Tim Cook", "tags": "B-PER I-PER"}, {"tokens": "hi", "tags": "O"}])
    with pytest.raises(ValueError, match=rf"{path}, data row 1 .*: tokens column 'tokens' holds text \(one string per "
                                         r"row\), not lists of words.*point tokens_column at such a column"):
        load({"name": "ner", "kind": "token_classification", "train_file": path})
    path = write(tmp_path / "ner.jsonl", [{"tokens": ["Tim", " "], "tags": ["B-PER", "O"]}])
    with pytest.raises(ValueError, match=r"ner\.jsonl, line 1: tokens column 'tokens' holds the word ' '"):
        load({"name": "ner", "kind": "token_classification", "train_file": path})
    path = write(tmp_path / "r.csv", [{"text": "fine", "label": "a"}, {"text": "", "label": "b"}])
    with pytest.raises(ValueError, match=r"r\.csv, data row 2 \(line 3 if no field spans lines\): text column 'text' "
                                         r"is empty \(1 such row\(s\)\). Fix or remove the row"):
        load({"name": "r", "kind": "classification", "train_file": path})


def test_json_lines_rows_are_named_by_their_line_despite_blank_lines(tmp_path) -> None:
    path = tmp_path / "r.json"  # JSON Lines in a .json file, starting with a blank line
    path.write_text('\n{"text": "a", "label": 0}\n\n{"text": "b", "label": 0.5}\n')
    with pytest.raises(ValueError, match=rf"{path}, line 4: label 0.5 is not a valid classification label"):
        load({"name": "r", "kind": "classification", "train_file": str(path), "num_labels": 2})
    parquet = write(tmp_path / "r.parquet", [{"text": "a", "label": 0}, {"text": "b", "label": 5}])
    with pytest.raises(ValueError, match=rf"{parquet}, row 1: label 5 is not a valid"):
        load({"name": "r", "kind": "classification", "train_file": parquet, "num_labels": 2})


def test_a_file_source_describes_and_locates_its_rows(tmp_path) -> None:
    csv = write(tmp_path / "t.csv", REVIEWS)
    source = get_source("r", {"type": "files", "train_file": csv, "validation_file": str(tmp_path / "d.jsonl")})
    assert source.describe("train") == csv
    assert source.locate("train")(0) == f"{csv}, data row 1 (line 2 if no field spans lines)"
    assert os.path.basename(source.describe("validation")) == "d.jsonl"
