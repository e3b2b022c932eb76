"""Model cards rendered from trl_ext's own templates (top-level ``model_cards/*.md``, shipped in the wheel as
``trl_ext/model_cards``).

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
    ...     _tag_names, _name, _paper = ["trl", "trl-ext", "rft"], "RFT", {"citation": "@article{...}"}
"""

from __future__ import annotations

import enum
import fnmatch
import importlib.metadata
import math
import os
from pathlib import Path
from typing import Any



def _model_cards_dir() -> Path:
    """The templates: ``trl_ext/model_cards`` in an installed wheel, the repository's top-level ``model_cards/`` in a
    source checkout (editable install)."""
    for candidate in (Path(__file__).parent / "model_cards", Path(__file__).resolve().parents[1] / "model_cards"):
        if (candidate / "_base.md").is_file():
            return candidate
    raise FileNotFoundError(
        f"trl_ext model-card templates not found next to {Path(__file__).parent} nor in the source checkout."
    )


MODEL_CARDS_DIR = _model_cards_dir()
_DEFAULT_METRIC_KEYS = ("loss", "train_loss", "eval_*", "train_runtime")
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


def final_metrics(log_history: list[dict], keys: tuple[str, ...] = _DEFAULT_METRIC_KEYS, limit: int = 32) -> dict[str, str]:
    """The last logged finite value of the metrics named by ``keys``, in the order of ``keys``.

    ``keys`` are names or ``fnmatch`` patterns (``"rewards/*"``); the keys one pattern matches are listed sorted,
    a key is listed once (at its first pattern), at most ``limit`` rows.
    """
    last: dict[str, float] = {}
    for entry in reversed(log_history):
        for key, value in entry.items():
            if key in ("step", "epoch") or key in last or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                last[key] = value
    metrics: dict[str, str] = {}
    for pattern in keys:
        for key in sorted(k for k in last if fnmatch.fnmatchcase(k, pattern)):
            if key not in metrics and len(metrics) < limit:
                metrics[key] = _format(last[key])
    return metrics


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively, so
    ``json.dumps(..., allow_nan=False)`` writes strict JSON (``null``, never ``NaN``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy / torch scalar
        return strict_json(value.item())
    return value


def dumps_strict_json(value: Any, indent: int = 2, default: Any = None) -> str:
    """Strict JSON text (NaN/inf as ``null``) of ``value``, newline-terminated; ``default`` as in ``json.dumps``."""
    import json

    if default is not None:  # objects json cannot encode become default(obj) first, then NaN -> null
        value = json.loads(json.dumps(value, default=default))
    return json.dumps(strict_json(value), indent=indent, allow_nan=False) + "\n"


def render_model_card(template: str, **context: Any) -> str:
    """Render ``model_cards/<template>`` with Jinja2 (``StrictUndefined``: a missing field is an error)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(MODEL_CARDS_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(**context)


def base_model_markdown(name_or_path: str | None) -> str:
    """How the card's first line names the base model: a Markdown link for a Hub id, plain text (no link) for a
    local folder."""
    display, hub_id = base_model_name(name_or_path)
    if hub_id:
        return f"[{display}](https://huggingface.co/{hub_id})"
    if name_or_path:
        return f"the local model `{display}` (not on the Hub)"
    return display


def local_adapter_note(base_path: str) -> str:
    """The card's paragraph for a PEFT adapter trained on a local (non-Hub) base model."""
    return (
        f"This folder holds a PEFT adapter only. Its base model is the local folder `{base_path}` "
        "(recorded as `base_model_name_or_path` in `adapter_config.json`), so loading this folder by itself works on "
        "this machine only. Elsewhere, copy that folder and load the adapter on it explicitly:\n\n"
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("path/to/{Path(base_path).name}")\n'
        'model = PeftModel.from_pretrained(base, "path/to/this/adapter")\n'
        "model = model.merge_and_unload()  # optional: a plain transformers model\n```"
    )


class ModelCardMixin:
    """Mixin for a ``transformers.Trainer`` subclass: ``create_model_card`` renders a trl_ext template.

    The trainer's name, tags and citation come from TRL's own trainer metadata, the one source: ``_name`` (the card
    says ``<_name>Trainer``), ``_tag_names`` (the card's tags, also given to the model by TRL's ``add_model_tags``) and
    ``_paper["citation"]`` (BibTeX of the method; a trainer citing more overrides ``_card_citation``). Subclasses set
    ``_card_template`` (file in ``model_cards/``), ``_card_hyperparameters`` (config fields to list),
    ``_card_metric_keys`` (the final-metrics rows: names or ``fnmatch`` patterns, in order) and ``_card_plot_keys``
    (log keys drawn in the training-curve PNG). Override ``_card_load_snippet`` to document extra artefacts (e.g. a
    value head).

    The card is (re)written at the end of ``train()``, by every explicit ``save_model()`` (after the weights, so
    PEFT's placeholder ``README.md`` is replaced), into every checkpoint folder, and by ``push_to_hub``.
    A script sets ``card_eval_results``
    (``[{"metric_name": ..., "metric_type": "accuracy", "metric_value": 0.31, "dataset_name": ...}, ...]``) to put
    held-out results in the YAML ``model-index``, and ``card_dataset_name`` for the dataset.
    """

    _card_template: str = "_base.md"
    _card_hyperparameters: tuple[str, ...] = ()
    _card_metric_keys: tuple[str, ...] = _DEFAULT_METRIC_KEYS
    _card_plot_keys: tuple[str, ...] = ("loss",)
    card_eval_results: list[dict] | None = None
    card_dataset_name: str | None = None

    @property
    def _card_trainer_name(self) -> str:
        name = getattr(self, "_name", None)
        return f"{name}Trainer" if name else "a trl_ext trainer"

    @property
    def _card_tags(self) -> tuple[str, ...]:
        return tuple(getattr(self, "_tag_names", ()))

    @property
    def _card_citation(self) -> str:
        return (getattr(self, "_paper", None) or {}).get("citation", "")

    def train(self, *args: Any, **kwargs: Any):
        output = super().train(*args, **kwargs)  # type: ignore[misc]
        if self.args.should_save:  # type: ignore[attr-defined]
            self.create_model_card()
        return output

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)  # type: ignore[misc]
        # push_to_hub (internal call) writes the card itself right after; checkpoints get it via _save_checkpoint
        if not _internal_call and self.args.should_save:  # type: ignore[attr-defined]
            self.create_model_card()
            target = Path(output_dir) if output_dir else Path(self.args.output_dir)  # type: ignore[attr-defined]
            card = Path(self.args.output_dir, "README.md")  # type: ignore[attr-defined]
            if target.resolve() != Path(self.args.output_dir).resolve() and card.is_file():  # type: ignore[attr-defined]
                target.mkdir(parents=True, exist_ok=True)
                (target / "README.md").write_text(card.read_text())

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # the card first (a checkpoint push uploads output_dir), then the same card into the checkpoint folder,
        # over the placeholder README.md PEFT wrote there with the adapter
        if self.args.should_save:  # type: ignore[attr-defined]
            self.create_model_card()
        super()._save_checkpoint(model, trial)  # type: ignore[misc]
        if self.args.should_save and self.is_world_process_zero():  # type: ignore[attr-defined]
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            card = Path(self.args.output_dir, "README.md")  # type: ignore[attr-defined]
            folder = Path(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")  # type: ignore[attr-defined]
            if card.is_file() and folder.is_dir():
                (folder / "README.md").write_text(card.read_text())

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

    def _card_eval_results(self, model_name: str, dataset_name: str | None) -> list:
        from huggingface_hub import EvalResult

        results = []
        for r in self.card_eval_results or []:
            value = r.get("metric_value")
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            results.append(EvalResult(
                task_type=r.get("task_type", "text-generation"),
                dataset_type=r.get("dataset_type") or r.get("dataset_name") or dataset_name or "held-out",
                dataset_name=r.get("dataset_name") or dataset_name or "held-out split",
                dataset_split=r.get("dataset_split", "held-out"),
                metric_type=r.get("metric_type", "accuracy"),
                metric_name=r.get("metric_name"),
                metric_value=float(value),
            ))
        return results

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
        if dataset_name:
            self.card_dataset_name = dataset_name
        dataset_name = dataset_name or self.card_dataset_name
        peft, qlora = self._card_uses_peft()
        from .models.wrappers import unwrap_model

        config = getattr(unwrap_model(self.model), "config", None)
        base_path = getattr(config, "_name_or_path", None)
        display, hub_id = base_model_name(base_path)
        repo_id = self.hub_model_id if getattr(self, "hub_model_id", None) else None
        model_name = model_name or (repo_id.split("/")[-1] if repo_id else Path(self.args.output_dir).name)

        all_tags = {"trl", "trl-ext", "generated_from_trainer", *self._card_tags}
        all_tags.update([tags] if isinstance(tags, str) else (tags or []))
        if peft:
            all_tags.add("peft")
        if qlora:
            all_tags.add("qlora")
        eval_results = self._card_eval_results(model_name, dataset_name)
        card_data = ModelCardData(
            base_model=hub_id,
            library_name="peft" if peft else "transformers",
            model_name=model_name,
            tags=sorted(all_tags),
            datasets=[dataset_name] if dataset_name and "/" in dataset_name else None,
            pipeline_tag="text-generation",
            eval_results=eval_results or None,
        )
        names = _COMMON_HYPERPARAMETERS + tuple(self._card_hyperparameters)
        hyper = {n: _format(getattr(self.args, n)) for n in dict.fromkeys(names) if getattr(self.args, n, None) is not None}
        plot = self.save_training_curves()
        text = render_model_card(
            self._card_template,
            card_data=card_data.to_yaml(),
            model_name=model_name,
            base_model=display,
            base_model_md=base_model_markdown(base_path),
            adapter_note=local_adapter_note(str(base_path)) if peft and base_path and not hub_id else None,
            trainer_name=self._card_trainer_name,
            dataset_name=dataset_name,
            peft=peft,
            qlora=qlora,
            load_snippet=self._card_load_snippet(repo_id or f"path/to/{model_name}", peft),
            plot_file=plot.name if plot else None,
            hyperparameters=hyper,
            metrics=final_metrics(self.state.log_history, tuple(self._card_metric_keys)),
            eval_results=[(r.metric_name or r.metric_type, r.dataset_name, _format(r.metric_value)) for r in eval_results],
            versions=_versions(),
            citation=(self._card_citation + "\n\n" + TRL_EXT_CITATION).strip(),
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        Path(self.args.output_dir, "README.md").write_text(text)
