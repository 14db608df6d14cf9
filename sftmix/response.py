"""Which tokens are an example's response: the tokens SFTMix mixes and the dynamics pass scores, whatever the
next-token loss trains on (docs/choices.md). TRL builds the assistant / completion masks only when asked and folds
them into the labels, so the response is a column of its own, `RESPONSE_MASK` (1 on response tokens):

- `messages` (and ShareGPT `conversations`): the assistant turns, as the chat template's `{% generation %}`
  markers mark them (TRL's training-template patch adds the markers to the templates it knows);
- `prompt` / `completion` (plain or conversational): the completion;
- plain `text`: no response; every token counts only with `mixup_text_as_response=True`;
- pre-tokenized `input_ids`: the tokens with a label (`labels != -100`).

`ResponseMaskMixin` adds the column during SFTTrainer's own dataset preparation. When the next-token labels
already are the response (the default: `assistant_only_loss` for conversations, `completion_only_loss` for
prompt-completion), one preparation gives both. Otherwise TRL's preparation runs a second time with
response-only masking and no truncation, and the mask is cut to each training row (same `truncation_mode`).
"""

from __future__ import annotations

import copy

import numpy as np

RESPONSE_MASK = "sftmix_response_mask"
_ROW = "__sftmix_row"

WORKING_FORMATS = (
    "`messages` (assistant turns), `prompt`/`completion` (the completion), ShareGPT `conversations`, Alpaca "
    "`instruction`/`input`/`output` (converted by sftmix's data loader), or pre-tokenized `input_ids` + `labels`"
)


class NoResponseError(ValueError):
    """The data has no response tokens for SFTMix to mix or score."""


def data_format(example: dict) -> str:
    """'conversation', 'prompt_completion', 'tokenized' or 'text' for one raw example."""
    from trl.data_utils import is_conversational, is_conversational_from_value

    if "input_ids" in example:
        return "tokenized"
    if "prompt" in example and "completion" in example:
        return "prompt_completion"
    if is_conversational(example) or is_conversational_from_value(example):
        return "conversation"
    return "text"


def assistant_only_loss_for(assistant_only_loss: bool | None, first_example: dict | None) -> bool:
    """The `assistant_only_loss` SFTTrainer gets: None (SFTMixConfig's default) is True for conversational data
    (`first_example`: its first raw row), False for other data or none; True / False as given."""
    if assistant_only_loss is None:
        return first_example is not None and data_format(first_example) == "conversation"
    return assistant_only_loss


class ResponseMaskMixin:
    """For an `SFTTrainer` subclass: the prepared train dataset also holds `RESPONSE_MASK`.

    Set `self._response_mask_for` (the dataset names to mark, e.g. {"train"}) and
    `self._text_as_response` before `SFTTrainer.__init__` runs.
    """

    _response_mask_for: frozenset = frozenset()
    _text_as_response: bool = False

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        def prepare(data, prepare_args=args):
            return super(ResponseMaskMixin, self)._prepare_dataset(
                data, processing_class, prepare_args, packing, formatting_func, dataset_name
            )

        if dataset_name not in self._response_mask_for or RESPONSE_MASK in dataset.column_names:
            return prepare(dataset)
        kind = "text" if formatting_func is not None else data_format(next(iter(dataset)))
        if kind == "text":
            if not self._text_as_response:
                raise NoResponseError(
                    "Plain-text data (a `text` field or a formatting function) has no response, and SFTMix mixes the "
                    f"hidden states that predict responses. Use one of {WORKING_FORMATS}; or set "
                    "`mixup_text_as_response: true` to mix and score every token of the text."
                )
            return prepare(dataset).map(lambda row: {RESPONSE_MASK: [1] * len(row["input_ids"])}, desc="Marking text")
        if kind == "tokenized":
            if "labels" not in dataset.column_names:
                raise NoResponseError(
                    "A pre-tokenized dataset needs a `labels` column (-100 outside the response) to tell SFTMix "
                    "which tokens are the response."
                )
            return prepare(dataset).map(_mask_from_labels, desc="Marking responses")
        ntp_on = "assistant" if args.assistant_only_loss else "completion" if self.completion_only_loss else "all"
        if ntp_on == {"conversation": "assistant", "prompt_completion": "completion"}[kind]:  # labels = response
            prepared = self._response_pass(prepare, dataset, processing_class, args, kind, truncate=True)
            return prepared.map(_mask_from_labels, desc="Marking responses")
        # NTP trains on more than the response: TRL's preparation as the user set it, and a response-only one
        indexed = dataset.add_column(_ROW, np.arange(len(dataset), dtype=np.int64))
        prepared = prepare(indexed)
        responses = self._response_pass(prepare, indexed, processing_class, args, kind, truncate=False)
        responses = responses.select_columns(["input_ids", "labels"])  # untruncated, unfiltered: row i is i
        keep_end = args.truncation_mode == "keep_end"

        def add_mask(example):
            response = responses[int(example[_ROW])]
            labels, ids, n = response["labels"], response["input_ids"], len(example["input_ids"])
            cut = slice(len(ids) - n, None) if keep_end else slice(0, n)
            if ids[cut] != example["input_ids"]:
                raise NoResponseError(
                    f"Row {example[_ROW]}: the tokens of the response-only preparation differ from the training "
                    "tokens, so the response cannot be located (the training chat template renders the conversation "
                    "differently from the tokenizer's). Set `chat_template_path` to a template with "
                    "`{% generation %}` markers, or `assistant_only_loss: true`."
                )
            return _mask_from_labels({"labels": labels[cut]})

        prepared = prepared.map(add_mask, desc="Marking responses")
        return prepared.remove_columns(_ROW)

    def _response_pass(self, prepare, dataset, processing_class, args, kind, truncate):
        """TRL's preparation with response-only labels (assistant turns, or the completion)."""
        response_args = copy.copy(args)
        response_args.assistant_only_loss = kind == "conversation"
        if not truncate:
            response_args.max_length = None
        saved = self.completion_only_loss, self.chat_template
        self.completion_only_loss = kind == "prompt_completion"
        if kind == "conversation":
            self.chat_template = self.chat_template or _training_template(processing_class)
        try:
            return prepare(dataset, response_args)
        except RuntimeError as error:
            if "no assistant tokens" not in str(error):
                raise
            raise NoResponseError(
                "At least one conversation has no assistant tokens marked by the chat template, so SFTMix cannot "
                "find its response. Use a chat template whose assistant turns are wrapped in `{% generation %}` ... "
                "`{% endgeneration %}` (`chat_template_path`, e.g. sftmix/templates/chatml_training.jinja), and check "
                "that every conversation has an assistant turn."
            ) from error
        finally:
            self.completion_only_loss, self.chat_template = saved


def _mask_from_labels(example):
    return {RESPONSE_MASK: [int(label != -100) for label in example["labels"]]}


def check_marks_assistant(processing_class) -> None:
    """Refuse, with the fix, a chat template whose assistant tokens neither it nor TRL's patch can mark."""
    _training_template(processing_class)


def _training_template(processing_class):
    """The tokenizer's template if it marks assistant turns, else TRL's patched training template."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    template = tokenizer.chat_template
    if template is not None and has_generation_markers(template):
        return None
    try:
        return get_training_chat_template(tokenizer)
    except (ValueError, TypeError) as error:
        raise NoResponseError(
            "The chat template marks no assistant tokens (`{% generation %}`) and TRL has no training template for it, "
            "so SFTMix cannot find the responses of `messages` data. Set `chat_template_path` to a template whose "
            "assistant turns are wrapped in `{% generation %}` ... `{% endgeneration %}` (for ChatML: "
            "sftmix/templates/chatml_training.jinja)."
        ) from error
