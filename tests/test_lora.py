"""LoRA on the shared encoder (`--peft lora`, `hf_mtl.lora`): the flags and their checks; only the adapter, the
pooler and the heads train under every registered strategy; the engine combines the trainable shared parameters
only; a run saves, reloads and resumes exactly; `hf-mtl export` merges the adapter into a model that plain
transformers loads without peft. Tiny BERT (dropout off), real tokenizer, synthetic or real GLUE rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import TASKS, tiny_model, training_arguments
from resume_worker import (
    assert_states_close,
    make_datasets,
    one_thread,
    parameters,
    strategy_args,
)
from safetensors.torch import load_file

from hf_mtl.arguments import parse_train_args
from hf_mtl.cli import main
from hf_mtl.engine.state import StepParameters
from hf_mtl.hub import load_run
from hf_mtl.lora import ADAPTER_FOLDER, DEFAULT_TARGET_MODULES, is_lora, lora_settings
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.weighting import WEIGHTINGS

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def train_data(tokenizer):
    return make_datasets(tokenizer, rows=32)


def lora_model(seed: int = 0, **settings):
    """The tiny three-task model (pooler pooling) with LoRA on its encoder."""
    return tiny_model(TASKS, seed=seed).add_lora(**settings)


def is_adapter(name: str) -> bool:
    return ".lora_" in name or ".modules_to_save." in name


def lora_trainer(output_dir, train_data, tokenizer, weighting="equal", seed=0, **overrides):
    args = training_arguments(output_dir, weighting=weighting, **{**strategy_args(weighting), **overrides})
    return MultiTaskTrainer(model=lora_model(seed), args=args, train_dataset=train_data, processing_class=tokenizer,
                            tasks=list(TASKS))


# ---- flags ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--peft", "lora", "--lora_r", "0"], "--lora_r must be a whole number >= 1"),
    (["--peft", "lora", "--lora_alpha", "0"], "--lora_alpha must be a number > 0"),
    (["--peft", "lora", "--lora_dropout", "1"], "--lora_dropout must be a probability in [0, 1)"),
    (["--peft", "lora", "--lora_target_modules", " , "], "--lora_target_modules must name the encoder's linear layers"),
    (["--lora_r", "4"], "--lora_r set LoRA options, but --peft is not set; add --peft lora"),
])
def test_bad_lora_flags_are_refused_naming_the_flag(flags, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_train_args(["--tasks", "sst2", "--output_dir", str(tmp_path), *flags])


def test_lora_flags_and_their_defaults(tmp_path):
    model_args, _, _ = parse_train_args(["--tasks", "sst2", "--output_dir", str(tmp_path), "--peft", "lora",
                                         "--lora_r", "4", "--lora_target_modules", "query,key,value"])
    settings = lora_settings(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                             model_args.lora_target_modules)
    assert settings == {"r": 4, "lora_alpha": 16.0, "lora_dropout": 0.1, "target_modules": ["query", "key", "value"],
                        "modules_to_save": None}
    assert lora_settings()["target_modules"] == list(DEFAULT_TARGET_MODULES) == ["query", "value"]


def test_lora_in_a_train_config_file(tmp_path):
    config = tmp_path / "lora.yaml"
    config.write_text("tasks: [sst2, mrpc]\npeft: lora\nlora_r: 4\nlora_target_modules: [query, key, value]\n"
                      f"output_dir: {tmp_path / 'out'}\n")
    model_args, _, _ = parse_train_args([str(config)])
    assert (model_args.peft, model_args.lora_r, model_args.lora_target_modules) == ("lora", 4, "query,key,value")


def test_a_target_module_the_encoder_lacks_is_refused_with_its_layer_names():
    with pytest.raises(ValueError, match=r"--lora_target_modules \['qkv'\].*named .*query.*value"):
        lora_model(target_modules="qkv")


def test_without_peft_installed_lora_is_refused_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` sees when it is not installed
    with pytest.raises(ValueError, match=re.escape("pip install 'hf_mtl[peft]'")):
        parse_train_args(["--tasks", "sst2", "--output_dir", str(tmp_path), "--peft", "lora"])
    with pytest.raises(ValueError, match=re.escape("pip install 'hf_mtl[peft]'")):
        lora_model()


def test_importing_the_library_does_not_import_peft():
    # (some transformers modules, its Trainer among them, import peft whenever it is installed; ours do not)
    code = ("import sys, hf_mtl, hf_mtl.modeling, hf_mtl.export, hf_mtl.hub, hf_mtl.inference, hf_mtl.lora; "
            "assert 'peft' not in sys.modules, 'peft imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- what trains ------------------------------------------------------------------------------------

def test_only_the_adapter_the_pooler_and_the_heads_are_trainable_and_the_engine_sees_only_them():
    model = lora_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter(n) or n.startswith("heads.") for n in trainable)
    assert {n.split("attention.self.")[1].split(".")[0] for n in trainable if ".lora_" in n} == {"query", "value"}
    assert any("pooler.modules_to_save" in n for n in trainable)

    params = StepParameters.of(model, [t.name for t in TASKS], heads_apart=True, probes=True)
    assert {n for n, _ in params.named} == trainable  # frozen weights never reach the engine (nor the K x P matrix)
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert {by_id[id(p)] for p in params.combined} == {n for n in trainable if is_adapter(n)}
    for task in TASKS:  # heads are told apart under peft's prefixes too
        assert {by_id[id(p)] for p in params.own_head[task.name]} == {f"heads.{task.name}.classifier.weight",
                                                                     f"heads.{task.name}.classifier.bias"}
    assert by_id[id(params.probe)].endswith("pooler.modules_to_save.default.dense.weight")
    everything = StepParameters.of(model, [t.name for t in TASKS], heads_apart=False, probes=False)
    assert sum(p.numel() for p in everything.combined) == sum(model.get_parameter(n).numel() for n in trainable)


def test_mean_pooling_leaves_the_pooler_frozen():
    from conftest import tiny_encoder_config

    from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel

    config = MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[t.to_dict() for t in TASKS], pooling="mean")
    model = MultiTaskModel(config).add_lora()
    assert not any("pooler" in n for n, p in model.named_parameters() if p.requires_grad)
    assert model.config.peft["modules_to_save"] is None


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_every_strategy_trains_the_adapter_and_heads_and_never_the_frozen_encoder(name, tmp_path, train_data,
                                                                                  tokenizer):
    trainer = lora_trainer(tmp_path, train_data, tokenizer, name, per_device_train_batch_size=4, learning_rate=0.1)
    before = parameters(trainer.model)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    after = parameters(trainer.model)
    assert all(torch.isfinite(p).all() for p in after.values())
    frozen = [n for n in after if not is_adapter(n) and not n.startswith("heads.")]
    assert frozen and all(torch.equal(after[n], before[n]) for n in frozen)
    for part in ("lora_B", "pooler.modules_to_save", *(f"heads.{t.name}." for t in TASKS)):
        moved = [n for n in after if part in n and not torch.equal(after[n], before[n])]
        assert moved, f"no {part} weight moved under {name}"


# ---- save, reload, resume, export -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["grad_normalize", "upgrad"])
def test_a_resumed_lora_run_matches_the_uninterrupted_run(name, tmp_path, train_data, tokenizer):
    settings = {"optim": "adamw_torch", "learning_rate": 2e-3, "max_steps": 6, "save_strategy": "steps",
                "save_steps": 3, "per_device_train_batch_size": 8}
    full = lora_trainer(tmp_path / "full", train_data, tokenizer, name, **settings)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / ADAPTER_FOLDER / "adapter_config.json").is_file()
    resumed = lora_trainer(tmp_path / "resumed", train_data, tokenizer, name, seed=1, **settings)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected, actual = parameters(full.model), parameters(resumed.model)
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert (actual[key] - value).abs().max().item() <= 1e-6 * (value.abs().max().item() + 1e-12), key
    assert_states_close(resumed.weighting.state_dict(), full.weighting.state_dict())
    assert {n for n, p in resumed.model.named_parameters() if p.requires_grad} == \
        {n for n, p in full.model.named_parameters() if p.requires_grad}


def test_cli_trains_reloads_and_exports_a_lora_run_that_loads_without_peft(tmp_path, glue_dir, tiny_checkpoint):
    run, export = tmp_path / "run", tmp_path / "sst2"
    code = main(["train", "--model_name_or_path", tiny_checkpoint, "--tasks", "sst2,mrpc,stsb", "--glue_dir",
                 str(glue_dir), "--max_train_samples", "16", "--max_eval_samples", "16", "--max_steps", "2",
                 "--per_device_train_batch_size", "4", "--learning_rate", "0.01", "--peft", "lora", "--lora_r", "4",
                 "--weighting", "grad_normalize", "--pooling", "pooler", "--do_train", "--do_eval",
                 "--output_dir", str(run), "--report_to", "none", "--save_strategy", "no"])
    assert code == 0
    results = json.loads((run / "all_results.json").read_text())
    assert "eval_glue_score" in results

    model, _ = load_run(run)
    assert is_lora(model.encoder) and model.config.peft["r"] == 4
    assert all(is_adapter(n) or n.startswith("heads.") for n, p in model.named_parameters() if p.requires_grad)
    adapter = load_file(run / ADAPTER_FOLDER / "adapter_model.safetensors")
    assert adapter and all(".lora_" in k or "pooler" in k for k in adapter)
    config = json.loads((run / ADAPTER_FOLDER / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and sorted(config["target_modules"]) == ["query", "value"]
    lora_b = next(k for k in adapter if "lora_B" in k)  # the adapter learned something: B starts at zero
    assert adapter[lora_b].abs().max() > 0
    # peft's own format: the adapter on the base encoder it was trained from is the run's encoder
    from peft import PeftModel
    from transformers import BertModel

    ids = torch.arange(1, 19).reshape(2, 9) * 37
    on_base = PeftModel.from_pretrained(BertModel.from_pretrained(tiny_checkpoint), str(run / ADAPTER_FOLDER)).eval()
    with torch.no_grad():
        assert torch.allclose(on_base(input_ids=ids).pooler_output, model.eval().encoder(input_ids=ids).pooler_output,
                              atol=1e-6)

    # a saved LoRA run continues with its own adapter; its frozen weights stay as they were
    again = tmp_path / "again"
    assert main(["train", "--model_name_or_path", str(run), "--tasks", "sst2,mrpc,stsb", "--glue_dir", str(glue_dir),
                 "--max_train_samples", "16", "--max_steps", "1", "--per_device_train_batch_size", "4",
                 "--learning_rate", "0.01", "--peft", "lora", "--do_train", "--output_dir", str(again),
                 "--report_to", "none", "--save_strategy", "no"]) == 0
    continued, _ = load_run(again)
    assert continued.config.peft == model.config.peft
    before, after = dict(model.named_parameters()), dict(continued.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(after[n], before[n]) for n in before if not is_adapter(n) and not n.startswith("heads."))
    assert any(not torch.equal(after[n], before[n]) for n in before if ".lora_B" in n)

    assert main(["export", str(run), "--task", "sst2", "--output", str(export)]) == 0
    assert not (export / "adapter_config.json").exists()
    probe = (
        "import json, sys, torch; from transformers import AutoTokenizer, pipeline;"
        f"p = pipeline('text-classification', model={str(export)!r}); out = p('A fine film.');"
        "assert 'peft' not in sys.modules, 'peft was imported'; print(json.dumps(out))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    [answer] = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["label"] in ("negative", "positive") and 0 <= answer["score"] <= 1

    # the exported logits are the LoRA model's (export checks it too; here on a real sentence)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export)
    batch = tokenizer(["A fine film.", "Dull and long."], padding=True, return_tensors="pt")
    exported = AutoModelForSequenceClassification.from_pretrained(export).eval()
    with torch.no_grad():
        want = model.eval()(**batch, task="sst2").logits
        got = exported(**batch).logits
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_mean_or_cls_pooled_lora_task_exports_merged_as_custom_code(pooling):
    """The custom-code export of a `cls` / `mean` task takes the encoder with its adapter merged (export_task checks
    the logits against the multi-task model's; a learned adapter makes the merge matter)."""
    import dataclasses

    from hf_mtl.export import export_task
    from hf_mtl.tasks import GLUE_TASKS

    model = tiny_model([dataclasses.replace(GLUE_TASKS["sst2"], pooling=pooling), GLUE_TASKS["stsb"]])
    model.add_lora(r=4, dropout=0.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    exported = export_task(model.eval(), "sst2")
    assert type(exported).__name__ == "PooledEncoderForSequenceClassification"
    assert not any("lora" in name for name, _ in exported.named_parameters())
