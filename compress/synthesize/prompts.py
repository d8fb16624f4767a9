"""The LM's prompts: seeded combinations of a template's slots (or a prompts file), prompt i fixed by (seed, i)."""

from __future__ import annotations

import itertools
import random

from edgedistill.compress.generate.config import GenerateError
from edgedistill.compress.generate.prompts import read_prompts
from edgedistill.compress.synthesize.config import PromptsConfig, SynthesizeError, template_fields


def build_prompts(cfg: PromptsConfig, count: int, seed: int) -> list[str]:
    """``count`` prompts. From the template: every combination of the slots' values, in an order
    shuffled by ``seed``, cycled when ``count`` is larger (each repeat still gets its own sample
    seed). Prompt i does not depend on ``count``, so a larger count extends an earlier store."""
    if cfg.file is not None:
        try:
            pool = read_prompts(cfg.file)
        except GenerateError as exc:
            raise SynthesizeError(
                f"{exc}\n(synthesize reads prompts.file / --prompts-file like generate)"
            ) from None
        return [pool[i % len(pool)] for i in range(count)]
    names = list(dict.fromkeys(template_fields(cfg.template)))
    combos = list(itertools.product(*(cfg.slots[name] for name in names)))
    random.Random(f"edgedistill-synthesize-prompts:{seed}").shuffle(combos)
    return [
        cfg.template.format(**dict(zip(names, combos[i % len(combos)], strict=True))) for i in range(count)
    ]


def distinct_prompts(cfg: PromptsConfig) -> int | None:
    """How many different prompts the template can make (None for a prompts file)."""
    if cfg.file is not None:
        return None
    total = 1
    for name in dict.fromkeys(template_fields(cfg.template)):
        total *= len(cfg.slots[name])
    return total
