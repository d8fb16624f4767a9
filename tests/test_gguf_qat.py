"""GGUF quantization-aware training: fake quantization that equals what llama.cpp runs.

- `fake_quant_blocks` equals ``gguf.quants`` dequantize(quantize()) bit for bit (edge cases included);
- the fake-quant tensor rule is the exporter's (tied / untied embeddings, F16 fallbacks, biases);
- a tiny Llama trained a few steps through Q4_0 fake quantization, saved as float weights and
  exported by the real exporter, runs in llama.cpp with logits that match the torch fake-quant
  model far more closely than the torch float model matches the same file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

from tiny_llama import SAMPLE_SENTENCES, corpus, save_tiny_decoder, tiny_decoder_config  # noqa: E402

from edgedistill import numerics  # noqa: E402
from edgedistill.compress.gguf_quant import (  # noqa: E402
    attach_gguf_fake_quant,
    fake_quant_activations,
    fake_quant_blocks,
    gguf_parameter_types,
)
from edgedistill.export import gguf as G  # noqa: E402

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
EVAL_TEXTS = SAMPLE_SENTENCES[:8]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a busy 2-core machine OpenMP spin-waits make tiny models much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gguf_roundtrip(array: np.ndarray, qtype: str) -> np.ndarray:
    import gguf

    t = gguf.GGMLQuantizationType[qtype.upper()]
    return gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(array, np.float32), t), t)


def _assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Identical float32 bit patterns (so -0.0 vs 0.0 counts), any NaN equal to any NaN."""
    got, want = got.astype(np.float32).reshape(want.shape), want.astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN positions differ"
    differ = (got.view(np.uint32) != want.view(np.uint32)) & ~nan
    if differ.any():
        i = np.argwhere(differ)[0]
        raise AssertionError(
            f"{what}: {int(differ.sum())} of {want.size} values differ, first at {tuple(i)}: "
            f"torch {got[tuple(i)]!r} vs gguf {want[tuple(i)]!r}"
        )


def _edge_blocks() -> np.ndarray:
    """Blocks of 32 that probe the rounding: zeros, ties, sign of the maximum, extreme magnitudes."""
    rng = np.random.default_rng(7)

    def below(tie: float) -> np.float32:  # the float32 just under a .5 tie, towards zero
        return np.nextafter(np.float32(tie), np.float32(0))

    blocks = [
        np.zeros(32),
        -np.zeros(32),  # -0.0 everywhere
        np.eye(32)[5] * 3.0,  # one non-zero
        np.eye(32)[9] * -3.0,  # a negative maximum
        np.r_[2.0, -2.0, rng.uniform(-1, 1, 30)],  # +max and -max tie: the first one wins
        np.r_[-2.0, 2.0, rng.uniform(-1, 1, 30)],
        # scale exactly 1 (Q8_0: amax 127), then exact .5 ties: Q8_0 rounds them away from zero
        np.r_[127.0, -127.0, np.arange(-14.5, 15.5, 1.0)[:30]],
        # Q4_0 scale exactly 1 (max -8), ties at .5 (trunc(x + 8.5) rounds them up), +7.5 clipped
        np.r_[-8.0, 7.5, 6.5, -7.5, 0.5, -0.5, 1.5, -1.5, rng.uniform(-8, 8, 24)],
        np.r_[-8.0, below(0.5), below(-0.5), below(1.5), below(-1.5), rng.uniform(-8, 8, 27)],
        np.r_[127.0, below(0.5), below(-0.5), below(2.5), rng.uniform(-127, 127, 28)],
        rng.normal(0, 1, 32) * 1e6,  # large, fp16 scale still finite for Q8_0 (7.9e3)
        rng.normal(0, 1, 32) * 1e7,  # the float16 scale overflows to inf (Q8_0 and Q4_0)
        np.r_[3.0e38, rng.normal(0, 1e37, 31)],  # near float32's largest value
        rng.normal(0, 1, 32) * 1e-4,  # float16-subnormal scales
        rng.normal(0, 1, 32) * 1e-9,  # scale underflows to 0 in float16
        np.full(32, -0.25),  # constant negative block
    ]
    return np.stack([np.asarray(b, dtype=np.float64) for b in blocks]).astype(np.float32)


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_fake_quant_blocks_equals_gguf_quants_bit_for_bit(qtype, device):
    rng = np.random.default_rng(0)
    cases = {
        "edge blocks": _edge_blocks(),
        "normal 0.02, 2-D": rng.normal(0, 0.02, (96, 128)).astype(np.float32),
        "normal 1, 3-D": rng.normal(0, 1, (3, 5, 64)).astype(np.float32),
        "heavy tails": (rng.standard_t(2, (64, 256)) * 3).astype(np.float32),
        "uniform 100": rng.uniform(-100, 100, (8, 32)).astype(np.float32),
    }
    with np.errstate(all="ignore"):  # gguf itself divides by zero and multiplies inf by 0 here
        for what, array in cases.items():
            got = fake_quant_blocks(torch.from_numpy(array).to(device), qtype).cpu().numpy()
            _assert_same_bits(got, _gguf_roundtrip(array, qtype), f"{qtype} {what} on {device}")


def test_fake_quant_is_idempotent_so_a_baked_model_exports_the_same_file():
    w = torch.randn(64, 256) * 0.05
    for qtype in ("q8_0", "q4_0", "f16"):
        once = fake_quant_blocks(w, qtype)
        assert torch.equal(fake_quant_blocks(once, qtype), once), qtype


def test_straight_through_gradient_and_row_check():
    w = (torch.randn(4, 64) * 0.1).requires_grad_()
    (fake_quant_blocks(w, "q4_0") * torch.arange(64.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(64.0).expand(4, 64))
    x = torch.randn(2, 3, 64, requires_grad=True)
    fake_quant_activations(x, "q8_0").sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with pytest.raises(ValueError, match="blocks of 32"):
        fake_quant_blocks(torch.randn(4, 48), "q4_0")
    with pytest.raises(ValueError, match="q4_0"):
        fake_quant_blocks(torch.randn(4, 64), "q5_k")


def test_activation_quantization_follows_ggml_x86_rounding():
    # scale exactly 1 (amax 127): x86 rounds .5 ties to even, the C reference away from zero
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 3.4, *([0.0] * 25)]])
    got = fake_quant_activations(x, "q8_0")[0, :7].tolist()
    assert got == [127.0, 0.0, 2.0, 2.0, -0.0, -2.0, 3.0]
    assert fake_quant_activations(x, "q8_0", rounding="arm")[0, :7].tolist() == got
    assert fake_quant_activations(x, "q8_0", rounding="reference")[0, :7].tolist() == [
        127,
        1,
        2,
        3,
        -1,
        -3,
        3,
    ]
    # the C reference rounding is the one gguf writes weights with
    w = torch.randn(16, 64)
    assert torch.equal(fake_quant_activations(w, "q8_0", rounding="reference"), fake_quant_blocks(w, "q8_0"))
    assert torch.equal(fake_quant_activations(x, "f16"), x.half().float())
    assert fake_quant_activations(x, "f32") is x


# --------------------------------------------------------------------------- tensor rule


def _llama(folder, tokenizer_dir, *, tie: bool, hidden: int = 64, intermediate: int = 128, seed: int = 0):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def base_llama(tmp_path_factory):
    """The tiny Llama of the export tests (untied embeddings), trained 40 steps in float."""
    return save_tiny_decoder(tmp_path_factory.mktemp("qat_base"), arch="llama", train_steps=40)


@pytest.mark.parametrize(
    "tie, hidden, intermediate, precision",
    [
        (False, 64, 128, "q4_0"),
        (True, 64, 128, "q4_0"),
        (False, 64, 128, "q8_0"),
        (True, 48, 96, "q4_0"),  # rows of 48 fall back to F16; rows of 96 (ffn_down) take Q4_0
    ],
)
def test_fake_quant_rule_is_the_exporters_rule(base_llama, tmp_path, tie, hidden, intermediate, precision):
    model = _llama(tmp_path / "m", base_llama, tie=tie, hidden=hidden, intermediate=intermediate)
    exported = G.write_gguf(tmp_path / "m", tmp_path / "m.gguf", precision, task="causal-lm")
    handle = attach_gguf_fake_quant(model, precision)
    report = handle.report()
    assert {t["tensor"]: t["type"] for t in report["tensors"]} == exported["tensors"]
    for key in ("fallbacks", "overrides"):  # the file follows checkpoint order, the model module order
        assert sorted(report[key], key=str) == sorted(exported[key], key=str), key
    types = gguf_parameter_types(model, precision)  # also works while attached
    assert types == {t["parameter"]: t["type"] for t in report["tensors"]}
    embed, output = "model.embed_tokens.weight", "lm_head.weight"
    if tie:
        assert output not in types and report["output_tensor"] == "token_embd.weight"
        assert types[embed] == ("Q8_0" if hidden % 32 == 0 else "F16")
        # the tied head is fake-quantized too: the logits use the same quantized table
        assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    else:
        assert types[embed] == precision.upper() and types[output] == "Q8_0"
    assert types["model.norm.weight"] == "F32"
    if hidden == 48:
        assert types["model.layers.0.self_attn.q_proj.weight"] == "F16"
        assert types["model.layers.0.mlp.down_proj.weight"] == "Q4_0"
        assert exported["fallbacks"]
    handle.remove()
    assert not any(".parametrizations." in n for n, _ in model.named_parameters())


def test_qwen2_biases_stay_f32_and_gemma_has_a_rule_but_no_export(tmp_path):
    from transformers import GemmaConfig, GemmaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    small = tiny_decoder_config(320, num_hidden_layers=1)
    qwen = Qwen2ForCausalLM(Qwen2Config(**small, tie_word_embeddings=True))
    types = gguf_parameter_types(qwen, "int4")
    assert types["model.layers.0.self_attn.q_proj.bias"] == "F32"
    assert types["model.layers.0.self_attn.q_proj.weight"] == "Q4_0"
    assert types["model.embed_tokens.weight"] == "Q8_0"  # tied: token_embd is the output projection

    gemma = GemmaForCausalLM(GemmaConfig(**small, head_dim=16))
    handle = attach_gguf_fake_quant(gemma, "q4_0")
    counts = handle.report()["tensor_types"]
    assert counts == {"F32": 3, "Q4_0": 7, "Q8_0": 1}, counts
    handle.remove()
    gemma.save_pretrained(tmp_path / "gemma")
    with pytest.raises(G.UnsupportedModelError, match="gemma"):
        G.write_gguf(tmp_path / "gemma", tmp_path / "g.gguf", "q4_0", task="causal-lm")


# --------------------------------------------------------------------------- trained, exported, run


def _train_qat(model, tokenizer, steps: int) -> list[float]:
    batch = tokenizer(corpus(1), padding=True, return_tensors="pt", return_token_type_ids=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def _torch_logits(model, sequences) -> list[np.ndarray]:
    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in sequences]


def _diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    d = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b, strict=True)])
    return float(d.max()), float(d.mean())


def test_qat_student_exported_to_q4_0_runs_in_llama_cpp_like_its_fake_quant_model(base_llama, tmp_path):
    pytest.importorskip("llama_cpp")
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_llama)
    student = AutoModelForCausalLM.from_pretrained(base_llama, dtype=torch.float32)
    handle = attach_gguf_fake_quant(student, "q4_0")
    losses = _train_qat(student, tok, steps=15)
    assert losses[-1] < losses[0], losses
    handle.remove()  # convert: the latent float weights are what gets saved and exported
    student.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    path = tmp_path / "student.gguf"
    result = G.write_gguf(tmp_path / "student", path, "q4_0", task="causal-lm")
    assert result["tensor_types"] == {"F32": 5, "Q4_0": 15, "Q8_0": 1}, result["tensor_types"]

    # the file's weights, decoded by gguf-py, are the fake-quant weights exactly
    with attach_gguf_fake_quant(student, "q4_0") as handle:
        quantized = handle.quantized_weights()
        plan = handle.plan
    config = student.config.to_dict()
    arch = G.ARCHITECTURES["llama"]
    stored = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    for rule in plan.tensors:
        if rule.ggml_type == "F32":
            continue
        t = stored[rule.gguf_name]
        decoded = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rule.shape)
        want = G._arch_array(arch, config, rule.name, quantized[rule.source].numpy())
        _assert_same_bits(decoded, want, f"{rule.gguf_name} ({rule.ggml_type})")

    sequences = [tok(t)["input_ids"] for t in EVAL_TEXTS]
    with G.GGUFRunner(path, task="causal-lm", kv_cache="f32") as runner:
        llama_cpp_logits = [runner.logits_ids(ids) for ids in sequences]
    float_logits = _torch_logits(student, sequences)
    figures = {"ptq (torch float)": _diff(float_logits, llama_cpp_logits)}
    for simulate in (False, True):
        with attach_gguf_fake_quant(student, "q4_0", simulate_activations=simulate):
            fq_logits = _torch_logits(student, sequences)
        figures[f"qat (activations {'simulated' if simulate else 'float'})"] = _diff(
            fq_logits, llama_cpp_logits
        )
    ptq = figures["ptq (torch float)"]
    qat = figures["qat (activations simulated)"]
    summary = ", ".join(f"{k}: max {m:.4g} mean {a:.3g}" for k, (m, a) in figures.items())
    print("\nGGUF q4_0 logits vs llama.cpp:", summary)
    # Measured (f32 KV cache, 8 sentences, 174 positions): PTQ max 2.6 / mean 0.21; QAT with float
    # activations max 0.12 / mean 0.014; QAT simulating llama.cpp's Q8_0 activations max 4.8e-6 /
    # mean 2.2e-7, i.e. float-summation noise. An activation that sits on a rounding boundary can
    # still flip (seen on other sentences: one position off by up to 0.04), hence the margins.
    assert ptq[0] >= 5 * qat[0] and ptq[1] >= 5 * qat[1], summary
    # Those figures are llama.cpp's x86 kernels with its CPU repack buffers, which the simulation
    # models. On AMX CPUs the edgedistill runner turns llama.cpp's extra buffers off (its AMX matmul
    # crashes), and the plain multi-token kernels round differently: mean 8.3e-4 on a Xeon with AMX,
    # still 18x closer than float activations and 240x closer than post-training quantization.
    simulated_kernels = numerics.llama_cpp_extra_buffers_default()
    assert qat[1] < (1e-4 if simulated_kernels else 2e-3), summary
    # the activation simulation is on by default because it brings torch this close to llama.cpp
    assert qat[1] < figures["qat (activations float)"][1] / 10, summary
