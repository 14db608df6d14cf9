"""The model card (README.md next to the model).

The card is TRL's (`SFTTrainer.create_model_card`: quick start, framework versions, citations) with the paper as the
trainer's, plus an SFTMix section: the Mixup settings, the dynamics pass's settings, the confident / unconfident
split with confidence quantiles (from the scores file) and the data map, copied next to the model.

`push_to_hub` uploads no cache of the run: transformers skips `checkpoint-*` and `_*`, which holds `_dynamics/`.
"""

from __future__ import annotations

import logging
import shutil
import textwrap
from pathlib import Path

logger = logging.getLogger(__name__)

SFTMIX_PAPER = {
    "title": "SFTMix: Elevating Language Model Instruction Tuning with Mixup Recipe",
    "id": "2410.05248",
    "citation": textwrap.dedent("""\
        @inproceedings{xiao2026sftmix,
            title     = {{SFTMix: Elevating Language Model Instruction Tuning with Mixup Recipe}},
            author    = {Yuxin Xiao and Shujian Zhang and Wenxuan Zhou and Marzyeh Ghassemi and Sanqiang Zhao},
            booktitle = {Proceedings of the 64th Annual Meeting of the Association for Computational Linguistics (ACL)},
            year      = {2026},
            url       = {https://arxiv.org/abs/2410.05248},
        }"""),
}
DATA_MAP = "data_map.png"
MIXUP_SETTINGS = (
    "mixup_weight",
    "mixup_alpha",
    "mixup_alignment",
    "mixup_lambda_sampling",
    "mixup_text_as_response",
    "confidence_column",
)
DYNAMICS_SETTINGS = (
    "confidence",
    "num_checkpoints",
    "checkpoints",
    "confident_fraction",
    "reference_model",
    "reference_num_train_epochs",
    "reference_max_steps",
)
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def data_map_path(scores_path) -> Path:
    """The data map the dynamics pass drew next to `scores_path`."""
    from sftmix.dynamics.output import picture_paths

    return picture_paths(scores_path)["data_map"]


def sftmix_section(args, scores_path=None, data_map: str | None = None) -> str:
    """The card's SFTMix section: settings, split statistics, data map (a path relative to the card)."""
    lines = ["## SFTMix", ""]
    lines.append(
        f"Trained with [SFTMix](https://arxiv.org/abs/{SFTMIX_PAPER['id']}): next-token prediction plus a Mixup "
        "regulariser that interpolates confident and unconfident examples, split by the training dynamics of a "
        "reference run."
    )
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| `{name}` | `{getattr(args, name)}` |" for name in MIXUP_SETTINGS if hasattr(args, name)]
    if scores_path is None or not Path(scores_path).is_file():
        if getattr(args, "mixup_weight", 0):
            lines += [
                "",
                f"The confident / unconfident split came from the `{args.confidence_column}` column.",
            ]
        return "\n".join(lines) + "\n"
    from sftmix.scores import read_scores

    frame, metadata = read_scores(scores_path)
    dynamics = metadata.get("settings") or {}
    confident, excluded = int(frame["confident"].sum()), len(metadata.get("excluded_ids", []))
    scored = frame["confidence"].notna().any()  # nothing is scored for a random split
    labels = ", ".join(str(c.get("label")) for c in metadata.get("checkpoints", []))
    lines += [f"| dynamics `{name}` | `{dynamics[name]}` |" for name in DYNAMICS_SETTINGS if name in dynamics]
    lines += [
        f"| reference model | `{metadata.get('reference_model')}` |",
        f"| reference checkpoints scored | {labels or '-'} |",
        "",
        "### Split",
        "",
        f"{len(frame)} examples{' scored' if scored else ''}: {confident} confident, "
        f"{len(frame) - confident} unconfident"
        + (f", {excluded} excluded (no trainable token)." if excluded else "."),
    ]
    if not scored:
        lines.append("A random split (`split: random`, the ablation): nothing was scored.")
    else:
        quantiles = frame["confidence"].quantile(list(QUANTILES))
        lines += [
            (
                "Confidence is minus the IFD (response perplexity with / without its prompt) averaged over "
                if dynamics.get("confidence") == "ifd"
                else "Confidence is minus the response perplexity averaged over "
            )
            + (
                "the epochs of this run's own training forward (`dynamics.mode: training`)."
                if dynamics.get("mode") == "training"
                else "the reference checkpoints."
            ),
            "",
            "| quantile | " + " | ".join(f"{q:g}" for q in QUANTILES) + " |",
            "|---" * (len(QUANTILES) + 1) + "|",
            "| confidence | " + " | ".join(f"{v:.4g}" for v in quantiles) + " |",
        ]
    if data_map:
        lines += ["", "### Data map", "", f"![Data map: confidence and variability per example]({data_map})"]
    return "\n".join(lines) + "\n"


class SFTMixHubMixin:
    """For `SFTMixTrainer`: the SFTMix model card (Hub uploads skip `_dynamics/` by transformers' own `_*` rule)."""

    _paper = SFTMIX_PAPER

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """`output_dir/README.md`: TRL's card citing the paper, with the SFTMix section; the data map beside it."""
        if not self.is_world_process_zero():
            return
        args = self.args
        if model_name is None:
            model_name = (args.hub_model_id or str(args.output_dir)).rstrip("/").split("/")[-1]
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        output_dir = Path(args.output_dir)
        recorded = getattr(args, "training_dynamics", False)
        scores_path = self.training_dynamics_path if recorded else getattr(args, "dynamics_path", None)
        data_map = None
        if scores_path and data_map_path(scores_path).is_file():  # (a run recording its own: the last save's card)
            shutil.copyfile(data_map_path(scores_path), output_dir / DATA_MAP)
            data_map = DATA_MAP
        readme = output_dir / "README.md"
        # TRL's template links a base model and repository that are not on the Hub (local paths) as `None`
        base = getattr(self.model.config, "_name_or_path", "") or "a local model"
        card = readme.read_text(encoding="utf-8").replace("[None](https://huggingface.co/None)", f"`{base}`")
        card = card.replace('model="None"', f'model="{model_name}"')
        section = sftmix_section(args, scores_path, data_map)
        at = card.find("## Citations")
        card = card + "\n" + section if at < 0 else card[:at] + section + "\n" + card[at:]
        readme.write_text(card, encoding="utf-8")
        logger.info("Model card written to %s", readme)
