"""The torch engine of `edgedistill generate`: the teacher in transformers, a batch of left-padded
prompts per `generate` call, each row drawn from its own seeded generator."""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

from edgedistill.compress.generate.config import GenerateConfig, GenerateError, SamplingConfig


class TorchEngine:
    """The teacher loaded with transformers (a GGUF file dequantized to float32) on ``cfg.device``."""

    name = "torch"

    def __init__(self, cfg: GenerateConfig) -> None:
        self.cfg = cfg
        self.model, self.tokenizer, self.device = _load_teacher(cfg)
        self.stop_ids = stop_token_ids(self.model.generation_config, self.tokenizer)

    def teacher_info(self) -> dict[str, Any]:
        return _teacher_info(self.cfg, self.model, self.tokenizer)

    def prepare(self, texts: list[str]) -> None:
        """Nothing to size ahead: transformers grows its cache as it goes."""

    def run_info(self) -> dict[str, Any]:
        import torch

        threads = torch.get_num_threads()
        return {
            "engine": self.name,
            "torch": torch.__version__,
            "device": str(self.device),
            "threads": threads,
        }

    def generate_batch(self, texts: list[str], seeds: list[int]) -> list[dict[str, Any]]:
        return _generate_batch(self.cfg, self.model, self.tokenizer, self.device, texts, seeds, self.stop_ids)


def _load_teacher(cfg: GenerateConfig) -> tuple[Any, Any, Any]:
    import torch
    import transformers
    from packaging.version import Version

    from edgedistill.compress.models import load_model, load_tokenizer

    device = torch.device(
        "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if cfg.dtype == "auto":
        dtype: Any = "auto" if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype (the old name warns).
    dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = load_model(cfg.teacher, "causal-lm", role="teacher", **{dtype_key: dtype}).to(device)
    model.eval()
    tokenizer = load_tokenizer(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
    # Generation appends new tokens on the right, so prompts are padded on the left.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise GenerateError(
                f"the teacher's tokenizer ({cfg.teacher.path}) has neither a pad nor an end-of-sequence token; "
                "batches of prompts cannot be padded. Set a pad_token in its tokenizer_config.json."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, device


def _teacher_info(cfg: GenerateConfig, model: Any, tokenizer: Any) -> dict[str, Any]:
    from edgedistill.compress.data import tokenizer_fingerprint
    from edgedistill.compress.logit_cache import teacher_fingerprint
    from edgedistill.compress.models import teacher_provenance

    template = getattr(tokenizer, "chat_template", None)
    material = {
        "weights": teacher_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "chat_template": template if cfg.chat_template else None,
    }
    return {
        "path": cfg.teacher.path,
        "class": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "fingerprint": hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20],
        # a GGUF teacher: the file (sha256) and the quantization its weights were dequantized from
        "gguf": teacher_provenance(cfg.teacher),
    }


def stop_token_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The tokens a response ends at: the generation config's end token(s) and the tokenizer's."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def _row_sampler(sampling: SamplingConfig, generators: list[Any], vocab_size: int) -> Any:
    """A logits processor that draws each row's next token from that row's own generator.

    transformers samples a whole batch from the global RNG, so what a row gets would depend on
    the rows beside it. Here the draw happens in the processor (temperature, top-k, top-p, then
    one multinomial per row with its generator) and everything but the drawn token is set to
    -inf, so generate's greedy step picks exactly it. Greedy decoding only masks the rows a
    model may pad its vocabulary with.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            scores = scores.float().clone()
            scores[:, vocab_size:] = -float("inf")
            if not sampling.do_sample:
                return scores
            scores = scores / sampling.temperature
            if sampling.top_k and sampling.top_k < scores.shape[-1]:
                kth = torch.topk(scores, sampling.top_k, dim=-1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, -float("inf"))
            if sampling.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
                probs = sorted_scores.softmax(-1)
                # Drop a token when the mass before it already reaches top_p (the first always stays).
                drop = (probs.cumsum(-1) - probs) >= sampling.top_p
                scores = scores.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
            probs = scores.softmax(-1)
            chosen = torch.stack(
                [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(generators)]
            )
            picked = torch.full_like(scores, -float("inf"))
            return picked.scatter_(-1, chosen, 0.0)

    return RowSampler()


def _generate_batch(
    cfg: GenerateConfig,
    model: Any,
    tokenizer: Any,
    device: Any,
    texts: list[str],
    seeds: list[int],
    stop_ids: list[int],
) -> list[dict[str, Any]]:
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    encoded = tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        add_special_tokens=not cfg.chat_template,  # a chat template already writes the special tokens
        return_token_type_ids=False,
    ).to(device)
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    gen_config = GenerationConfig(
        max_new_tokens=cfg.sampling.max_new_tokens,
        do_sample=False,  # the row sampler draws; see _row_sampler
        num_beams=1,
        repetition_penalty=cfg.sampling.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids or None,
    )
    extra = {}
    # The checkpoint's generation_config.json must not change the sampling (transformers >= 4.50).
    if "use_model_defaults" in inspect.signature(model.generate).parameters:
        extra["use_model_defaults"] = False
    with torch.no_grad():
        sequences = model.generate(
            **encoded,
            generation_config=gen_config,
            logits_processor=LogitsProcessorList([_row_sampler(cfg.sampling, generators, len(tokenizer))]),
            **extra,
        )
    width = encoded["input_ids"].shape[1]
    results = []
    stops = set(stop_ids)
    for row in range(len(texts)):
        new = sequences[row, width:].tolist()
        end = next((i for i, t in enumerate(new) if t in stops), None)
        kept = new if end is None else new[:end]
        results.append(
            {
                "response": tokenizer.decode(kept, skip_special_tokens=True),
                "finish_reason": "length" if end is None else "stop",
                "prompt_tokens": int(encoded["attention_mask"][row].sum()),
                "response_tokens": len(new) if end is None else end + 1,
            }
        )
    return results
