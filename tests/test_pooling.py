"""Pooling for sentence-level heads (`hf_mtl.pooling`): what each one reads, the per-task override, the saved
config, and `--pooling` through `hf-mtl train` to the model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel
from hf_mtl.tasks import GLUE_TASKS

from conftest import tiny_encoder_config


def model_with(pooling, per_task=None):
    torch.manual_seed(0)
    specs = [GLUE_TASKS["sst2"], GLUE_TASKS["stsb"]]
    if per_task:
        specs = [dataclasses.replace(s, pooling=per_task.get(s.name)) for s in specs]
    config = MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[s.to_dict() for s in specs], pooling=pooling)
    return MultiTaskModel(config).eval()


def batch(tokenizer):
    encoded = tokenizer(["a gripping , beautifully acted film", "dull"], padding=True, return_tensors="pt")
    return {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_each_pooling_feeds_the_head_what_it_says(pooling, tokenizer):
    model, inputs = model_with(pooling), batch(tokenizer)
    with torch.no_grad():
        logits = model(**inputs, task="sst2").logits
        outputs = model.encoder(**inputs)
        hidden, mask = outputs.last_hidden_state, inputs["attention_mask"]
        expected_input = {
            "pooler": outputs.pooler_output,
            "cls": hidden[:, 0],
            # by hand: the mean over the real tokens of each row (the second row is padded)
            "mean": torch.stack([hidden[i, : int(mask[i].sum())].mean(0) for i in range(len(hidden))]),
        }[pooling]
        head = model.heads["sst2"].classifier
        torch.testing.assert_close(logits, expected_input @ head.weight.T + head.bias)
    assert mask[1].sum() < mask.shape[1], "the batch must hold padding, or mean pooling is not tested"


def test_a_task_overrides_the_model_default_and_the_config_keeps_both(tokenizer, tmp_path):
    model = model_with("mean", per_task={"stsb": "cls"})
    assert model._pooling == {"sst2": "mean", "stsb": "cls"}
    model.save_pretrained(tmp_path)
    loaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    assert loaded.config.pooling == "mean" and loaded._pooling == {"sst2": "mean", "stsb": "cls"}
    inputs = batch(tokenizer)
    with torch.no_grad():
        for task in ("sst2", "stsb"):
            torch.testing.assert_close(loaded(**inputs, task=task).logits, model(**inputs, task=task).logits)


def test_a_config_saved_before_pooling_existed_reads_the_pooler():
    config = MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[GLUE_TASKS["sst2"].to_dict()])
    assert config.pooling is None and MultiTaskModel(config)._pooling == {"sst2": "pooler"}


@pytest.mark.parametrize("value", ["max", "", 3])
def test_a_bad_pooling_is_refused_naming_the_choices(value):
    with pytest.raises(ValueError, match=r"pooling=.* must be one of pooler, cls, mean"):
        MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[GLUE_TASKS["sst2"].to_dict()], pooling=value)
    with pytest.raises(ValueError, match=r"pooling=.* is not one of pooler, cls, mean"):
        dataclasses.replace(GLUE_TASKS["sst2"], pooling=value)


@pytest.mark.parametrize(("flags", "expected"), [(["--pooling", "cls"], "cls"), ([], "mean")])
def test_the_pooling_flag_reaches_the_model_and_train_defaults_to_mean(flags, expected, tiny_checkpoint, glue_dir,
                                                                      tmp_path):
    from hf_mtl.pipeline import train

    out = tmp_path / "run"
    train(["--model_name_or_path", tiny_checkpoint, "--tasks", "sst2", "--glue_dir", str(glue_dir), *flags,
           "--max_train_samples", "8", "--max_steps", "1", "--per_device_train_batch_size", "4", "--do_train",
           "--output_dir", str(out), "--report_to", "none", "--save_strategy", "no"])
    assert MultiTaskModel.from_pretrained(out).config.pooling == expected
