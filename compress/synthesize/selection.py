"""Cleaning, deduplication and the selection rule that keeps the texts that teach most.

The rule, in order:

1. Clean: whitespace runs (newlines, tabs) become one space, so a text is one TSV field; a lead-in
   naming the review ("The movie review is as follows:", "Review:") and quotes the LM wraps a whole
   text in are removed.
2. Filter, each drop counted by reason: ``empty``; ``too_short`` / ``too_long`` (fewer than
   ``min_words`` / more than ``max_words`` words); ``truncated`` (an LM text cut off by
   max_new_tokens, only with ``drop_truncated``); ``duplicate`` (the same words as an earlier text,
   ignoring case and punctuation: the first one stays).
3. Score what is left: ``entropy`` = the teacher's entropy / log K (0 = certain, 1 = uniform);
   ``disagreement`` = Jensen-Shannon divergence of teacher and student / log 2 (0 = they agree);
   ``none`` = 0 for all. High scores teach most: a text the teacher is unsure of lies near its
   decision boundary, and one the student gets wrong is where it still has to learn.
4. Keep round(keep_fraction x n) texts (at least one): with ``balance_classes``, the best-scored
   text of each teacher class (argmax) in turn, so a domain whose texts lean to one class still
   yields a balanced set (a class that runs out leaves its turns to the others); otherwise the best
   scores overall. Ties go to the earlier text. The rest are dropped as ``not_selected``. Kept texts
   stay in index order.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from edgedistill.compress.synthesize.config import SelectionConfig

_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}
_WORD = re.compile(r"\w+")


# "Review:", "Here is a one-sentence movie review:", "The movie review is as follows:" (short, no quote).
_LEAD_IN = re.compile(r"^[^\"\u201c:]{0,50}\breview\b[^\"\u201c:]{0,20}:\s*", re.IGNORECASE)


def clean_text(raw: str) -> str:
    """One line of text: whitespace runs collapsed, a lead-in and quotes around the whole text removed."""
    text = _LEAD_IN.sub("", " ".join(raw.split()))
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    if text[:1] in _QUOTES and _QUOTES[text[0]] not in text[1:]:  # opened, never closed (cut off)
        text = text[1:].strip()
    return text


def dedup_key(text: str) -> str:
    """Two texts with the same words (case and punctuation aside) are duplicates."""
    return " ".join(_WORD.findall(text.lower()))


@dataclass
class Candidate:
    """A cleaned text that passed the filters, with the outputs the rule scores."""

    index: int  # position in the store (prompt_id)
    text: str
    teacher_probs: list[float]
    student_probs: list[float] | None = None
    score: float = 0.0

    @property
    def label(self) -> int:
        return max(range(len(self.teacher_probs)), key=self.teacher_probs.__getitem__)


def filter_texts(records: list[dict], cfg: SelectionConfig, dropped: Counter) -> list[tuple[int, str]]:
    """(index, cleaned text) of the records that pass the filters, in order; drops counted in ``dropped``."""
    seen: set[str] = set()
    kept = []
    for record in records:
        text = clean_text(record.get("response", ""))
        words = len(text.split())
        key = dedup_key(text)
        if not key:
            reason = "empty"
        elif words < cfg.min_words:
            reason = "too_short"
        elif words > cfg.max_words:
            reason = "too_long"
        elif cfg.drop_truncated and record.get("finish_reason") == "length":
            reason = "truncated"
        elif key in seen:
            reason = "duplicate"
        else:
            seen.add(key)
            kept.append((int(record["prompt_id"]), text))
            continue
        dropped[reason] += 1
    return kept


def normalized_entropy(p: list[float]) -> float:
    if len(p) < 2:
        return 0.0
    return -sum(x * math.log(x) for x in p if x > 0) / math.log(len(p))


def js_divergence(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon divergence / log 2: 0 for equal distributions, 1 for disjoint ones."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(a: list[float], b: list[float]) -> float:
        return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    return max(0.0, (kl(p, m) + kl(q, m)) / 2 / math.log(2))


def score(candidate: Candidate, rule: str) -> float:
    if rule == "entropy":
        return normalized_entropy(candidate.teacher_probs)
    if rule == "disagreement":
        assert candidate.student_probs is not None
        return js_divergence(candidate.teacher_probs, candidate.student_probs)
    return 0.0


def select(candidates: list[Candidate], cfg: SelectionConfig, dropped: Counter) -> list[Candidate]:
    """The kept candidates, in index order (steps 3-4 of the module's rule)."""
    if not candidates:
        return []
    for c in candidates:
        c.score = score(c, cfg.rule)
    keep = max(1, round(cfg.keep_fraction * len(candidates)))
    ranked = sorted(candidates, key=lambda c: (-c.score, c.index))
    if cfg.balance_classes:
        queues: dict[int, list[Candidate]] = {}
        for c in ranked:
            queues.setdefault(c.label, []).append(c)
        order = [queues[label] for label in sorted(queues)]
        chosen: list[Candidate] = []
        while len(chosen) < keep:
            for queue in order:
                if queue and len(chosen) < keep:
                    chosen.append(queue.pop(0))
            order = [q for q in order if q]
    else:
        chosen = ranked[:keep]
    dropped["not_selected"] += len(candidates) - len(chosen)
    return sorted(chosen, key=lambda c: c.index)
