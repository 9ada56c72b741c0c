"""Issue #17, data files and label ranges: inputs that used to be trained on silently, crash the TSV reader
or fail without naming the file now either work or are refused naming the file, the line, the value and the fix."""

from __future__ import annotations

import csv
import gzip
import math
import os
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import tiny_model

from hf_mtl.cli import main
from hf_mtl.data import (
    label_statistics,
    load_task_splits,
    prepare_dataset,
    read_tsv,
    tokenize_splits,
)
from hf_mtl.inference import read_task_inputs
from hf_mtl.modeling import MultiTaskConfig
from hf_mtl.tasks import GLUE_TASKS, TaskSpec

STSB = GLUE_TASKS["stsb"]
SST2 = GLUE_TASKS["sst2"]
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
LONG = 200_000  # characters: csv's default field limit is 131,072


@pytest.fixture(autouse=True)
def _no_glue_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLUE_DIR", raising=False)


def stsb_row(index: int, score: str, sentence2: str = "A jet is taking off.") -> str:
    return f"{index}\tmain-captions\tMSRvid\t2012test\t{index:04d}\tnone\tnone\tA plane is taking off.\t{sentence2}\t{score}"


def write_stsb(folder: Path, split: str, scores: list[str]) -> Path:
    path = folder / "STS-B" / split
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([STSB_HEADER, *(stsb_row(i, s) for i, s in enumerate(scores))]) + "\n", encoding="utf-8")
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def regression(label_range=None, name="rating") -> TaskSpec:
    return TaskSpec(name=name, kind="regression", num_labels=1, text_columns=("text",), label_range=label_range)


# --------------------------------------------------------------------------------------------------
# 1. Label ranges
# --------------------------------------------------------------------------------------------------


def test_glue_stsb_declares_the_documented_0_to_5_range_and_no_other_task_has_one() -> None:
    assert STSB.label_range == (0.0, 5.0)
    assert all(spec.label_range is None for name, spec in GLUE_TASKS.items() if name != "stsb")


@pytest.mark.parametrize(("split", "score", "line"), [("train.tsv", "5.5", 3), ("dev.tsv", "-0.5", 2),
                                                      ("train.tsv", "5.0001", 4)])
def test_stsb_score_outside_0_to_5_names_file_line_value_and_range(tmp_path: Path, split, score, line) -> None:
    scores = ["2.5", "3.0", "1.0"]
    scores[line - 2] = score
    path = write_stsb(tmp_path, split, scores)
    with pytest.raises(ValueError) as error:
        load_task_splits(STSB, tmp_path)
    message = str(error.value)
    assert f"task 'stsb': {path}, line {line}: label {score!r} is not a valid regression label (1 such row(s))" in message
    assert "from 0 to 5, both included (TaskSpec label_range of 'stsb')" in message
    assert "Fix or remove the row(s)" in message and "label_range" in message


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "1e39"])  # 1e39 is finite text but inf as float32
def test_non_finite_score_is_refused_naming_the_line(tmp_path: Path, score: str) -> None:
    path = write_stsb(tmp_path, "train.tsv", ["1.0", score])
    with pytest.raises(ValueError, match=rf"{path}, line 3: label '{score}' is not a valid regression label .*"
                                         r"valid values are numbers from 0 to 5, both included"):
        load_task_splits(STSB, tmp_path)


def test_a_target_too_large_for_float32_is_refused_without_a_range_too() -> None:
    dataset = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1.0, 1e39]})
    with pytest.raises(ValueError, match=r"split 'train', row 1: label 1e\+39 is not a valid regression label.*"
                                         r"valid values are finite numbers"):
        prepare_dataset(regression(), dataset)


def test_boundaries_are_included(tmp_path: Path) -> None:
    write_stsb(tmp_path, "train.tsv", ["0.000", "5.000", "0", "5"])
    assert load_task_splits(STSB, tmp_path)["train"]["label"] == [0.0, 5.0, 0.0, 5.0]
    # A bound that float32 cannot hold exactly: the stored 0.1 equals the bound 0.1, as text and as float32.
    spec = regression((0, 0.1))
    assert prepare_dataset(spec, datasets.Dataset.from_dict({"text": ["a"], "label": ["0.1"]}))["train"]["label"] == \
        [pytest.approx(0.1)]
    float32 = datasets.Dataset.from_dict({"text": ["a"], "label": [0.1]},
                                         features=datasets.Features(text=datasets.Value("string"),
                                                                    label=datasets.Value("float32")))
    prepare_dataset(spec, float32)
    label_statistics(float32.rename_column("label", "labels"), spec)


def test_a_dataset_source_is_checked_against_the_range_naming_split_and_row() -> None:
    data = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [2.0, 3.0]}),
        "validation": datasets.Dataset.from_dict({"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"],
                                                  "label": [1.0, 5.5, -0.25]}),
    })
    with pytest.raises(ValueError, match=r"task 'stsb': split 'validation', row 1: label 5.5 is not a valid regression "
                                         r"label \(2 such row\(s\)\); valid values are numbers from 0 to 5"):
        prepare_dataset(STSB, data)
    custom = regression((1, 10))  # a user's own range
    with pytest.raises(ValueError, match=r"row 0: label 0.5 .* from 1 to 10, both included \(TaskSpec label_range of 'rating'\)"):
        prepare_dataset(custom, datasets.Dataset.from_dict({"text": ["a"], "label": [0.5]}))
    assert prepare_dataset(custom, datasets.Dataset.from_dict({"text": ["a"], "label": [10]}))["train"]["label"] == [10.0]


def test_label_statistics_of_tokenised_data_outside_the_range_names_the_row() -> None:
    labels = datasets.Dataset.from_dict({"labels": [1.0, 2.0, 5.5, -1.0]},
                                        features=datasets.Features(labels=datasets.Value("float32")))
    with pytest.raises(ValueError, match=r"task 'stsb': row 2 has label 5.5, not a valid regression label \(2 such "
                                         r"row\(s\)\); valid values are numbers from 0 to 5"):
        label_statistics(labels, STSB)
    assert label_statistics(labels, regression()).num_rows == 4  # no range: any finite target
    assert label_statistics(labels.select([0, 1]), STSB).mean == 1.5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "classification", "num_labels": 2, "label_range": (0, 1)},
     (r"\(0, 1\) is for a regression task's targets; a classification task's labels are the class ids "
     r"0..1. Drop label_range")),
    ({"label_range": (5, 0)}, r"\(5, 0\) has low >= high"),
    ({"label_range": (1, 1)}, r"has low >= high"),
    ({"label_range": (0, math.nan)}, r"must be two finite numbers \(low, high\)"),
    ({"label_range": (0, math.inf)}, r"must be two finite numbers"),
    ({"label_range": (0,)}, r"must be two finite numbers"),
    ({"label_range": ("0", "5")}, r"must be two finite numbers"),
    ({"label_range": (False, True)}, r"must be two finite numbers"),
    ({"label_range": 5}, r"=5 must be two finite numbers"),
])
def test_invalid_label_range_is_refused_by_the_spec(kwargs, message) -> None:
    values = {"name": "rating", "kind": "regression", "num_labels": 1, "text_columns": ("text",)}
    with pytest.raises(ValueError, match=rf"TaskSpec 'rating': label_range.*{message}"):
        TaskSpec(**{**values, **kwargs})


def test_label_range_is_normalised_to_floats_and_the_spec_stays_hashable() -> None:
    spec = regression([0, np.int64(5)])
    assert spec.label_range == (0.0, 5.0) and isinstance(spec.label_range, tuple)
    assert hash(spec) == hash(regression((0.0, 5.0)))


def test_label_range_round_trips_through_a_saved_model_and_old_configs_still_load(tmp_path: Path) -> None:
    custom = regression((1, 10))
    model = tiny_model([STSB, custom])
    model.config.save_pretrained(tmp_path)
    loaded = MultiTaskConfig.from_pretrained(tmp_path).task_specs
    assert [spec.label_range for spec in loaded] == [(0.0, 5.0), (1.0, 10.0)]
    # A config saved before label_range existed: GLUE's STS-B gets its documented range, other tasks none,
    # and a user's own task that reuses a GLUE name with another kind still loads.
    old = [{key: value for key, value in task.items() if key != "label_range"} for task in model.config.tasks]
    old.append({"name": "wnli", "kind": "regression", "num_labels": 1, "text_columns": ["text"]})
    old.append({"name": "cola", "kind": "classification", "num_labels": 2, "text_columns": ["sentence"]})
    specs = MultiTaskConfig(encoder=model.config.encoder.to_dict(), tasks=old).task_specs
    assert [spec.label_range for spec in specs] == [(0.0, 5.0), None, None, None]
    stsb_as_classes = {"name": "stsb", "kind": "classification", "num_labels": 6, "text_columns": ["a"]}
    assert MultiTaskConfig(tasks=[stsb_as_classes]).task_specs[0].label_range is None
    # An explicit null is kept: the user said "no range".
    assert MultiTaskConfig(tasks=[{**STSB.to_dict(), "label_range": None}]).task_specs[0].label_range is None
    with pytest.raises(ValueError, match=r"tasks\[0\] is not a valid task: TaskSpec 'stsb': label_range=\[5, 0\] has low"):
        MultiTaskConfig(tasks=[{**STSB.to_dict(), "label_range": [5, 0]}])


def test_hf_mtl_train_refuses_an_out_of_range_score_with_exit_2(tmp_path: Path, tiny_checkpoint, capsys) -> None:
    path = write_stsb(tmp_path / "glue", "train.tsv", ["1.0", "2.0", "5.5"])
    code = main(["train", "--tasks", "stsb", "--glue_dir", str(tmp_path / "glue"), "--model_name_or_path",
                 tiny_checkpoint, "--output_dir", str(tmp_path / "out"), "--do_train", "--max_steps", "1",
                 "--report_to", "none"])
    assert code == 2
    assert f"hf-mtl: error: task 'stsb': {path}, line 4: label '5.5' is not a valid regression label" in \
        capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


# --------------------------------------------------------------------------------------------------
# 2. Long fields
# --------------------------------------------------------------------------------------------------


def test_a_200000_character_sentence_is_read_for_training_and_truncated_by_the_tokenizer(tmp_path: Path, tokenizer) -> None:
    long = "word " * (LONG // 5)
    write_bytes(tmp_path / "SST-2/train.tsv", f"sentence\tlabel\nshort \t0\n{long}\t1\n".encode())
    limit = csv.field_size_limit()
    splits = load_task_splits(SST2, tmp_path)
    assert csv.field_size_limit() == limit  # the process-global limit is restored
    assert len(splits["train"]["sentence"][1]) == LONG
    tokenized = tokenize_splits(splits, SST2, tokenizer, max_seq_length=32)["train"]
    assert [len(ids) for ids in tokenized["input_ids"]] == [3, 32]
    assert tokenized["labels"] == [0, 1]


def test_a_long_field_in_a_pair_task_dev_file_and_a_headerless_cola_file(tmp_path: Path) -> None:
    long = "x" * LONG
    path = write_stsb(tmp_path, "dev.tsv", ["1.0"])
    path.write_text(path.read_text() + stsb_row(1, "2.0", sentence2=long) + "\n")
    assert load_task_splits(STSB, tmp_path)["validation"]["sentence2"][1] == long
    write_bytes(tmp_path / "CoLA/train.tsv", f"gj04\t1\t\t{'y' * 1_000_000}\ngj04\t0\t*\tshort".encode())
    assert len(load_task_splits(GLUE_TASKS["cola"], tmp_path)["train"]["sentence"][0]) == 1_000_000


def test_the_predict_reader_reads_a_200000_character_sentence(tmp_path: Path) -> None:
    long = "a " * (LONG // 2)
    path = write_bytes(tmp_path / "in.tsv", f"index\tsentence\n7\tfine\n8\t{long}\n".encode())
    prepared, index = read_task_inputs(SST2, path)
    assert index == ["7", "8"] and prepared["sentence"] == ["fine", long]


def test_hf_mtl_predict_on_a_200000_character_sentence(tmp_path: Path, tokenizer, capsys) -> None:
    run = tmp_path / "run"
    tiny_model([SST2]).save_pretrained(run)
    tokenizer.save_pretrained(run)
    write_bytes(tmp_path / "in.tsv", f"sentence\n{'b ' * (LONG // 2)}\nshort\n".encode())
    assert main(["predict", str(run), "--task", "sst2", "--input", str(tmp_path / "in.tsv"),
                 "--output", str(tmp_path / "out.tsv")]) == 0
    lines = (tmp_path / "out.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["0", "1"]
    # Not UTF-8: exit 2 with the file, line and fix.
    write_bytes(tmp_path / "latin1.tsv", b"sentence\nfine\nna\xefve\n")
    assert main(["predict", str(run), "--task", "sst2", "--input", str(tmp_path / "latin1.tsv"),
                 "--output", str(tmp_path / "out.tsv")]) == 2
    err = capsys.readouterr().err
    assert "hf-mtl: error: " in err and f"{tmp_path / 'latin1.tsv'}, line 3: byte 0xef" in err


# --------------------------------------------------------------------------------------------------
# 3. Files that are not UTF-8
# --------------------------------------------------------------------------------------------------


def test_latin1_in_a_glue_train_file_names_file_line_byte_and_fix(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "SST-2/train.tsv", b"sentence\tlabel\nfine \t1\ncaf\xe9 au lait \t1\n")
    limit = csv.field_size_limit()
    with pytest.raises(ValueError) as error:
        load_task_splits(SST2, tmp_path)
    assert not isinstance(error.value, UnicodeDecodeError)
    assert str(error.value) == (
        f"{path}, line 3: byte 0xe9 (column 4, in \"caf\\xe9 au lait \\t1\") is not UTF-8 (invalid continuation "
        f"byte); it looks like Latin-1 / Windows-1252. Save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} "
        "> utf8.tsv, and pass that."
    )
    assert csv.field_size_limit() == limit


def test_latin1_in_a_dev_file_after_a_long_valid_part_and_a_bom(tmp_path: Path) -> None:
    # Far past the first read buffer (the position of a decoding error is relative to it), after MRPC's BOM.
    path = write_stsb(tmp_path, "dev.tsv", ["1.0"] * 3000)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + stsb_row(3000, "2.0", "\xc0 la carte").encode("latin1"))
    with pytest.raises(ValueError, match=rf"{path}, line 3002: byte 0xc0 \(column 74, in \"\.\.\.e\\tnone\\tA plane is taking "
                                         r"off.\\t\\xc0 la carte\\t2.0\"\) is not UTF-8 .*iconv -f latin1 -t utf-8"):
        load_task_splits(STSB, tmp_path)


def test_latin1_and_utf16_predict_inputs_name_the_file_and_the_conversion(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "in.tsv", b"sentence\nfine\nna\xefve\n")
    with pytest.raises(ValueError, match=rf"{path}, line 3: byte 0xef \(column 3, in \"na\\xefve\"\)"):
        read_task_inputs(SST2, path)
    utf16 = write_bytes(tmp_path / "excel.tsv", "sentence\nfine\n".encode("utf-16"))
    with pytest.raises(ValueError, match=rf"{utf16}, line 1: byte 0xff .*UTF-16 byte-order mark.*iconv -f utf-16 -t utf-8"):
        read_task_inputs(SST2, utf16)
    windows = write_bytes(tmp_path / "quotes.tsv", b"sentence\n\x93quoted\x94\n")  # Windows-1252 curly quotes
    with pytest.raises(ValueError, match=r"line 2: byte 0x93 \(column 1, .*iconv -f cp1252 -t utf-8"):
        read_task_inputs(SST2, windows)
    packed = write_bytes(tmp_path / "in.tsv.gz", gzip.compress(b"sentence\nfine\n" * 50))
    with pytest.raises(ValueError, match=rf"{packed} is gzip-compressed, not a tab-separated text file. Decompress it"):
        read_task_inputs(SST2, packed)
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("in.tsv", "sentence\nfine\n" * 50)
    with pytest.raises(ValueError, match=rf"{archive} is a zip archive \(or an .xlsx workbook\), not a tab-separated"):
        read_task_inputs(SST2, archive)


# --------------------------------------------------------------------------------------------------
# 4. Files that are empty, folders, missing or unreadable
# --------------------------------------------------------------------------------------------------


def test_an_empty_glue_file_says_it_is_empty(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "SST-2/train.tsv", b"")
    with pytest.raises(ValueError, match=rf"task 'sst2': {path} is empty \(no line with text\). Put the original GLUE "
                                         r"SST-2 file there, or remove it"):
        load_task_splits(SST2, tmp_path)
    blank = write_bytes(tmp_path / "CoLA/dev.tsv", b"\n\n")  # no header in CoLA: blank lines only
    with pytest.raises(ValueError, match=rf"task 'cola': {blank} is empty"):
        load_task_splits(GLUE_TASKS["cola"], tmp_path)


def test_a_folder_or_a_broken_link_where_a_glue_file_belongs_is_not_skipped(tmp_path: Path) -> None:
    write_bytes(tmp_path / "SST-2/dev.tsv", b"sentence\tlabel\nfine \t1\n")
    (tmp_path / "SST-2/train.tsv").mkdir()
    with pytest.raises(ValueError, match=rf"task 'sst2': {tmp_path / 'SST-2/train.tsv'} is a folder, not a "
                                         r"tab-separated file"):
        load_task_splits(SST2, tmp_path)
    (tmp_path / "SST-2/train.tsv").rmdir()
    (tmp_path / "SST-2/train.tsv").symlink_to(tmp_path / "gone.tsv")
    with pytest.raises(FileNotFoundError, match=r"is a symbolic link to '.*gone.tsv', which does not exist"):
        load_task_splits(SST2, tmp_path)


def test_read_tsv_names_a_missing_file_a_folder_and_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path / 'nope.tsv'}: no such file. Check the path; a relative "
                                                r"path is read from /"):
        read_tsv(tmp_path / "nope.tsv")
    with pytest.raises(ValueError, match=rf"^{tmp_path} is a folder, not a tab-separated file"):
        read_tsv(tmp_path)
    if os.geteuid() == 0:
        return  # root reads any file: no unreadable file to test with
    path = write_bytes(tmp_path / "locked.tsv", b"sentence\nfine\n")
    path.chmod(0)
    with pytest.raises(ValueError, match=rf"{path} cannot be read \(Permission denied\).*chmod u\+r"):
        read_tsv(path)
