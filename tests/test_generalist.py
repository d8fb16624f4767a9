"""One student, two outputs (issue 26, the generalist): a tiny sentiment classifier teaches the
student's logits and a tiny sentence-embedding teacher of another vocabulary teaches its
mean-pooled last hidden state; the student exports as one artifact with both outputs (ONNX fp32
and int8, OpenVINO), parity checks each, bench measures each with its own metric; recipes that
cannot work are refused with the key that is wrong."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from conftest import NEGATIVE, POSITIVE, make_sentences, teachers_recipe, tiny_bert_config
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.distillation import distill
from edgedistill.errors import ConfigError
from edgedistill.numerics import mean_pool

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST_EXPORT = {"parity_samples": 8, "calib_samples": 8}


@pytest.fixture(scope="module")
def embedding_teacher(tmp_path_factory):
    """A sentence-embedding teacher (BertModel, 1 layer x 64: the student's width) with its own
    WordPiece vocabulary of 250 pieces, trained on other sentences."""
    from transformers import BertModel

    from edgedistill.testing import train_bert_wordpiece

    corpus = [t.upper() for t, _ in make_sentences(300, seed=11)] + POSITIVE + NEGATIVE
    tokenizer = train_bert_wordpiece(corpus, vocab_size=250, model_max_length=128)
    folder = tmp_path_factory.mktemp("embedder")
    torch.manual_seed(9)
    BertModel(tiny_bert_config(len(tokenizer), layers=1, hidden=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


raw_recipe = functools.partial(teachers_recipe, max_steps=16)


def two_teachers(classifier, embedder) -> list[dict]:
    return [
        {"path": str(classifier), "name": "sentiment"},
        {"path": str(embedder), "name": "embedder", "output": "embedding"},
    ]


@pytest.fixture(scope="module")
def generalist(tmp_path_factory, tiny_bert_classifier, embedding_teacher, tiny_data):
    """The generalist trained quantization-aware (int8 from step 8), so its ONNX int8 is the QAT path."""
    out = tmp_path_factory.mktemp("generalist") / "run"
    raw = raw_recipe(
        two_teachers(tiny_bert_classifier, embedding_teacher),
        tiny_data,
        qat={"mode": "int8", "start_fraction": 0.5, "calibration_batches": 2},
    )
    report = distill(DistillRecipe.model_validate(raw), out, progress=False)
    return out, report


def test_one_student_learns_both_outputs_from_its_own_teachers(
    generalist, tiny_bert_classifier, embedding_teacher, tiny_data
):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    out, report = generalist
    # the default losses of a generalist: the task's and the embedding output's
    assert [spec["name"] for spec in report["config"]["losses"]] == ["soft_kl", "hard_ce", "embedding_cosine"]
    history = [h for h in report["history"] if "loss/embedding_cosine" in h]
    assert history and all(np.isfinite(h["loss/embedding_cosine"]) for h in history)

    # one cache per teacher: logits of the classifier, embeddings of the embedder on its own tokens
    entries = {t["name"]: t for t in report["teachers"]}
    assert entries["sentiment"]["output"] == "logits" and entries["embedder"]["output"] == "embedding"
    cached = np.load(f"{entries['embedder']['cache']}/embedding.npy")
    assert cached.shape == (256, 64)
    row = 5
    text = tiny_data["train"].read_text(encoding="utf-8").splitlines()[1 + row].split("\t")[0]
    tok = AutoTokenizer.from_pretrained(embedding_teacher)
    assert tok.get_vocab() != AutoTokenizer.from_pretrained(tiny_bert_classifier).get_vocab()
    batch = tok(text, return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(embedding_teacher)(**batch).last_hidden_state
    expected = mean_pool(hidden.numpy(), batch["attention_mask"].numpy())[0]
    assert np.allclose(cached[row], expected, atol=1e-5)

    # per-output metrics: accuracy and agreement for the logits, cosine and recall@10 for the embedding
    outputs = report["outputs"]
    assert outputs["logits"]["teachers"] == ["sentiment"]
    assert 0.0 <= outputs["logits"]["student"]["accuracy"] <= 1.0
    assert 0.0 <= outputs["logits"]["student"]["agreement_with_teacher"] <= 1.0
    embedding = outputs["embedding"]
    assert embedding["teachers"] == ["embedder"] and embedding["exported_as"] == "sentence_embedding"
    assert -1.0 <= embedding["student"]["cosine_to_teacher"] <= 1.0
    assert 0.0 <= embedding["student"]["recall_at_10"] <= 1.0
    assert report["student"]["metrics"]["sentence_embedding"] == embedding["student"]
    assert entries["embedder"]["student_embedding"] == embedding["student"]
    assert report["training"]["teacher_cache_bytes"] == 256 * 2 * 4 + 256 * 64 * 4

    # the student is a plain HF classifier; edgedistill.json names its second output
    student = out / "student"
    AutoModelForSequenceClassification.from_pretrained(student)
    meta = json.loads((student / "edgedistill.json").read_text())
    assert meta["outputs"]["logits"] == {"teachers": ["sentiment"]}
    assert meta["outputs"]["sentence_embedding"]["pooling"] == "mean"
    assert meta["outputs"]["sentence_embedding"]["dim"] == 64
    assert meta["qat"] is not None


def test_learning_the_embedding_moves_the_student_towards_its_teacher(
    tmp_path, tiny_bert_classifier, embedding_teacher, tiny_data
):
    """The embedding loss is what brings the student's sentence embedding to the teacher's."""
    raw = raw_recipe(two_teachers(tiny_bert_classifier, embedding_teacher), tiny_data)
    raw["training"]["max_steps"] = 24
    raw["losses"] = [{"name": "soft_kl"}, {"name": "hard_ce"}, {"name": "embedding_mse", "weight": 4.0}]
    report = distill(DistillRecipe.model_validate(raw), tmp_path / "run", progress=False)
    before = report["student"]["metrics_before_training"]["sentence_embedding"]["cosine_to_teacher"]
    after = report["student"]["metrics"]["sentence_embedding"]["cosine_to_teacher"]
    assert after > before, (before, after)


def _ort_outputs(folder, tokenizer, sentences):
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    names = [i.name for i in session.get_inputs()]
    values = session.run(None, {n: batch[n].astype(np.int64) for n in names})
    return dict(zip([o.name for o in session.get_outputs()], values, strict=True)), batch


@pytest.fixture(scope="module")
def generalist_export(tmp_path_factory, generalist):
    from edgedistill.export import ExportConfig, export

    out = tmp_path_factory.mktemp("generalist_export")
    cfg = ExportConfig(formats=["onnx", "openvino"], precisions=["fp32", "int8"], **FAST_EXPORT)
    return out, export(generalist[0] / "student", out, cfg)


def test_one_artifact_carries_both_outputs_and_parity_checks_each(generalist, generalist_export):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, report = generalist_export
    built = {(a["format"], a["precision"]) for a in report["artifacts"]}
    assert built == {("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    for artifact in report["artifacts"]:
        manifest = json.loads(
            (out / f"{artifact['format']}-{artifact['precision']}" / "manifest.json").read_text()
        )
        outputs = {o["name"]: o["shape"] for o in manifest["outputs"]}
        assert outputs == {"logits": ["batch_size", 2], "sentence_embedding": ["batch_size", 64]}, outputs
        checked = {o["name"]: o for o in manifest["parity"]["outputs"]}
        assert checked["logits"]["checked"] and checked["sentence_embedding"]["checked"], checked
        assert checked["sentence_embedding"]["cosine_min"] > 0.99
        assert manifest["parity"]["passed"]
        assert manifest["provenance"]["student_outputs"]["sentence_embedding"]["pooling"] == "mean"
    methods = {(a["format"], a["precision"]): a["quantization"]["method"] for a in report["artifacts"]}
    assert methods["onnx", "int8"] == "qat"  # the learned ranges, through the QDQ path

    # the file's sentence_embedding is the student's last hidden state pooled over real tokens
    student = generalist[0] / "student"
    tokenizer = AutoTokenizer.from_pretrained(student)
    sentences = ["the acting is superb , honestly", "a dull mess"]
    got, batch = _ort_outputs(out / "onnx-fp32", tokenizer, sentences)
    model = AutoModelForSequenceClassification.from_pretrained(student).eval()
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)
    pooled = mean_pool(ref.hidden_states[-1].numpy(), batch["attention_mask"])
    assert np.allclose(got["sentence_embedding"], pooled, atol=1e-4)
    assert np.allclose(got["logits"], ref.logits.numpy(), atol=1e-4)


def test_post_training_int8_and_formats_that_hold_one_output(tmp_path, generalist):
    from edgedistill.export import ExportConfig, UnsupportedModelError, export

    student = generalist[0] / "student"
    report = export(
        student,
        tmp_path / "dynamic",
        ExportConfig(formats=["onnx"], precisions=["int8"], int8_method="dynamic", **FAST_EXPORT),
    )
    [artifact] = report["artifacts"]
    assert artifact["quantization"]["method"] == "dynamic"
    assert {o["name"] for o in artifact["parity"]["outputs"] if o["checked"]} == {
        "logits",
        "sentence_embedding",
    }
    # GGUF holds one pooled output and no head: refused, with what it can hold instead
    with pytest.raises(UnsupportedModelError, match="--task feature-extraction --format gguf"):
        export(student, tmp_path / "gguf", ExportConfig(formats=["gguf"], precisions=["q8_0"]))
    # exported as feature-extraction, the generalist is its encoder alone: GGUF holds that (mean pooling)
    enc = export(
        student,
        tmp_path / "enc",
        ExportConfig(formats=["onnx", "gguf"], precisions=["fp32"], task="feature-extraction", **FAST_EXPORT),
    )
    for artifact in enc["artifacts"]:
        checked = {o["name"] for o in artifact["parity"]["outputs"] if o["checked"]}
        assert "sentence_embedding" in checked and "logits" not in checked, (artifact["format"], checked)
    assert {a["format"] for a in enc["artifacts"]} == {"onnx", "gguf"}


def test_recipes_that_cannot_teach_a_generalist_are_refused_with_the_key(tiny_data):
    cases = [
        (
            [{"path": "a"}, {"path": "b", "output": "pooler"}],
            "teachers[1].output 'pooler': a sequence-classification student has no such output",
        ),
        (
            [{"path": "e", "output": "embedding"}, {"path": "a"}],
            "teachers[0].output 'embedding': the student is derived from the first teacher",
        ),
        (
            [{"path": "a"}, {"path": "e", "output": "embedding"}, {"path": "f", "output": "embedding"}],
            "teachers[2].output 'embedding': teachers[1] already teaches it",
        ),
        (
            [{"path": "a"}, {"path": "e", "output": "embedding", "temperature": 2.0}],
            "teachers[1].temperature",
        ),
    ]
    for teachers, words in cases:
        with pytest.raises(ValidationError) as err:
            DistillRecipe.model_validate(raw_recipe(teachers, tiny_data))
        assert words in str(err.value), str(err.value)
    # embedding losses need an embedding teacher; an embedding teacher needs an embedding loss
    with pytest.raises(ValidationError, match="do not apply"):
        DistillRecipe.model_validate(
            raw_recipe([{"path": "a"}], tiny_data, losses=[{"name": "embedding_cosine"}])
        )
    with pytest.raises(ValidationError, match="no loss reads it"):
        DistillRecipe.model_validate(
            raw_recipe(
                [{"path": "a"}, {"path": "e", "output": "embedding"}], tiny_data, losses=[{"name": "soft_kl"}]
            )
        )


def test_teachers_that_cannot_teach_their_output_are_refused_before_the_run(
    tmp_path, tiny_bert_classifier, tiny_bert_encoder, tiny_data
):
    """Two teachers on the logits output of different tasks (a classifier and a bare encoder), and an
    embedding teacher of another width, are refused at once, before the run folder is made."""
    from transformers import AutoTokenizer, BertModel

    narrow = tmp_path / "narrow_embedder"
    tok = AutoTokenizer.from_pretrained(tiny_bert_classifier)
    BertModel(tiny_bert_config(len(tok), layers=1, hidden=48)).save_pretrained(narrow)
    tok.save_pretrained(narrow)
    teachers = [
        {"path": str(tiny_bert_classifier)},
        {"path": str(tiny_bert_encoder)},  # output logits by default, but no head
        {"path": str(narrow), "output": "embedding"},
    ]
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        distill(DistillRecipe.model_validate(raw_recipe(teachers, tiny_data)), out, progress=False)
    problems = dict(err.value.problems)
    assert "BertModel, not a sequence classifier" in problems["teachers[1]"]
    assert "48 dimensions" in problems["teachers[2].output"] and "64" in problems["teachers[2].output"]
    assert not out.exists()


def test_bench_measures_each_output_with_its_own_metric(tmp_path, generalist, generalist_export, tiny_data):
    """Accuracy (and agreement with the torch student) for the logits; cosine and recall@10 to the torch
    student's sentence embedding for the second output, each through the artifact's own runtime."""
    from bench_helpers import write_target

    from edgedistill.bench import bench

    out, _ = generalist_export
    report = bench(
        [out / "onnx-int8", out / "openvino-fp32", generalist[0] / "student"],
        write_target(tmp_path, measurement={"min_iterations": 5, "min_seconds": 0.05}),
        data=tiny_data["eval"],
        out=tmp_path / "report.json",
    )
    entries = {a["name"]: a for a in report["artifacts"]}
    for name in ("onnx-int8", "openvino-fp32", "student"):
        entry = entries[name]
        assert entry["status"] == "measured", entry.get("reason")
        accuracy = entry["accuracy"]
        assert 0.0 <= accuracy["accuracy"] <= 1.0 and accuracy["n"] == 64
        embedding = accuracy["sentence_embedding"]
        assert embedding["metric"] == "cosine and recall@10 to reference" and embedding["n"] == 64
    for name in ("onnx-int8", "openvino-fp32"):  # against the torch student the manifest names
        accuracy = entries[name]["accuracy"]
        assert accuracy["agreement"] >= 0.9
        embedding = accuracy["sentence_embedding"]
        assert embedding["status"] == "measured" and embedding["cosine_min"] > 0.99, embedding
        assert embedding["recall_at_10"] >= 0.7, embedding
    # the torch folder is its own reference: its embeddings are measured, with nothing to compare to
    assert entries["student"]["accuracy"]["sentence_embedding"]["status"].startswith("no reference")


def test_bench_measures_the_embedding_against_the_embedding_teacher(
    tmp_path, generalist_export, embedding_teacher, tiny_data
):
    """--reference an embedding model: the generalist's sentence_embedding is measured against it (cosine and
    recall@10 to the teacher), the logits have no reference and say why."""
    from bench_helpers import write_target

    from edgedistill.bench import bench

    out, _ = generalist_export
    report = bench(
        [out / "onnx-fp32"],
        write_target(tmp_path, measurement={"min_iterations": 5, "min_seconds": 0.05}),
        data=tiny_data["eval"],
        reference=embedding_teacher,
    )
    [entry] = report["artifacts"]
    accuracy = entry["accuracy"]
    assert accuracy["reference"]["compared"].startswith("sentence_embedding only")
    assert "agreement" not in accuracy and 0.0 <= accuracy["accuracy"] <= 1.0
    embedding = accuracy["sentence_embedding"]
    assert embedding["status"] == "measured" and -1.0 <= embedding["cosine_mean"] <= 1.0
    assert 0.0 <= embedding["recall_at_10"] <= 1.0
