"""Sharing a run: push to a local Hub endpoint, the model card, per-task export with identical logits.

The push tests run the real `huggingface_hub` upload code (create repo, preupload, NDJSON commit)
against `LocalHub`, an HTTP server started by the test that speaks that protocol and stores each
commit's files on disk; `huggingface_hub.constants.ENDPOINT` points at it, and the HTTP client is
replaced by one that refuses any other host, so nothing can reach the real Hub.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TASKS

from hf_mtl.cli import main
from hf_mtl.data import cap_rows, load_task_splits, tokenize_splits
from hf_mtl.export import export_task, save_task_model
from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel
from hf_mtl.pipeline import train
from hf_mtl.sampling import TaskCollator
from hf_mtl.tasks import GLUE_TASKS

# --------------------------------------------------------------------------------------------------
# Helpers shared with test_cli_tools.py and test_plotting.py
# --------------------------------------------------------------------------------------------------


def train_run(encoder: Path, glue_dir: Path, output_dir: Path, *flags: str) -> dict[str, float]:
    """`hf-mtl train` of the tiny encoder on 32 real rows of SST-2, MRPC and STS-B: 4 steps, evaluation
    every 2 steps and at the end, logs every step; `pooler` pooling, so that its sentence heads export."""
    return train([
        "--model_name_or_path", str(encoder), "--tasks", "sst2,mrpc,stsb", "--weighting", "geometric",
        "--glue_dir", str(glue_dir), "--max_train_samples", "32", "--max_eval_samples", "24",
        "--max_seq_length", "64", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32",
        "--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "1", "--eval_strategy", "steps",
        "--eval_steps", "2", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
        "--seed", "0", "--pooling", "pooler", "--do_train", "--do_eval", "--output_dir", str(output_dir), *flags,
    ])


def dev_batch(spec, tokenizer, glue_dir: Path, rows: int = 16) -> dict:
    """The first `rows` dev rows of a task, tokenised (no row is long enough to be cut at 128 tokens) and
    padded like the Trainer does."""
    split = tokenize_splits(cap_rows(load_task_splits(spec, glue_dir), 1, rows), spec, tokenizer, 128)["validation"]
    batch = TaskCollator(tokenizer)([dict(row) for row in split])
    assert batch["input_ids"].shape[1] < 128, "a row was truncated; a pipeline would see more tokens"
    batch.pop("labels")
    return batch


# --------------------------------------------------------------------------------------------------
# A local endpoint speaking the Hub's upload protocol
# --------------------------------------------------------------------------------------------------


class LocalHub:
    """Create-repo, README metadata validation, preupload and commit endpoints of the Hub (every file is
    answered "regular", so it travels base64-encoded in the NDJSON commit); committed files land under
    `root/<repo_id>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commits: list[tuple[str, str, list[str]]] = []  # (repo id, summary, paths)
        self.created: list[str] = []
        self.validated: list[bool] = []  # one entry per README.md metadata check
        self.unexpected: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
                    hub.created.append(repo_id)
                    return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})
                if path == "/api/validate-yaml":  # the README's metadata block must be a YAML mapping
                    content = json.loads(body)["content"]
                    front = re.match(r"---\n(.*?)\n---\n", content, re.DOTALL)
                    try:
                        valid = front is not None and isinstance(yaml.safe_load(front.group(1)), dict)
                    except yaml.YAMLError:
                        valid = False
                    hub.validated.append(valid)
                    if not valid:
                        return self._json({"errors": [{"message": "no valid YAML metadata block"}]}, 400)
                    return self._json({"errors": [], "warnings": []})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
                if match is None:
                    hub.unexpected.append(f"POST {self.path}")
                    return self._json({"error": "not implemented"}, 404)
                repo_id, action = match.group(1), match.group(2)
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._json({"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                    ]})
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                summary = next(item["value"]["summary"] for item in lines if item["key"] == "header")
                paths = []
                for item in lines:
                    if item["key"] == "file":
                        target = hub.root / repo_id / item["value"]["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(base64.b64decode(item["value"]["content"]))
                        paths.append(item["value"]["path"])
                    elif item["key"] != "header":
                        hub.unexpected.append(f"commit operation {item['key']}")
                hub.commits.append((repo_id, summary, paths))
                oid = hashlib.sha1(body).hexdigest()
                return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})

            def do_GET(self) -> None:
                hub.unexpected.append(f"GET {self.path}")
                self._json({"error": "not implemented"}, 404)

            do_HEAD = do_GET

            def _json(self, value: object, status: int = 200) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def files(self, repo_id: str) -> set[str]:
        folder = self.root / repo_id
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """Point huggingface_hub (and transformers' shared HfApi) at a `LocalHub`; refuse every other host."""
    import huggingface_hub
    import transformers.utils.hub
    from huggingface_hub.utils import _http

    hub = LocalHub(tmp_path / "hub")

    def guard(request) -> None:
        if request.url.host != "127.0.0.1":
            raise RuntimeError(f"test tried to reach {request.url}; only the local Hub endpoint is allowed")

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # rebuilt on first use, with the local endpoint
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    huggingface_hub.set_client_factory(
        lambda: _http.httpx2.Client(event_hooks={"request": [guard]}, follow_redirects=True, timeout=60)
    )
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(_http.default_client_factory)
        hub.close()
    assert not hub.unexpected, f"requests the local Hub does not implement: {hub.unexpected}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_checkpoint, glue_dir) -> Path:
    output = tmp_path_factory.mktemp("run")
    train_run(tiny_checkpoint, glue_dir, output)
    return output


# --------------------------------------------------------------------------------------------------
# Push
# --------------------------------------------------------------------------------------------------


def run_usage_snippet(card: str, repo_id: str, folder: Path) -> str:
    """Execute the card's Python snippet with the repository id replaced by a local folder; its stdout."""
    code = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert f'"{repo_id}"' in code
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code.replace(f'"{repo_id}"', json.dumps(str(folder))), "model-card-snippet", "exec"), {})  # noqa: S102 (the card's own snippet, run as a reader would)
    return output.getvalue()


def test_train_push_to_hub_uploads_model_tokenizer_config_and_card(local_hub, tiny_checkpoint, tokenizer, glue_dir, tmp_path):
    from transformers import AutoModel

    output = tmp_path / "run"
    results = train_run(tiny_checkpoint, glue_dir, output, "--push_to_hub", "--hub_model_id", "tester/tiny-mtl")
    repo = local_hub.root / "tester" / "tiny-mtl"

    files = local_hub.files("tester/tiny-mtl")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "training_curves.png", "trainer_state.json", "eval_results.json"} <= files, files
    assert not any(f.startswith(("checkpoint-", "_")) for f in files)
    assert local_hub.created == ["tester/tiny-mtl"]
    assert (repo / "model.safetensors").read_bytes() == (output / "model.safetensors").read_bytes()

    config = json.loads((repo / "config.json").read_text())
    assert config["model_type"] == "hf_mtl"
    assert [t["name"] for t in config["tasks"]] == ["sst2", "mrpc", "stsb"]
    assert config["tasks"][1]["label_names"] == ["not_equivalent", "equivalent"]
    assert config["tasks"][2]["kind"] == "regression"
    assert config["weighting"] == {"name": "geometric"}

    card = (repo / "README.md").read_text()
    for expected in ("fine-tuned from a local encoder", "nyu-mll/glue", "`--weighting geometric`", "Σ log L_i", "| sst2 (validation) |",
                     "| stsb (validation) |", "**GLUE score**", f"{results['eval_glue_score']:.4g}",
                     "learning_rate: 0.001", "max_steps: 4", "![", "training_curves.png)"):
        assert expected in card, expected
    assert f"{results['eval_mrpc_f1']:.4g}" in card

    # Reloaded from the uploaded files, through the class and through AutoModel: the same evaluation
    # as the one run at the end of training, so the same predictions on every dev row.
    from hf_mtl.arguments import DataArguments
    from hf_mtl.inference import evaluate_run

    reloaded = evaluate_run(repo, data_args=DataArguments(glue_dir=str(glue_dir), max_seq_length=64, max_eval_samples=24),
                            output_dir=tmp_path / "reeval")
    for key, value in results.items():
        if key.startswith("eval_") and not key.endswith(("runtime", "per_second", "preparation_time")):
            assert reloaded[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    auto = AutoModel.from_pretrained(repo).eval()
    assert type(auto) is MultiTaskModel
    trained = MultiTaskModel.from_pretrained(output).eval()
    for spec in TASKS:
        batch = dev_batch(spec, tokenizer, glue_dir)
        with torch.no_grad():
            assert torch.equal(auto(**batch).logits, trained(**batch).logits), spec.name

    # The card's usage snippet runs against the uploaded files and prints one line per task.
    printed = run_usage_snippet(card, "tester/tiny-mtl", repo).splitlines()
    assert [line.split()[0] for line in printed] == ["sst2", "mrpc", "stsb"]
    assert printed[0].split()[1] in ("negative", "positive")
    assert printed[1].split()[1] in ("not_equivalent", "equivalent")
    float(printed[2].split()[1])


def test_push_command_uploads_a_finished_run(local_hub, tiny_run):
    assert main(["push", str(tiny_run), "--hub_model_id", "tester/pushed-later"]) == 0
    files = local_hub.files("tester/pushed-later")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "training_curves.png"} <= files
    card = (local_hub.root / "tester" / "pushed-later" / "README.md").read_text()
    assert "**GLUE score**" in card and "learning_rate: 0.001" in card
    assert local_hub.commits[-1][1] == "Upload hf_mtl run"


def test_export_push_to_hub(local_hub, tiny_run, tmp_path):
    assert main(["export", str(tiny_run), "--task", "stsb", "--output", str(tmp_path / "stsb"),
                 "--push_to_hub", "--hub_model_id", "tester/tiny-stsb"]) == 0
    files = local_hub.files("tester/tiny-stsb")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= files
    config = json.loads((local_hub.root / "tester" / "tiny-stsb" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "stsb"}
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert len(local_hub.commits) == 1


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb"])
def test_export_gives_the_multitask_logits_on_real_rows(task, tiny_run, tokenizer, glue_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = MultiTaskModel.from_pretrained(tiny_run).eval()
    folder = save_task_model(tiny_run, task, tmp_path / task)
    exported = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = dev_batch(GLUE_TASKS[task], tokenizer, glue_dir)
    assert batch["attention_mask"].min() == 0, "rows of different lengths: padding is exercised"
    with torch.no_grad():
        expected = model(**batch).logits
        actual = exported(**{k: v for k, v in batch.items() if k != "task"}).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    spec = GLUE_TASKS[task]
    if spec.kind == "regression":
        assert exported.config.problem_type == "regression"
    else:
        assert exported.config.id2label == dict(enumerate(spec.label_names))
        assert exported.config.label2id == {name: i for i, name in enumerate(spec.label_names)}
    assert (folder / "tokenizer.json").is_file() and (folder / "README.md").is_file()


def test_export_of_minilm_equals_the_multitask_model_and_pipeline_names_labels(minilm_path, tokenizer, glue_dir, tmp_path):
    from transformers import pipeline

    tasks = [GLUE_TASKS["mrpc"], GLUE_TASKS["sst2"]]
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(minilm_path, tasks).eval()
    with torch.no_grad():  # non-trivial heads, so that both labels occur
        model.heads["mrpc"].classifier.weight.normal_(0, 2.0)
    folder = save_task_model(model, "mrpc", tmp_path / "mrpc", tokenizer=tokenizer)
    exported = export_task(model, "mrpc").eval()
    batch = dev_batch(GLUE_TASKS["mrpc"], tokenizer, glue_dir)
    with torch.no_grad():
        expected = model(**batch).logits
        actual = exported(**{k: v for k, v in batch.items() if k != "task"}).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)

    classify = pipeline("text-classification", model=str(folder), device="cpu")
    rows = load_task_splits(GLUE_TASKS["mrpc"], glue_dir)["validation"].select(range(16))
    results = classify([{"text": r["sentence1"], "text_pair": r["sentence2"]} for r in rows])
    names = ["not_equivalent", "equivalent"]
    assert [r["label"] for r in results] == [names[i] for i in expected.argmax(-1).tolist()]
    assert [r["score"] for r in results] == pytest.approx(expected.softmax(-1).max(-1).values.tolist(), rel=1e-4)


FAMILIES = {  # tiny configurations of the encoder families the export maps exactly
    "albert": {"embedding_size": 16},
    "ernie": {},
    "megatron-bert": {},
    "mobilebert": {"embedding_size": 16, "intra_bottleneck_size": 32, "true_hidden_size": 32, "num_feedforward_networks": 1},
    "roc_bert": {"pronunciation_vocab_size": 10, "shape_vocab_size": 10},
    "fnet": {},
}


def tiny_family_model(family: str, **overrides) -> MultiTaskModel:
    from transformers import AutoConfig

    config = AutoConfig.for_model(family, vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=37, **overrides)
    torch.manual_seed(0)
    return MultiTaskModel(MultiTaskConfig(encoder=config.to_dict(), tasks=[t.to_dict() for t in TASKS])).eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_export_maps_other_pooler_families_exactly(family):
    model = tiny_family_model(family, **FAMILIES[family])
    exported = export_task(model, "mrpc").eval()
    input_ids = torch.randint(1, 100, (3, 10))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=input_ids).logits,
                                   model(input_ids=input_ids, task="mrpc").logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("family", "overrides", "reason"), [
    ("roberta", {}, "another head shape"),
    ("distilbert", {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 37}, "has no pooler"),
    ("electra", {}, "has no pooler"),
])
def test_export_refuses_encoders_without_an_exact_mapping(family, overrides, reason):
    model = tiny_family_model(family, **overrides)
    with pytest.raises(ValueError, match=f"(?s)cannot export task 'mrpc' of a '{family}' encoder.*{reason}.*Exportable families: BERT"):
        export_task(model, "mrpc")


def test_card_names_the_weighting_hyperparameters_and_works_without_matplotlib(tiny_run, tmp_path, monkeypatch):
    import sys

    from hf_mtl.model_card import write_model_card

    config = MultiTaskModel.from_pretrained(tiny_run).config
    config.weighting = {"name": "power", "gamma": 2.0}
    history = json.loads((tiny_run / "trainer_state.json").read_text())["log_history"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    card = write_model_card(tmp_path, config, history, {"learning_rate": 0.1}, model_id="tester/x").read_text()
    assert "`--weighting power`: generalized mean ((1/K) Σ L_i^γ)^(1/γ)" in card
    assert "Hyperparameters: `gamma=2.0`" in card
    assert 'pip install "hf_mtl[plot]"' in card and "![" not in card
    assert "- learning_rate: 0.1" in card and "| mrpc (validation) |" in card
    assert not list(tmp_path.glob("*.png"))


def test_base_model_of_the_packaged_minilm_is_its_hub_id(minilm_path):
    from hf_mtl.model_card import base_model_id

    assert base_model_id({"_name_or_path": minilm_path}) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_id({"_name_or_path": "google-bert/bert-base-uncased"}) == "google-bert/bert-base-uncased"
    assert base_model_id({"_name_or_path": "/some/local/folder"}) is None


def test_export_of_an_unknown_task_names_the_tasks(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--task", "cola", "--output", str(tmp_path / "x")]) == 2
    assert "--task 'cola' is not a task of this model; its tasks are ['sst2', 'mrpc', 'stsb']" in capsys.readouterr().err
