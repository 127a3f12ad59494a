"""Prompts as versioned code: templates in include/prompts/<id>.yaml, A/B variants assigned per user.

A user's variant is fixed by a hash of (prompt id, user), so the same user always sees the same arm and the arms
get the configured split. Every rendering names (id, variant, version), which the request log records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

PROMPTS = Path(__file__).resolve().parents[2] / "include" / "prompts"


@dataclass(frozen=True)
class Prompt:
    id: str
    variant: str
    version: int
    template: str
    max_chars: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def render(self, question: str, passages: list[str],
               fits: Callable[[str], bool] | None = None) -> tuple[str, int]:
        """The prompt text and how many passages (best first) it carries. `fits` says whether a text fits the
        model (the served tokenizer's count, where known); by default, max_chars. The lowest-ranked passage is
        shortened, then dropped, until the prompt fits."""
        fits = fits or (lambda text: len(text) <= self.max_chars)
        used = list(passages)
        while True:
            context = "\n".join(f"[{i}] {p}" for i, p in enumerate(used, start=1))
            text = self.template.format(context=context, question=question)
            if fits(text) or not used:
                return text, len(used)
            if len(used[-1]) > 40:
                used[-1] = used[-1][:len(used[-1]) * 3 // 4].rstrip() + "…"
            else:
                used.pop()


@dataclass(frozen=True)
class PromptSet:
    id: str
    split: dict[str, int]
    variants: dict[str, Prompt]

    def for_user(self, user: str) -> Prompt:
        bucket = int.from_bytes(hashlib.sha256(f"{self.id}\0{user}".encode()).digest()[:8], "big") % 100
        for name, share in self.split.items():
            if bucket < share:
                return self.variants[name]
            bucket -= share
        raise AssertionError("split sums to 100 (checked at load)")


def load(prompt_id: str, directory: Path = PROMPTS) -> PromptSet:
    path = directory / f"{prompt_id}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"prompt {prompt_id!r}: no {path}")
    raw = yaml.safe_load(path.read_text())
    if raw.get("id") != prompt_id:
        raise ValueError(f"{path}: id is {raw.get('id')!r}, expected {prompt_id!r}")
    split = {str(k): int(v) for k, v in raw["split"].items()}
    if sum(split.values()) != 100 or set(split) != set(raw["variants"]):
        raise ValueError(f"{path}: split {split} must name every variant once and sum to 100")
    variants = {name: Prompt(prompt_id, name, int(v["version"]), v["template"], int(raw["max_prompt_chars"]))
                for name, v in raw["variants"].items()}
    for prompt in variants.values():
        if "{context}" not in prompt.template or "{question}" not in prompt.template:
            raise ValueError(f"{path}: variant {prompt.variant} needs both {{context}} and {{question}}")
    return PromptSet(prompt_id, split, variants)
