"""Carry each example's confidence group through collation.

TRL's collator keeps only the keys it knows; this wrapper adds the group as a boolean tensor under
`CONFIDENT_KEY`, whatever collator it wraps (TRL's default or the user's own).
"""

from __future__ import annotations

from typing import Any

import torch

CONFIDENT_KEY = "sftmix_confident"


class ConfidenceCollator:
    def __init__(self, collator, column: str):
        self.collator = collator
        self.column = column

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        if examples and self.column in examples[0]:
            batch[CONFIDENT_KEY] = torch.tensor([bool(example[self.column]) for example in examples])
        return batch

    def __getattr__(self, name: str):  # behave like the wrapped collator (e.g. `pad_token_id`)
        if name in ("collator", "column"):
            raise AttributeError(name)
        return getattr(self.collator, name)
