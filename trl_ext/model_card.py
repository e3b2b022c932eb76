"""Model cards rendered from trl_ext's own templates (``trl_ext/model_cards/*.md``, shipped in the wheel).

TRL's ``create_model_card`` resolves its template inside the ``trl`` package and renders ``[None](…/None)`` for a
local base model; :class:`ModelCardMixin` replaces it for trl_ext trainers: it names the base model properly (the
embedded default model as ``HuggingFaceTB/SmolLM2-135M-Instruct``), tags PEFT/QLoRA runs, lists the key
hyper-parameters, the final metrics and library versions, and embeds the training-curve plot drawn from
``trainer.state.log_history``.

Example:
    >>> from transformers import Trainer
    >>> from trl_ext.model_card import ModelCardMixin
    >>> class MyTrainer(ModelCardMixin, Trainer):
    ...     _card_template = "rft.md"
    ...     _card_trainer_name = "RFTTrainer"
"""

from __future__ import annotations

import enum
import importlib.metadata
import math
import os
from pathlib import Path
from typing import Any

MODEL_CARDS_DIR = Path(__file__).parent / "model_cards"
PLOT_FILE = "training_curves.png"

TRL_EXT_CITATION = """@software{trl_ext,
    title  = {{trl\\_ext: reinforcement fine-tuning, process-supervised GRPO and unified likelihood trainers for TRL}},
    year   = 2026,
    url    = {https://github.com/trl-ext/trl-ext}
}"""

_COMMON_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "seed",
)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("trl-ext", "trl", "transformers", "peft", "accelerate", "datasets", "torch", "bitsandbytes"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def base_model_name(name_or_path: str | None) -> tuple[str, str | None]:
    """``(display_name, hub_id_or_None)`` of a base model: never ``None``.

    The embedded default model's folder maps to its Hub id; another local folder to its folder name (no Hub id);
    a Hub id to itself.
    """
    from .models.default import DEFAULT_MODEL_HUB_ID, _COMPLETE_MARKER

    if not name_or_path:
        return "an unnamed base model", None
    path = Path(str(name_or_path))
    if path.is_dir():
        if (path / _COMPLETE_MARKER).is_file() or name_or_path == DEFAULT_MODEL_HUB_ID:
            return DEFAULT_MODEL_HUB_ID, DEFAULT_MODEL_HUB_ID
        return path.resolve().name, None
    return str(name_or_path), str(name_or_path)


def _format(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, str) and any(c in value for c in "\n\r\t"):
        value = f"`{value!r}`"  # a table cell stays on one line: "\n\n" shows as '\n\n'
    elif isinstance(value, (list, tuple, dict)):
        value = f"`{value}`"
    return str(value).replace("|", "\\|")  # a pipe would split the table cell


def final_metrics(log_history: list[dict], limit: int = 24) -> dict[str, str]:
    """The last logged finite value of each numeric metric (``step``/``epoch`` excluded)."""
    metrics: dict[str, str] = {}
    for entry in reversed(log_history):
        for key, value in entry.items():
            if key in ("step", "epoch") or key in metrics or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[key] = _format(value)
    return dict(sorted(metrics.items())[:limit])


def render_model_card(template: str, **context: Any) -> str:
    """Render ``trl_ext/model_cards/<template>`` with Jinja2 (``StrictUndefined``: a missing field is an error)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(MODEL_CARDS_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(**context)


class ModelCardMixin:
    """Mixin for a ``transformers.Trainer`` subclass: ``create_model_card`` renders a trl_ext template.

    Subclasses set ``_card_template`` (file in ``trl_ext/model_cards``), ``_card_trainer_name``, ``_card_tags``,
    ``_card_citation`` (BibTeX of the method), ``_card_hyperparameters`` (config fields to list) and
    ``_card_plot_keys`` (log keys drawn in the training-curve PNG). Override ``_card_load_snippet`` to document
    extra artefacts (e.g. a value head).
    """

    _card_template: str = "_base.md"
    _card_trainer_name: str = "a trl_ext trainer"
    _card_tags: tuple[str, ...] = ()
    _card_citation: str = ""
    _card_hyperparameters: tuple[str, ...] = ()
    _card_plot_keys: tuple[str, ...] = ("loss",)

    def _card_uses_peft(self) -> tuple[bool, bool]:
        model = getattr(self, "model", None)
        peft = hasattr(model, "peft_config")
        qlora = bool(getattr(model, "is_loaded_in_4bit", False))
        if not qlora and model is not None:
            quant = getattr(getattr(model, "config", None), "quantization_config", None)
            qlora = bool(quant and (getattr(quant, "load_in_4bit", False) or (isinstance(quant, dict) and quant.get("load_in_4bit"))))
        return peft, qlora

    def _card_load_snippet(self, repo_id: str, peft: bool) -> str:
        if peft:
            return (
                "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
                f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
            )
        return (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
        )

    def save_training_curves(self) -> Path | None:
        """Draw ``_card_plot_keys`` from ``state.log_history`` into ``<output_dir>/training_curves.png``."""
        from .plotting import plot_training_curves

        return plot_training_curves(
            self.state.log_history, Path(self.args.output_dir) / PLOT_FILE, self._card_plot_keys,
            title=self._card_trainer_name,
        )

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ) -> None:
        """Write ``<output_dir>/README.md`` (and the curve PNG) on the main process."""
        from huggingface_hub import ModelCardData

        if not self.is_world_process_zero():
            return
        peft, qlora = self._card_uses_peft()
        model = self.model
        config = getattr(model, "config", None)
        if peft and hasattr(model, "get_base_model"):
            config = model.get_base_model().config
        display, hub_id = base_model_name(getattr(config, "_name_or_path", None))
        repo_id = self.hub_model_id if getattr(self, "hub_model_id", None) else None
        model_name = model_name or (repo_id.split("/")[-1] if repo_id else Path(self.args.output_dir).name)

        all_tags = {"trl", "trl-ext", "generated_from_trainer", *self._card_tags}
        all_tags.update([tags] if isinstance(tags, str) else (tags or []))
        if peft:
            all_tags.add("peft")
        if qlora:
            all_tags.add("qlora")
        card_data = ModelCardData(
            base_model=hub_id,
            library_name="peft" if peft else "transformers",
            model_name=model_name,
            tags=sorted(all_tags),
            datasets=[dataset_name] if dataset_name and "/" in dataset_name else None,
            pipeline_tag="text-generation",
        )
        names = _COMMON_HYPERPARAMETERS + tuple(self._card_hyperparameters)
        hyper = {n: _format(getattr(self.args, n)) for n in dict.fromkeys(names) if getattr(self.args, n, None) is not None}
        plot = self.save_training_curves()
        text = render_model_card(
            self._card_template,
            card_data=card_data.to_yaml(),
            model_name=model_name,
            base_model=display,
            base_model_url=f"https://huggingface.co/{hub_id}" if hub_id else "#base-model",
            trainer_name=self._card_trainer_name,
            dataset_name=dataset_name,
            peft=peft,
            qlora=qlora,
            load_snippet=self._card_load_snippet(repo_id or f"path/to/{model_name}", peft),
            plot_file=plot.name if plot else None,
            hyperparameters=hyper,
            metrics=final_metrics(self.state.log_history),
            versions=_versions(),
            citation=(self._card_citation + "\n\n" + TRL_EXT_CITATION).strip(),
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        Path(self.args.output_dir, "README.md").write_text(text)
