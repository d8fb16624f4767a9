"""A GGUF file as the teacher (`teacher: {path: DIR/NAME.gguf}`): checked, loaded, distilled from, generated with.

The teacher is the tiny Llama of `tiny_llama`, written to GGUF by the project's own exporter. Its
tokenizer carries ``<|endoftext|>``: transformers builds a GGUF byte-level BPE tokenizer with
that token as its default unknown token and appends it when the file lacks it (one token more
than the model's rows), as real GPT-2 style vocabularies (SmolLM2's among them) never do.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import tiny_llama

from edgedistill.compress.config import DistillRecipe
from edgedistill.errors import ModelLoadError
from edgedistill.io import sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    tokenizer_dir = tmp_path_factory.mktemp("gguf_teacher_tok")
    tokenizer = tiny_llama.train_bytelevel_bpe(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|endoftext|>"]})
    tokenizer.save_pretrained(tokenizer_dir)
    folder = tmp_path_factory.mktemp("gguf_teacher")
    return tiny_llama.save_tiny_decoder(folder, "llama", seed=0, tokenizer_dir=tokenizer_dir, train_steps=20)


@pytest.fixture(scope="module")
def gguf_files(teacher_folder, tmp_path_factory) -> dict[str, Path]:
    from edgedistill.export.gguf import write_gguf

    out = tmp_path_factory.mktemp("gguf_files")
    return {
        precision: Path(write_gguf(teacher_folder, out / f"tiny.{precision}.gguf", precision, task="text-generation")["file"])
        for precision in ("f32", "q8_0")
    }  # fmt: skip


def test_a_gguf_teacher_loads_as_its_folder_does(teacher_folder, gguf_files):
    import torch

    from edgedistill.compress.config import ModelSource
    from edgedistill.compress.models import load_model, load_tokenizer

    sentence = tiny_llama.SAMPLE_SENTENCES[0]
    folder_tokenizer = load_tokenizer(str(teacher_folder))
    gguf_tokenizer = load_tokenizer(str(gguf_files["f32"]))
    ids = folder_tokenizer(sentence, return_tensors="pt")
    assert gguf_tokenizer(sentence)["input_ids"] == ids["input_ids"][0].tolist()
    assert gguf_tokenizer.get_vocab() == folder_tokenizer.get_vocab()

    reference = load_model(ModelSource(path=str(teacher_folder)), "causal-lm")
    with torch.no_grad():
        expected = reference(**ids).logits
        for precision, tolerance in (("f32", 1e-4), ("q8_0", 0.1)):
            model = load_model(ModelSource(path=str(gguf_files[precision])), "causal-lm")
            assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
            got = model(**ids).logits
            assert (got - expected).abs().max().item() < tolerance, precision
            assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_provenance_names_the_file_its_hash_and_quantization(gguf_files, teacher_folder):
    from edgedistill.compress.config import ModelSource
    from edgedistill.compress.models import teacher_provenance

    assert teacher_provenance(ModelSource(path=str(teacher_folder))) is None
    file = gguf_files["q8_0"]
    prov = teacher_provenance(ModelSource(path=str(file)))
    assert prov["format"] == "gguf" and prov["file"] == str(file.resolve())
    assert prov["sha256"] == sha256_file(file) and prov["size_bytes"] == file.stat().st_size
    assert prov["architecture"] == "llama" and prov["gguf_version"] == 3
    assert prov["file_type"] == "MOSTLY_Q8_0"
    assert prov["tensor_types"] == {"Q8_0": 16, "F32": 5}  # 2 layers x 7 matrices, embeddings, head; norms
    assert teacher_provenance(str(gguf_files["f32"]))["file_type"] == "ALL_F32"


def test_distill_a_student_from_a_gguf_teacher(gguf_files, lm_data, tmp_path):
    from edgedistill.compress import distill

    recipe = tiny_llama.lm_recipe(tmp_path, gguf_files["q8_0"], lm_data)
    assert recipe.teacher.gguf_file == gguf_files["q8_0"]
    out = tmp_path / "run"
    report = distill(recipe, out)
    student = out / "student"
    assert (student / "model.safetensors").is_file() and (student / "config.json").is_file()
    assert (student / "tokenizer.json").is_file()  # the teacher's tokenizer, from the GGUF metadata
    assert report["teacher"]["gguf"]["sha256"] == sha256_file(gguf_files["q8_0"])

    from edgedistill.compress.models import load_tokenizer

    student_tokenizer = load_tokenizer(str(student))
    assert student_tokenizer.get_vocab() == load_tokenizer(str(gguf_files["q8_0"])).get_vocab()


def test_generate_from_a_gguf_teacher_through_the_cli(gguf_files, tmp_path):
    import json

    from edgedistill.cli import main
    from edgedistill.compress.generate import META_FILE, read_store

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The quick brown\nHello, world!\nShe paid\n", encoding="utf-8")
    out = tmp_path / "gen"
    file = gguf_files["q8_0"]
    args = ["generate", "--teacher", str(file), "--prompts", str(prompts), "--out", str(out)]
    assert main([*args, "--greedy", "--max-new-tokens", "4", "--set", "batch_size=2", "--quiet"]) == 0
    assert len(read_store(out)) >= 1
    teacher = json.loads((out / META_FILE).read_text(encoding="utf-8"))["teacher"]
    assert teacher["class"] == "LlamaForCausalLM" and teacher["dtype"] == "float32"
    assert teacher["gguf"]["sha256"] == sha256_file(file)
    assert teacher["gguf"]["file_type"] == "MOSTLY_Q8_0"


# --- a bad file is refused before transformers or gguf-py read it ------------------------------


def _tensor_count_offset() -> int:
    return 4 + 4  # magic, version; then the uint64 tensor count


def _corrupt(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) * 2 // 3]
    if how == "huge tensor count":
        at = _tensor_count_offset()
        return data[:at] + struct.pack("<Q", 2**40) + data[at + 8 :]
    if how == "not gguf":
        return b"GGML" + data[4:]
    if how == "empty":
        return b""
    raise ValueError(how)


@pytest.fixture()
def no_transformers(monkeypatch):
    """Every parser of a GGUF file in transformers and gguf-py fails the test when called."""
    import gguf
    import transformers

    def touched(*args, **kwargs):
        raise AssertionError("transformers or gguf-py parsed the file before the header check refused it")

    for cls in (
        transformers.AutoModelForCausalLM,
        transformers.AutoTokenizer,
        transformers.AutoConfig,
        transformers.LlamaForCausalLM,
    ):
        monkeypatch.setattr(cls, "from_pretrained", touched)
    monkeypatch.setattr(gguf, "GGUFReader", touched)


@pytest.mark.parametrize("how", ["truncated", "huge tensor count", "not gguf", "empty"])
def test_a_bad_gguf_teacher_is_refused_before_transformers_parses_it(
    how, gguf_files, lm_data, tmp_path, no_transformers
):
    from edgedistill.compress import distill
    from edgedistill.compress.config import ModelSource
    from edgedistill.compress.models import (
        check_model_folder,
        load_gguf_config,
        load_model,
        load_tokenizer,
        teacher_provenance,
    )
    from edgedistill.fit.space import read_teacher_config

    bad = tmp_path / "teacher.Q8_0.gguf"
    bad.write_bytes(_corrupt(gguf_files["q8_0"].read_bytes(), how))
    calls = {
        "check_model_folder": lambda: check_model_folder(str(bad), "teacher", False),
        "load_model": lambda: load_model(ModelSource(path=str(bad)), "causal-lm"),
        "load_tokenizer": lambda: load_tokenizer(str(bad)),
        "load_gguf_config": lambda: load_gguf_config(str(bad)),
        "teacher_provenance": lambda: teacher_provenance(str(bad)),
        "fit's read_teacher_config": lambda: read_teacher_config(str(bad)),
        "distill": lambda: distill(tiny_llama.lm_recipe(tmp_path, bad, lm_data), tmp_path / "run"),
    }
    for name, call in calls.items():
        with pytest.raises(ModelLoadError) as info:
            call()
        message = str(info.value)
        assert str(bad) in message and "not a valid GGUF file" in message, (name, message)
        assert "download it again" in message, (name, message)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_transformers_gguf_file_spelling_names_the_same_teacher(gguf_files, lm_data, tmp_path):
    from edgedistill.compress.models import check_model_folder

    file = gguf_files["q8_0"]
    recipe = tiny_llama.lm_recipe(tmp_path, file, lm_data).model_dump(mode="json")
    recipe["teacher"] = {"path": str(file.parent), "gguf_file": file.name}
    assert DistillRecipe.model_validate(recipe).teacher.path == str(file)
    for bad, why in (
        ({"path": str(file), "gguf_file": file.name}, "already names a GGUF file"),
        ({"path": str(file.parent), "gguf_file": "sub/x.gguf"}, "must be a file name"),
        ({"gguf_file": file.name}, "needs `path`"),
    ):
        recipe["teacher"] = bad
        with pytest.raises(ValueError, match=why):
            DistillRecipe.model_validate(recipe)

    with pytest.raises(ModelLoadError, match="holds GGUF file") as info:
        check_model_folder(str(file.parent), "teacher", False)
    assert f"--teacher {gguf_files['f32']}" in str(info.value)  # the first file, named in full
    with pytest.raises(ModelLoadError, match="is not a file"):
        check_model_folder(str(tmp_path / "missing.gguf"), "teacher", False)


def test_fit_exports_a_gguf_teacher_as_its_baseline_and_reports_where_it_came_from(
    gguf_files, lm_data, tmp_path
):
    """fit's interleaved baseline is the teacher exported at fp32: an exporter reads a folder, so a GGUF
    teacher is exported from the folder screening saves; the report names the file and its sha256."""
    from bench_helpers import write_target

    from edgedistill.fit import phases
    from edgedistill.fit.search import _teacher_artifact, _teacher_source
    from edgedistill.pipeline import RunRecipe
    from edgedistill.targets import load_target

    file = gguf_files["f32"]
    target = load_target(write_target(tmp_path, budgets={"size_vs_teacher": 0.9}))
    recipe = RunRecipe.model_validate(
        {
            "version": 1,
            "distill": {
                **tiny_llama.lm_recipe(tmp_path, file, lm_data).model_dump(mode="json"),
                "student": None,
            },
            "export": {"parity_samples": 2, "max_length": 32},
            "bench": {"targets": ["cpu"], "teacher": False},
            "fit": {"space": {"layers": [1], "exports": [{"format": "gguf", "precision": "q8_0"}]}},
        }
    )
    screening = phases.Screening(recipe, target, tmp_path / "fit", {"model_type": "llama"}, progress=False)
    artifact = Path(_teacher_artifact(recipe, tmp_path / "fit", screening))
    assert (artifact / "manifest.json").is_file() and artifact.name == "gguf-fp32"
    assert (tmp_path / "fit" / "shapes" / "teacher" / "config.json").is_file()
    source = _teacher_source(recipe.distill.teacher)
    assert source["path"] == str(file) and source["gguf"]["sha256"] == sha256_file(file)


def test_run_exports_a_gguf_teacher_as_its_reference_point(gguf_files, lm_data, tmp_path):
    """`edgedistill run`'s teacher row: the GGUF-file teacher, dequantized and saved once as a folder,
    exported at fp32 like any teacher (it used to be skipped with a warning and no teacher row)."""
    from edgedistill import teacher_reference
    from edgedistill.pipeline import RunRecipe

    file = gguf_files["q8_0"]
    recipe = RunRecipe.model_validate(
        {
            "version": 1,
            "distill": tiny_llama.lm_recipe(tmp_path, file, lm_data).model_dump(mode="json"),
            "export": {"formats": ["gguf"], "precisions": ["q8_0"], "parity_samples": 2, "max_length": 32},
            "bench": {"targets": ["cpu"]},
        }
    )
    exported = teacher_reference.export_teacher(recipe, tmp_path / "run")
    assert "error" not in exported, exported
    artifact = Path(exported["artifact"])
    assert artifact.name == "gguf-fp32" and (artifact / "manifest.json").is_file()
    saved = tmp_path / "run" / "reference" / "teacher-model"
    assert (saved / "config.json").is_file()
    # saved like fit's teacher folder (compress.model_folder): the meta names the task
    assert json.loads((saved / "edgedistill.json").read_text())["task"] == "causal-lm"
    # a second run reads the saved folder instead of dequantizing the file again
    stamp = (saved / "config.json").stat().st_mtime_ns
    assert "error" not in teacher_reference.export_teacher(recipe, tmp_path / "run")
    assert (saved / "config.json").stat().st_mtime_ns == stamp
