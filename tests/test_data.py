"""hf_mtl.data: the local GLUE reader (real files and fixtures of the formats not on disk), the Hub
fallback, user datasets, row caps, tokenisation and label statistics."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_mtl import data
from hf_mtl.data import (
    LabelStatistics,
    cap_rows,
    glue_column_names,
    hold_out,
    label_statistics,
    load_task_splits,
    prepare_dataset,
    read_tsv,
    tokenize_splits,
)
from hf_mtl.tasks import TaskSpec, get_task

INT64 = datasets.Value("int64")
FLOAT32 = datasets.Value("float32")
STRING = datasets.Value("string")


def write_tsv(path: Path, lines: list[str], trailing_newline: bool = True) -> Path:
    """Write tab-separated lines exactly as given (columns joined by the caller with tabs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""), encoding="utf-8")
    return path


def tsv_row(*fields: str) -> str:
    return "\t".join(fields)


@pytest.fixture(autouse=True)
def _no_glue_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GLUE_DIR set in the shell must not change which source these tests exercise."""
    monkeypatch.delenv("GLUE_DIR", raising=False)


# --------------------------------------------------------------------------------------------------
# The real GLUE files (../shared/data/glue)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "train_rows", "dev_rows"),
    [("sst2", 67_349, 872), ("mrpc", 3_668, 408), ("stsb", 5_749, 1_500), ("wnli", 635, 71)],
)
def test_real_glue_row_counts_and_columns(glue_dir: Path, task: str, train_rows: int, dev_rows: int) -> None:
    spec = get_task(task)
    splits = load_task_splits(spec, glue_dir)
    assert list(splits) == ["train", "validation"]
    assert (splits["train"].num_rows, splits["validation"].num_rows) == (train_rows, dev_rows)
    label = FLOAT32 if spec.kind == "regression" else INT64
    for split in splits.values():
        assert split.features == datasets.Features({**dict.fromkeys(spec.text_columns, STRING), "label": label})


def test_real_qnli_has_only_its_dev_file_with_string_labels(glue_dir: Path) -> None:
    splits = load_task_splits(get_task("qnli"), glue_dir)
    assert list(splits) == ["validation"]
    assert splits["validation"].num_rows == 5_463  # 5,267 if quotes were honoured
    # First two rows of QNLI/dev.tsv: entailment, not_entailment.
    assert splits["validation"][:2]["label"] == [0, 1]


def test_real_mrpc_maps_bom_header_and_string_columns(glue_dir: Path) -> None:
    first = load_task_splits(get_task("mrpc"), glue_dir)["train"][0]
    assert first["label"] == 1  # `\ufeffQuality` read as `Quality`
    assert first["sentence1"].startswith("Amrozi accused his brother")
    assert first["sentence2"].startswith("Referring to him as only")


def test_real_stsb_scores_are_float_targets(glue_dir: Path) -> None:
    validation = load_task_splits(get_task("stsb"), glue_dir)["validation"]
    assert validation[:2]["label"] == [5.0, 4.75]
    assert validation[0]["sentence1"] == "A man with a hard hat is dancing."


def test_glue_dir_env_var_is_the_default_source(glue_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    assert load_task_splits(get_task("wnli"))["validation"].num_rows == 71


# --------------------------------------------------------------------------------------------------
# Fixtures reproducing the layouts that are not on disk
# --------------------------------------------------------------------------------------------------


def test_cola_has_no_header_and_no_trailing_newline(tmp_path: Path) -> None:
    write_tsv(tmp_path / "CoLA/train.tsv", [
        tsv_row("gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."),
        tsv_row("gj04", "0", "*", '" He said that it rained.'),  # unbalanced leading quote: must not swallow rows
        tsv_row("gj04", "1", "", "One more pseudo generalization and I'm giving up."),
    ])
    write_tsv(tmp_path / "CoLA/dev.tsv", [
        tsv_row("gj04", "1", "", "The sailors rode the breeze clear of the rocks."),
        tsv_row("gj04", "0", "*", "The more you eat, the more you want."),
    ], trailing_newline=False)
    splits = load_task_splits(get_task("cola"), tmp_path)
    assert splits["train"]["label"][:] == [1, 0, 1]
    assert splits["train"]["sentence"][1] == '" He said that it rained.'
    assert splits["validation"]["sentence"][:] == [
        "The sailors rode the breeze clear of the rocks.", "The more you eat, the more you want."
    ]
    assert splits["train"].column_names == ["sentence", "label"]


MNLI_TRAIN_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
MNLI_DEV_HEADER = (*MNLI_TRAIN_HEADER[:-1], "label2", "label3", "label4", "label5", "gold_label")


def mnli_row(index: int, premise: str, hypothesis: str, gold: str, dev: bool = False) -> str:
    parses = ("( ( x ) )", "( ( y ) )", "(ROOT (S x))", "(ROOT (S y))")
    votes = (gold,) * (5 if dev else 1)
    return tsv_row(str(index), "31193", f"{index}n", "government", *parses, premise, hypothesis, *votes, gold)


def test_mnli_reads_12_column_train_and_16_column_dev_files(tmp_path: Path) -> None:
    write_tsv(tmp_path / "MNLI/train.tsv", [
        tsv_row(*MNLI_TRAIN_HEADER),
        mnli_row(0, "Conceptually cream skimming has two basic dimensions.", "Product and geography.", "neutral"),
        mnli_row(1, '" you know during the season', "You lose the things.", "entailment"),
        mnli_row(2, "One of our number will carry out your instructions.", "No one can.", "contradiction"),
    ])
    write_tsv(tmp_path / "MNLI/dev_matched.tsv", [
        tsv_row(*MNLI_DEV_HEADER),
        mnli_row(0, "The new rights are nice enough", "Everyone really likes them.", "neutral", dev=True),
    ])
    write_tsv(tmp_path / "MNLI/dev_mismatched.tsv", [
        tsv_row(*MNLI_DEV_HEADER),
        mnli_row(0, "Your contribution helped.", "It didn't help.", "contradiction", dev=True),
        mnli_row(1, "Your gift is appreciated.", "Thanks.", "entailment", dev=True),
    ])
    splits = load_task_splits(get_task("mnli"), tmp_path)
    assert list(splits) == ["train", "validation_matched", "validation_mismatched"]
    assert splits["train"]["label"][:] == [1, 0, 2]
    assert splits["train"]["premise"][1] == '" you know during the season'
    assert splits["validation_matched"]["label"][:] == [1]
    assert splits["validation_mismatched"]["label"][:] == [2, 0]
    assert splits["validation_mismatched"].column_names == ["premise", "hypothesis", "label"]


def test_qqp_maps_questions_and_is_duplicate(tmp_path: Path) -> None:
    write_tsv(tmp_path / "QQP/dev.tsv", [
        tsv_row("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        tsv_row("201359", "303345", "303346", "Why are African-Americans so beautiful?",
                "Why are hispanics so beautiful?", "0"),
        tsv_row("263843", "69383", "380476", '"Computer Science PhD, how?', "How do I pursue a PhD?", "1"),
    ])
    splits = load_task_splits(get_task("qqp"), tmp_path)
    assert list(splits) == ["validation"]
    assert splits["validation"]["label"][:] == [0, 1]
    assert splits["validation"]["question1"][1] == '"Computer Science PhD, how?'
    assert splits["validation"].column_names == ["question1", "question2", "label"]


def test_rte_string_labels_and_unbalanced_quotes_keep_rows_apart(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "RTE/train.tsv", [
        tsv_row("index", "sentence1", "sentence2", "label"),
        tsv_row("0", '" No Weapons of Mass Destruction Found in Iraq Yet.', "Weapons found.", "not_entailment"),
        tsv_row("1", "A place of sorrow, after Pope John Paul II died.", "Pope died.", "entailment"),
        tsv_row("2", 'Herceptin " was approved', "Herceptin can be used.", "entailment"),
    ])
    with path.open(newline="") as handle:  # the fixture does reproduce the trap: CSV quoting merges its rows
        assert len(list(csv.reader(handle, delimiter="\t"))) < 4
    train = load_task_splits(get_task("rte"), tmp_path)["train"]
    assert train.num_rows == 3
    assert train["label"][:] == [1, 0, 0]
    assert train["sentence2"][:] == ["Weapons found.", "Pope died.", "Herceptin can be used."]


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "SST-2/train.tsv", [
        tsv_row("sentence", "label"), tsv_row("good ", "1"), "", tsv_row("bad ", "7"),
    ])
    with pytest.raises(ValueError, match=r"line 4: label '7'"):
        load_task_splits(get_task("sst2"), tmp_path)
    path.write_text("sentence\tlabel\ngood \t1\n\nbad \t0\n", encoding="utf-8")
    assert load_task_splits(get_task("sst2"), tmp_path)["train"]["label"][:] == [1, 0]


# --------------------------------------------------------------------------------------------------
# Errors of the local reader
# --------------------------------------------------------------------------------------------------


def test_missing_glue_dir_names_the_flag_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"--glue_dir .*nowhere.* does not exist"):
        load_task_splits(get_task("sst2"), missing)


def test_missing_glue_dir_from_env_names_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"GLUE_DIR .*nowhere.* does not exist"):
        load_task_splits(get_task("sst2"))


def test_task_without_files_names_task_expected_path_and_contents(tmp_path: Path) -> None:
    write_tsv(tmp_path / "SST-2/train.tsv", [tsv_row("sentence", "label"), tsv_row("fine ", "1")])
    with pytest.raises(FileNotFoundError) as error:
        load_task_splits(get_task("rte"), tmp_path)
    message = str(error.value)
    assert "task 'rte'" in message
    assert str(tmp_path / "RTE" / "train.tsv") in message and str(tmp_path / "RTE" / "dev.tsv") in message
    assert "['SST-2']" in message


def test_bad_class_label_names_task_file_line_value_and_valid_values(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "RTE/dev.tsv", [
        tsv_row("index", "sentence1", "sentence2", "label"),
        tsv_row("0", "A cat sat.", "A cat exists.", "entailment"),
        tsv_row("1", "A dog ran.", "Nothing ran.", "maybe"),
    ])
    with pytest.raises(ValueError) as error:
        load_task_splits(get_task("rte"), tmp_path)
    message = str(error.value)
    assert f"task 'rte': {path}, line 3: label 'maybe'" in message
    assert "0..1" in message and "['entailment', 'not_entailment']" in message


def test_class_id_out_of_range_is_rejected(tmp_path: Path) -> None:
    write_tsv(tmp_path / "SST-2/dev.tsv", [tsv_row("sentence", "label"), tsv_row("ok ", "1"), tsv_row("odd ", "2")])
    with pytest.raises(ValueError, match=r"line 3: label '2' is not a valid classification label"):
        load_task_splits(get_task("sst2"), tmp_path)


def test_bad_regression_target_is_rejected(tmp_path: Path) -> None:
    header = ("index", "genre", "filename", "year", "old_index", "source1", "source2",
              "sentence1", "sentence2", "score")
    write_tsv(tmp_path / "STS-B/train.tsv", [
        tsv_row(*header),
        tsv_row("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane.", "A jet.", "n/a"),
    ])
    with pytest.raises(ValueError, match=r"line 2: label 'n/a' is not a valid regression label.*numbers from 0 to 5"):
        load_task_splits(get_task("stsb"), tmp_path)


def test_missing_column_names_it_and_lists_the_header(tmp_path: Path) -> None:
    write_tsv(tmp_path / "SST-2/train.tsv", [tsv_row("text", "label"), tsv_row("fine ", "1")])
    with pytest.raises(ValueError, match=r"no column 'sentence'; its header has columns \['text', 'label'\]"):
        load_task_splits(get_task("sst2"), tmp_path)


def test_header_only_file_is_an_empty_split(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "SST-2/dev.tsv", [tsv_row("sentence", "label")])
    with pytest.raises(ValueError, match=rf"task 'sst2', {path} has no rows"):
        load_task_splits(get_task("sst2"), tmp_path)


def test_empty_text_names_task_file_and_line(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "WNLI/train.tsv", [
        tsv_row("index", "sentence1", "sentence2", "label"),
        tsv_row("0", "The drain is clogged.", "It is clogged.", "1"),
        tsv_row("1", "Jane knocked.", "  ", "0"),
    ])
    with pytest.raises(ValueError, match=rf"task 'wnli': {path}, line 3: text column 'sentence2' is empty"):
        load_task_splits(get_task("wnli"), tmp_path)


def test_row_with_missing_fields_names_the_line(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "WNLI/train.tsv", [
        tsv_row("index", "sentence1", "sentence2", "label"),
        tsv_row("0", "The drain is clogged.", "1"),
    ])
    with pytest.raises(ValueError, match=rf"{path}, line 2 has 3 tab-separated fields, expected 4"):
        load_task_splits(get_task("wnli"), tmp_path)


def test_custom_task_cannot_come_from_a_glue_dir(tmp_path: Path) -> None:
    spec = TaskSpec(name="reviews", kind="classification", num_labels=2, text_columns=("text",))
    with pytest.raises(ValueError, match=r"task 'reviews' is not a GLUE task.*prepare_dataset"):
        load_task_splits(spec, tmp_path)


def test_read_tsv_keeps_quotes_line_numbers_and_header(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text("\ufeffsentence\tlabel\n\"unbalanced\t1\n\nsecond \"quote\t0\n", encoding="utf-8")
    table = read_tsv(path)
    assert table.header == ["sentence", "label"]  # the byte-order mark is dropped
    assert table.rows == [['"unbalanced', "1"], ['second "quote', "0"]]  # no CSV quoting: rows never merge
    assert table.lines == [2, 4]  # the blank line 3 is skipped but counted
    assert table.ragged(2) is None and table.ragged(3) == (2, ['"unbalanced', "1"])
    headless = read_tsv(path, header=False)
    assert headless.header == [] and headless.lines == [1, 2, 4]
    assert read_tsv(write_tsv(tmp_path / "empty.tsv", [], trailing_newline=False)).rows == []


def test_tsv_table_to_split_prepares_columns_and_names_the_line(tmp_path: Path) -> None:
    spec = get_task("sst2")
    table = read_tsv(write_tsv(tmp_path / "in.tsv", [tsv_row("id", "text", "y"), tsv_row("7", "good", "positive"),
                                                     tsv_row("8", "bad", "0")]))
    split = table.to_split(spec, {"sentence": 1, "label": 2})
    assert split.column_names == ["sentence", "label"] and split.features["label"] == INT64
    assert split["sentence"] == ["good", "bad"] and split["label"] == [1, 0]
    assert table.to_split(spec, {"sentence": 1}, default_label="0")["label"] == [0, 0]
    with pytest.raises(ValueError, match=rf"{tmp_path / 'in.tsv'}, line 2: label '7' is not a valid classification"):
        table.to_split(spec, {"sentence": 1, "label": 0})


def test_glue_column_names() -> None:
    assert glue_column_names("mrpc") == {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}
    assert glue_column_names("cola") == {} and glue_column_names("reviews") == {}


# --------------------------------------------------------------------------------------------------
# The Hub
# --------------------------------------------------------------------------------------------------


def test_unreachable_hub_suggests_a_local_glue_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(ConnectionError, match=r"task 'sst2': the Hugging Face Hub could not be reached.*"
                                              r"--glue_dir DIR \(or the GLUE_DIR"):
        load_task_splits(get_task("sst2"))


def test_offline_mode_fails_fast_with_the_same_advice() -> None:
    if not datasets.config.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is not set; the real Hub call would wait on the network")
    with pytest.raises(ConnectionError, match=r"could not be reached.*--glue_dir DIR"):
        load_task_splits(get_task("wnli"))


def test_hub_splits_are_prepared_like_local_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    features = datasets.Features({
        "sentence": STRING,
        "label": datasets.ClassLabel(names=["negative", "positive"]),
        "idx": datasets.Value("int32"),
    })

    def split(labels: list[int]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"sentence": [f"text {i} " for i in range(len(labels))], "label": labels, "idx": list(range(len(labels)))},
            features=features,
        )

    hub = datasets.DatasetDict({"train": split([0, 1, 1]), "validation": split([1]), "test": split([-1, -1])})
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name: hub if (path, name) == ("nyu-mll/glue", "sst2")
                        else pytest.fail(f"unexpected load_dataset({path!r}, {name!r})"))
    splits = load_task_splits(get_task("sst2"))
    assert list(splits) == ["train", "validation"]  # the unlabelled test split is dropped
    assert splits["train"].features == datasets.Features({"sentence": STRING, "label": INT64})
    assert splits["train"]["label"][:] == [0, 1, 1]


def test_task_without_hub_config_or_data_is_an_error() -> None:
    spec = TaskSpec(name="reviews", kind="classification", num_labels=2, text_columns=("text",))
    with pytest.raises(ValueError, match=r"task 'reviews' has no hub_config and no dataset was given"):
        load_task_splits(spec)


# --------------------------------------------------------------------------------------------------
# User datasets
# --------------------------------------------------------------------------------------------------

REVIEWS = TaskSpec(name="reviews", kind="classification", num_labels=3, text_columns=("text",),
                   label_column="stars", label_names=("bad", "ok", "good"))
RATINGS = TaskSpec(name="ratings", kind="regression", num_labels=1, text_columns=("a", "b"))


def test_a_dataset_alone_is_the_train_split_with_labels_normalised() -> None:
    dataset = datasets.Dataset.from_dict({"text": ["meh", "great", "awful"], "stars": ["ok", "good", "0"],
                                          "extra": [1, 2, 3]})
    prepared = prepare_dataset(REVIEWS, dataset)
    assert list(prepared) == ["train"]
    assert prepared["train"].features == datasets.Features({"text": STRING, "label": INT64})
    assert prepared["train"]["label"][:] == [1, 2, 0]


def test_dataset_dict_keeps_train_and_eval_splits_and_casts_regression_targets() -> None:
    def split(targets: list[int]) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"a": ["x"] * len(targets), "b": ["y"] * len(targets), "label": targets})

    prepared = prepare_dataset(RATINGS, datasets.DatasetDict({"train": split([1, 2]), "validation": split([3]),
                                                              "test": split([0])}))
    assert list(prepared) == ["train", "validation"]
    assert prepared["train"].features["label"] == FLOAT32
    assert prepared["validation"]["label"][:] == [3.0]


def test_prepare_respects_a_selection_of_rows() -> None:
    dataset = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "stars": [0, 1, 2]}).select([2, 0])
    assert prepare_dataset(REVIEWS, dataset)["train"]["label"][:] == [2, 0]


def test_user_dataset_errors_name_split_and_row() -> None:
    good = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "stars": [0, 1, 2]})
    bad_label = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "stars": [0, 1, 5]})
    with pytest.raises(ValueError, match=r"task 'reviews': split 'validation', row 2: label 5\b.*0\.\.2"):
        prepare_dataset(REVIEWS, datasets.DatasetDict({"train": good, "validation": bad_label}))
    empty_text = datasets.Dataset.from_dict({"text": ["a", None, "c"], "stars": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"split 'train', row 1: text column 'text' is empty"):
        prepare_dataset(REVIEWS, empty_text)
    with pytest.raises(ValueError, match=r"column 'stars' is missing; columns present: \['text', 'label'\]"):
        prepare_dataset(REVIEWS, good.rename_column("stars", "label"))
    with pytest.raises(ValueError, match=r"split 'train' has no rows"):
        prepare_dataset(REVIEWS, good.select([]))
    with pytest.raises(ValueError, match=r"label 1.5 is not a valid classification label"):
        prepare_dataset(REVIEWS, datasets.Dataset.from_dict({"text": ["a"], "stars": [1.5]}))


def test_user_dataset_with_no_known_split_or_wrong_type() -> None:
    good = datasets.Dataset.from_dict({"text": ["a"], "stars": [0]})
    with pytest.raises(ValueError, match=r"splits \['dev'\], none of \['train', 'validation'\]"):
        prepare_dataset(REVIEWS, datasets.DatasetDict({"dev": good}))
    with pytest.raises(TypeError, match=r"dataset has type dict"):
        prepare_dataset(REVIEWS, {"train": good})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# cap_rows
# --------------------------------------------------------------------------------------------------


def numbered(n: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": [str(i) for i in range(n)], "label": list(range(n))})


def test_cap_rows_takes_the_first_rows_of_train_and_eval_splits() -> None:
    splits = datasets.DatasetDict({"train": numbered(10), "validation_matched": numbered(6),
                                   "validation_mismatched": numbered(2)})
    capped = cap_rows(splits, max_train_samples=3, max_eval_samples=4)
    assert capped["train"]["label"][:] == [0, 1, 2]
    assert capped["validation_matched"]["label"][:] == [0, 1, 2, 3]
    assert capped["validation_mismatched"]["label"][:] == [0, 1]
    uncapped = cap_rows(splits)
    assert {name: split.num_rows for name, split in uncapped.items()} == {
        "train": 10, "validation_matched": 6, "validation_mismatched": 2}


def test_cap_rows_rejects_a_non_positive_cap() -> None:
    with pytest.raises(ValueError, match=r"--max_eval_samples=0"):
        cap_rows(datasets.DatasetDict({"train": numbered(2)}), max_eval_samples=0)


def test_hold_out_moves_a_fixed_random_tenth_of_train_into_every_eval_split() -> None:
    spec = get_task("mnli")  # two evaluation splits: both get the held-out rows
    splits = datasets.DatasetDict({"train": numbered(50), "validation_matched": numbered(6)})
    held = hold_out(splits, spec, 10)
    evaluation = held["validation_matched"]["label"][:]
    assert len(evaluation) == 5 and held["validation_mismatched"]["label"][:] == evaluation
    assert evaluation != [45, 46, 47, 48, 49] and evaluation == sorted(evaluation)  # random rows, in file order
    train = held["train"]["label"][:]
    assert sorted(train + evaluation) == list(range(50)) and train == sorted(train)  # a partition; order kept
    # The same rows whatever else happens (a search scores every trial on them), and for another task.
    assert hold_out(splits, spec, 10)["validation_matched"]["label"][:] == evaluation
    assert hold_out(splits, get_task("sst2"), 10)["validation"]["label"][:] == evaluation


@pytest.mark.parametrize(("rows", "percentage"), [(5, 5), (5, 95)])
def test_hold_out_refuses_a_split_that_leaves_a_side_empty(rows: int, percentage: float) -> None:
    with pytest.raises(ValueError, match=rf"--validation_split_percentage={percentage}: task 'sst2' has {rows} "):
        hold_out(datasets.DatasetDict({"train": numbered(rows)}), get_task("sst2"), percentage)


# --------------------------------------------------------------------------------------------------
# Tokenisation (the real MiniLM tokenizer)
# --------------------------------------------------------------------------------------------------


def test_tokenize_pairs_truncates_without_padding_and_tags_the_task(tokenizer) -> None:
    spec = get_task("stsb")
    splits = prepare_dataset(spec, datasets.Dataset.from_dict({
        "sentence1": ["A man is playing a flute.", "word " * 100],
        "sentence2": ["A man plays.", "another " * 100],
        "label": [3.8, 1.0],
    }))
    tokenized = tokenize_splits(splits, spec, tokenizer, max_seq_length=16)["train"]
    assert set(tokenized.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels", "task"}
    assert tokenized.features["labels"] == FLOAT32
    assert tokenized["task"][:] == ["stsb", "stsb"]
    short, long = tokenized["input_ids"][:]
    assert len(long) == 16 and len(short) < 16  # truncated, and not padded to the maximum
    assert tokenizer.decode(short) == "[CLS] a man is playing a flute. [SEP] a man plays. [SEP]"
    assert tokenized["token_type_ids"][0][-4:] == [1, 1, 1, 1]  # second segment
    assert tokenized["labels"][:] == pytest.approx([3.8, 1.0])


def test_tokenize_single_sentences_of_real_sst2(tokenizer, glue_dir: Path) -> None:
    spec = get_task("sst2")
    splits = cap_rows(load_task_splits(spec, glue_dir), max_train_samples=8, max_eval_samples=4)
    tokenized = tokenize_splits(splits, spec, tokenizer)
    assert {name: split.num_rows for name, split in tokenized.items()} == {"train": 8, "validation": 4}
    assert tokenized["train"].features["labels"] == INT64
    first = tokenizer.decode(tokenized["train"][0]["input_ids"])
    assert first == "[CLS] hide new secretions from the parental units [SEP]"


def test_tokenize_clamps_to_the_model_max_length(tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    spec = get_task("sst2")
    splits = prepare_dataset(spec, datasets.Dataset.from_dict({"sentence": ["word " * 600], "label": [1]}))
    with caplog.at_level(logging.WARNING, logger=data.__name__):
        tokenized = tokenize_splits(splits, spec, tokenizer, max_seq_length=4096)
    assert len(tokenized["train"][0]["input_ids"]) == tokenizer.model_max_length
    assert "exceeds the tokenizer's model_max_length" in caplog.text


def test_tokenize_rejects_unprepared_splits(tokenizer) -> None:
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"sentence": ["a"], "stars": [1]})})
    with pytest.raises(ValueError, match=r"split 'train': column 'label' is missing.*prepare_dataset"):
        tokenize_splits(raw, get_task("sst2"), tokenizer)


# --------------------------------------------------------------------------------------------------
# Label statistics
# --------------------------------------------------------------------------------------------------


def test_class_counts_cover_every_class_even_absent_ones() -> None:
    stats = label_statistics(numbered(2).map(lambda row: {"label": 2 * row["label"]}), REVIEWS)
    np.testing.assert_array_equal(stats.class_counts, [1, 0, 1])
    assert stats.num_rows == 2


def test_regression_moments_by_hand() -> None:
    dataset = datasets.Dataset.from_dict({"labels": [1.0, 2.0, 3.0, 6.0]})  # a tokenised split
    stats = label_statistics(dataset, RATINGS)
    # mean 3; variance (4 + 1 + 0 + 9) / 4 = 3.5; mean square (1 + 4 + 9 + 36) / 4 = 12.5
    assert stats == LabelStatistics(num_rows=4, mean=3.0, variance=3.5, mean_square=12.5)


def test_real_sst2_class_counts(glue_dir: Path) -> None:
    stats = label_statistics(load_task_splits(get_task("sst2"), glue_dir)["train"], get_task("sst2"))
    np.testing.assert_array_equal(stats.class_counts, [29_780, 37_569])


def test_label_statistics_errors() -> None:
    with pytest.raises(ValueError, match=r"no 'labels' or 'label' column"):
        label_statistics(datasets.Dataset.from_dict({"stars": [1]}), REVIEWS)
    with pytest.raises(ValueError, match=r"outside 0..2"):
        label_statistics(datasets.Dataset.from_dict({"label": [0, 3]}), REVIEWS)
    with pytest.raises(ValueError, match=r"split is empty"):
        label_statistics(numbered(1).select([]), REVIEWS)
