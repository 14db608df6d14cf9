"""Carry each example's confidence group, response mask and row through collation.

TRL's collator keeps only the keys it knows; this wrapper adds the group as a boolean tensor under
`CONFIDENT_KEY`, the response mask (`sftmix.response`), padded like `input_ids`, under `RESPONSE_MASK`, and the
raw row index (`training_dynamics`) under `ROW_KEY`, whatever collator it wraps (TRL's default or the user's own).
"""

from __future__ import annotations

from typing import Any

import torch

from sftmix.dynamics.examples import ROW_INDEX
from sftmix.response import RESPONSE_MASK

CONFIDENT_KEY = "sftmix_confident"
ROW_KEY = ROW_INDEX


class ConfidenceCollator:
    def __init__(self, collator, column: str):
        self.collator = collator
        self.column = column

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        responses = [example.pop(RESPONSE_MASK, None) for example in examples]
        rows = [example.pop(ROW_KEY) for example in examples if ROW_KEY in example]
        batch = self.collator(examples)
        if rows:
            batch[ROW_KEY] = torch.tensor(rows, dtype=torch.long)
        if examples and self.column in examples[0]:
            batch[CONFIDENT_KEY] = torch.tensor([bool(example[self.column]) for example in examples])
        if responses and responses[0] is not None:  # right-padded with 0, as TRL's collator pads `input_ids`
            batch[RESPONSE_MASK] = torch.zeros(batch["input_ids"].shape, dtype=torch.bool)
            for row, mask in enumerate(responses):
                batch[RESPONSE_MASK][row, : len(mask)] = torch.as_tensor(mask, dtype=torch.bool)
        return batch

    def __getattr__(self, name: str):  # behave like the wrapped collator (e.g. `pad_token_id`)
        if name in ("collator", "column"):
            raise AttributeError(name)
        return getattr(self.collator, name)
