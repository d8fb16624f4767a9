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
    args = [
        "generate",
        "--teacher",
        str(file),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--engine",
        "torch",
    ]
    assert main([*args, "--greedy", "--max-new-tokens", "4", "--set", "batch_size=2", "--quiet"]) == 0
    assert len(read_store(out)) >= 1
    teacher = json.loads((out / META_FILE).read_text(encoding="utf-8"))["teacher"]
    assert teacher["class"] == "LlamaForCausalLM" and teacher["dtype"] == "float32"
    assert teacher["gguf"]["sha256"] == sha256_file(file)
    assert teacher["gguf"]["file_type"] == "MOSTLY_Q8_0"


# --- engine: llama.cpp (the GGUF file itself, not dequantized) -------------------------------

PROMPTS = ["The quick brown", "Hello, world!", "She paid", "Prices rose by"]


def _gen_cfg(file: Path, prompts: Path, engine: str = "auto", **sampling):
    from edgedistill.compress.generate import GenerateConfig

    sampling = {"max_new_tokens": 8, **sampling}
    return GenerateConfig(teacher={"path": str(file)}, prompts=str(prompts), engine=engine, sampling=sampling)


@pytest.fixture()
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def test_auto_runs_a_gguf_teacher_in_llama_cpp_and_records_it(gguf_files, prompts_file, tmp_path):
    from edgedistill.compress.generate import generate, read_store, resolve_engine, sample_seed

    cfg = _gen_cfg(gguf_files["q8_0"], prompts_file, num_samples=2, temperature=1.5)
    assert resolve_engine(cfg) == "llama.cpp" and cfg.engine == "auto"
    report = generate(cfg, tmp_path / "a", progress=False)
    records = read_store(tmp_path / "a")
    assert {(r["prompt_id"], r["sample_index"]) for r in records} == {
        (p, s) for p in range(4) for s in range(2)
    }
    for r in records:
        assert r["seed"] == sample_seed(0, r["prompt_id"], r["sample_index"])
        assert r["finish_reason"] == "stop" or r["response_tokens"] == 8
    run = report["runs"][-1]
    assert run["engine"] == "llama.cpp" and run["llama_cpp_python"] and run["threads"] >= 1
    assert (
        run["response_tokens"] == sum(r["response_tokens"] for r in records) and run["tokens_per_second"] > 0
    )
    assert report["identity"]["engine"] == "llama.cpp" and "dtype" not in report["identity"]
    assert (
        report["teacher"]["dtype"] == "MOSTLY_Q8_0"
        and report["teacher"]["gguf"]["file_type"] == "MOSTLY_Q8_0"
    )

    # per-sample seeds: another run, in batches of another size, draws the same responses
    again = _gen_cfg(gguf_files["q8_0"], prompts_file, num_samples=2, temperature=1.5).model_copy(
        update={"batch_size": 3}
    )
    generate(again, tmp_path / "b", progress=False)
    assert read_store(tmp_path / "b") == records


def test_llama_cpp_finish_reasons_stop_at_an_end_token_and_at_the_length(gguf_files, prompts_file):
    from edgedistill.compress.generate.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(_gen_cfg(gguf_files["f32"], prompts_file, do_sample=False, max_new_tokens=5))
    assert engine.stop_ids == [engine.tokenizer.eos_token_id]  # the file's eos_token_id, the tokenizer's
    engine.prepare(PROMPTS)
    free = engine.generate_batch(PROMPTS[:2], [1, 2])
    assert [r["finish_reason"] for r in free] == ["length", "length"]
    assert [r["response_tokens"] for r in free] == [5, 5]
    # make a later greedy token of the first prompt an end token: the response stops there
    tokens = engine.tokenizer(PROMPTS[0], add_special_tokens=True)["input_ids"]
    greedy = engine._generate(tokens, 0)
    assert greedy == free[0]
    ids = greedy["token_ids"]
    at = next(i for i in range(1, len(ids)) if ids[i] not in ids[:i])
    engine.stop_ids = [ids[at]]
    stopped = engine._generate(tokens, 0)
    assert stopped["finish_reason"] == "stop" and stopped["response_tokens"] == at + 1
    assert stopped["response"] == engine.tokenizer.decode(ids[:at], skip_special_tokens=True)


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.5])
def test_greedy_llama_cpp_writes_what_greedy_torch_writes(
    gguf_files, prompts_file, tmp_path, repetition_penalty
):
    """The f32 file: llama.cpp's and torch's logits agree to ~1e-5, so greedy argmaxes agree on this model
    (a quantized file or a near-tie could flip one). The penalty covers the prompt's tokens in both."""
    from edgedistill.compress.generate import generate, read_store

    stores = {}
    for engine in ("torch", "llama.cpp"):
        cfg = _gen_cfg(
            gguf_files["f32"], prompts_file, engine, do_sample=False, max_new_tokens=12,
            repetition_penalty=repetition_penalty,
        ).model_copy(update={"batch_size": 1})  # fmt: skip
        generate(cfg, tmp_path / engine, progress=False)
        stores[engine] = [{k: r[k] for k in ("response", "finish_reason", "response_tokens", "prompt_tokens")}
                          for r in read_store(tmp_path / engine)]  # fmt: skip
    assert stores["llama.cpp"] == stores["torch"]


def test_llama_cpp_with_a_folder_teacher_is_refused_with_the_key_and_the_fix(
    teacher_folder, prompts_file, capsys
):
    from edgedistill.cli import main
    from edgedistill.compress.generate import GenerateConfig
    from edgedistill.config import load_config
    from edgedistill.errors import ConfigError

    overrides = {"teacher.path": str(teacher_folder), "prompts": str(prompts_file), "engine": "llama.cpp"}
    with pytest.raises(
        ConfigError, match=r"engine: llama\.cpp runs a GGUF file.*DIR/NAME\.gguf.*--engine torch"
    ):
        load_config(GenerateConfig, None, overrides)
    args = ["generate", "--teacher", str(teacher_folder), "--prompts", str(prompts_file), "--out", "/tmp/x"]
    assert main([*args, "--engine", "llama.cpp", "--quiet"]) == 2
    assert "engine: llama.cpp runs a GGUF file" in capsys.readouterr().err


def test_a_store_keeps_its_engine(gguf_files, prompts_file, tmp_path):
    import json

    from edgedistill.compress.generate import META_FILE, GenerateError, generate

    out = tmp_path / "torch"
    generate(_gen_cfg(gguf_files["q8_0"], prompts_file, "torch", max_new_tokens=3), out, progress=False)
    with pytest.raises(
        GenerateError, match=r"engine: stored 'torch', now 'llama\.cpp'.*--engine torch"
    ) as err:
        generate(_gen_cfg(gguf_files["q8_0"], prompts_file, max_new_tokens=3), out, progress=False)
    assert "dtype" not in str(err.value)  # the engine line says it; no torch-only noise
    # a store from before engines existed was torch's: it resumes with the torch engine
    meta = json.loads((out / META_FILE).read_text())
    meta["identity"].pop("engine")
    (out / META_FILE).write_text(json.dumps(meta))
    report = generate(
        _gen_cfg(gguf_files["q8_0"], prompts_file, "torch", max_new_tokens=3), out, progress=False
    )
    assert report["runs"][-1]["generated"] == 0


def test_llama_cpp_killed_mid_run_resumes_to_the_uninterrupted_result(gguf_files, tmp_path):
    import os
    import signal
    import sys

    from store_helpers import start_and_stop

    from edgedistill.compress.generate import SAMPLES_FILE, generate, read_store

    prompts = tmp_path / "many.txt"
    lines = [f"{s.split(',')[0][:20]} {i}" for i in range(20) for s in tiny_llama.SAMPLE_SENTENCES[:10]]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "killed"
    file = gguf_files["q8_0"]
    command = [
        sys.executable,
        "-m",
        "edgedistill",
        "generate",
        "--teacher",
        str(file),
        "--prompts",
        str(prompts),
    ]
    command += [
        "--out",
        str(out),
        "--max-new-tokens",
        "48",
        "--engine",
        "llama.cpp",
        "--threads",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    killed_mid_run, _ = start_and_stop(command, env, out / SAMPLES_FILE, 3, signal.SIGKILL)
    landed = len(read_store(out))
    print(f"killed mid-run: {killed_mid_run}, records landed: {landed}")

    cfg = _gen_cfg(file, prompts, "llama.cpp", max_new_tokens=48)
    report = generate(cfg, out, progress=False)
    generate(cfg, tmp_path / "uninterrupted", progress=False)
    resumed = read_store(out)
    assert resumed == read_store(tmp_path / "uninterrupted")
    assert len({(r["prompt_id"], r["sample_index"]) for r in resumed}) == len(resumed)
    assert report["runs"][-1]["already_done"] >= landed
    if killed_mid_run:
        assert 3 <= landed < len(lines)


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
