"""A PEFT adapter folder as ``model=``: continue training that adapter, or merge it into its base first.

An adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, no ``config.json``: the LoRA output of
``SFTTrainer`` or of any trl_ext trainer, or a Hub repo holding one) has no ``model_type``, so TRL's trainers fail on
it ("Unrecognized model …"). :func:`resolve_adapter_model` turns it into what the trainers accept, before TRL loads
anything; every trl_ext trainer calls it first, and calls :func:`use_base_as_reference` after TRL's ``__init__``:

- **continue** (default, ``merge_adapter=False``): the base (``base_model_name_or_path`` of ``adapter_config.json``)
  is loaded as TRL loads a string model (``model_init_kwargs``, ``quantization_config``: a 4-bit base gets the adapter
  on top, as in QLoRA), the adapter on it with ``is_trainable=True``, and that ``PeftModel`` goes to TRL. The
  reference policy is the base with the adapters disabled, as in a LoRA run from the base (TRL's own rule for a
  ``PeftModel`` *instance* is a frozen copy of the starting adapter; trl_ext deletes that copy for adapter folders).
  A ``peft_config`` as well is refused: there would be two adapters.
- **merge** (``merge_adapter=True``): the adapter is merged into the base (full precision, the ``dtype`` of
  ``model_init_kwargs``) and the merged model + tokenizer are saved to ``output_dir/_merged_base`` (``_*`` is never
  pushed to the Hub); that folder is the ``model``, so TRL trains it like any full model — fully, or with a new
  ``peft_config`` (whose saved adapter then names this folder as its base), 4-bit if asked — and the reference is the
  merged model. A folder left by an earlier run from the same adapter files is reused.

The tokenizer comes from the adapter folder when it holds one, else from the base.

Example:
    >>> from trl_ext.trainers.rft import RFTConfig, RFTTrainer
    >>> trainer = RFTTrainer(model="outputs/sft-lora", reward_funcs=grader, train_dataset=data,
    ...                      args=RFTConfig("outputs/rft"))  # doctest: +SKIP
    >>> trainer.model.peft_config["default"].base_model_name_or_path  # doctest: +SKIP
    'HuggingFaceTB/SmolLM2-135M-Instruct'
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADAPTER_CONFIG_NAME = "adapter_config.json"
MERGED_FOLDER_NAME = "_merged_base"
"""Sub-folder of ``output_dir`` holding the merged model when ``merge_adapter=True`` (``_*`` is not pushed)."""
MERGE_RECORD_NAME = "trl_ext_merge.json"
ADAPTER_FOLDER_ATTRIBUTE = "_trl_ext_adapter_folder"
"""Set on a ``PeftModel`` loaded by :func:`resolve_adapter_model`: the adapter folder it continues."""
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "processor_config.json", "preprocessor_config.json")


@dataclass
class AdapterFolderArguments:
    """Config fields for a PEFT adapter folder as ``model`` (a base of every trl_ext trainer config)."""

    merge_adapter: bool = field(
        default=False,
        metadata={
            "help": "When `model` is a PEFT adapter folder (adapter_config.json, no config.json): False (default) "
            "continues training that adapter on its base (base_model_name_or_path), with the base (adapters "
            "disabled) as the reference; a peft_config as well is refused. True merges the adapter into its base "
            "first (saved to output_dir/_merged_base) and trains that as a full model, or with a new peft_config; "
            "the reference is the merged model. Ignored for other models."
        },
    )


# ---------------------------------------------------------------------------------------------------------------------
# Finding adapter folders
# ---------------------------------------------------------------------------------------------------------------------


def _repo_file(model_id: str, filename: str, revision: str | None = None) -> str | None:
    """Path of ``filename`` in a local folder or a (cached / reachable) Hub repo, or ``None``."""
    if os.path.isdir(model_id):
        path = os.path.join(model_id, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    try:
        return cached_file(model_id, filename, revision=revision, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None


def is_adapter_folder(model: Any, revision: str | None = None) -> bool:
    """Whether ``model`` is a string naming a PEFT adapter: a folder or Hub repo with ``adapter_config.json`` and no
    ``config.json``.

    Example:
        >>> is_adapter_folder("outputs/sft-lora")  # doctest: +SKIP
        True
    """
    if not isinstance(model, (str, os.PathLike)):
        return False
    model = str(model)
    return _repo_file(model, ADAPTER_CONFIG_NAME, revision) is not None and \
        _repo_file(model, "config.json", revision) is None


def adapter_base_model(adapter: str, revision: str | None = None) -> str:
    """``base_model_name_or_path`` of an adapter folder; a relative local path that does not exist from the working
    directory is tried relative to the adapter folder. Raises ``ValueError`` when the config names no base."""
    path = _repo_file(adapter, ADAPTER_CONFIG_NAME, revision)
    base = json.loads(Path(path).read_text()).get("base_model_name_or_path") if path else None
    if not base:
        raise ValueError(
            f"The PEFT adapter folder {adapter!r} names no base model (base_model_name_or_path is empty in its "
            f"{ADAPTER_CONFIG_NAME}); set it to the base model's Hub id or folder."
        )
    if os.path.isdir(adapter) and not os.path.isabs(base) and not os.path.exists(base):
        beside = os.path.join(adapter, base)
        if os.path.isdir(beside):
            return beside
    return base


def _check_base_available(base: str, adapter: str, trainer: str, trust_remote_code: bool) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        offline = " (HF_HUB_OFFLINE is set: only local folders and the Hub cache are searched)" \
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") else ""
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(
            f"{trainer}: model={adapter!r} is a PEFT adapter folder whose base model {base!r} (base_model_name_or_path "
            f"in {os.path.join(adapter, ADAPTER_CONFIG_NAME)}) cannot be found{offline}: {first_line}. Download the "
            "base, or set base_model_name_or_path to a local folder holding it."
        ) from exc


def tokenizer_source(model_id: str, revision: str | None = None) -> str:
    """Where the tokenizer of ``model_id`` is: an adapter folder with tokenizer files → itself; an adapter folder
    without → its base; anything else → ``model_id`` unchanged.

    Example:
        >>> from transformers import AutoTokenizer
        >>> tokenizer = AutoTokenizer.from_pretrained(tokenizer_source("outputs/sft-lora"))  # doctest: +SKIP
    """
    model_id = str(model_id)
    if not is_adapter_folder(model_id, revision):
        return model_id
    if any(_repo_file(model_id, name, revision) for name in _TOKENIZER_FILES):
        return model_id
    return adapter_base_model(model_id, revision)


def peft_config_for(model_id: str, peft_config: Any, merge_adapter: bool) -> Any:
    """The ``peft_config`` a command passes with ``model_id``: ``None`` for an adapter folder that is continued
    (``merge_adapter`` False: the folder's own adapter config applies, and the LoRA flags are not used), else
    ``peft_config`` unchanged."""
    if peft_config is not None and not merge_adapter and is_adapter_folder(model_id):
        print(f"{model_id} is a PEFT adapter folder: continuing its adapter (its own LoRA config; the LoRA flags "
              "apply only with --merge_adapter true).")
        return None
    return peft_config


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def resolve_adapter_model(
    model: Any,
    args: Any,
    *,
    trainer: str,
    quantization_config: Any = None,
    peft_config: Any = None,
    processing_class: Any = None,
) -> tuple[Any, Any, Any]:
    """``(model, processing_class, quantization_config)`` to hand to TRL's ``__init__`` in place of the arguments.

    Anything but an adapter folder is returned unchanged. For an adapter folder, with ``args.merge_adapter`` False:
    a trainable ``PeftModel`` (base loaded with ``args.model_init_kwargs`` and ``quantization_config``, which is then
    consumed: ``None`` is returned for it) and, if ``processing_class`` is ``None`` and the folder has a tokenizer,
    that tokenizer (loaded as TRL's trainer for ``args`` loads it: left padding for GRPO). With
    ``args.merge_adapter`` True: the path of the merged model folder (see the module docstring), which TRL then loads
    with ``model_init_kwargs`` and ``quantization_config``. ``trainer`` names the caller in errors.
    """
    if not is_adapter_folder(model):
        return model, processing_class, quantization_config
    from ..trainers.trl_compat import create_model, trl_model_init_kwargs

    adapter = str(model)
    init_kwargs = trl_model_init_kwargs(args, quantization_config)
    base = adapter_base_model(adapter, init_kwargs.get("revision"))
    merge = bool(getattr(args, "merge_adapter", False))
    if peft_config is not None and not merge:
        raise ValueError(
            f"{trainer}: model={adapter!r} is a PEFT adapter folder (base {base!r}) and a peft_config was given too: "
            "that would stack a second adapter. Drop peft_config to continue training the folder's adapter, or set "
            "merge_adapter=True to merge it into its base first and train a new adapter with peft_config."
        )
    _check_adapter_task(adapter, trainer)
    _check_base_available(base, adapter, trainer, init_kwargs["trust_remote_code"])
    if merge:
        return str(merge_adapter_folder(adapter, base, args, init_kwargs)), processing_class, quantization_config

    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(create_model(base, **init_kwargs), adapter, is_trainable=True)
    setattr(peft_model, ADAPTER_FOLDER_ATTRIBUTE, adapter)
    if processing_class is None and tokenizer_source(adapter) == adapter:
        from transformers import AutoProcessor

        processing_class = AutoProcessor.from_pretrained(
            adapter, trust_remote_code=init_kwargs["trust_remote_code"], **_processor_kwargs(args)
        )
    return peft_model, processing_class, None


def _processor_kwargs(args: Any) -> dict:
    from trl import GRPOConfig

    from ..trainers.trl_compat import DPO_PROCESSOR_KWARGS, GRPO_PROCESSOR_KWARGS

    return dict(GRPO_PROCESSOR_KWARGS if isinstance(args, GRPOConfig) else DPO_PROCESSOR_KWARGS)


def _check_adapter_task(adapter: str, trainer: str) -> None:
    config = json.loads(Path(_repo_file(adapter, ADAPTER_CONFIG_NAME)).read_text())
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise ValueError(
            f"{trainer}: the PEFT adapter folder {adapter!r} has task_type={task!r}; {trainer} trains a causal "
            "language model and needs a CAUSAL_LM adapter (e.g. the LoRA output of SFTTrainer)."
        )


def _adapter_record(adapter: str, base: str) -> dict:
    """What identifies a merge: the adapter folder, its base and its files' sizes and modification times."""
    files = {}
    if os.path.isdir(adapter):
        for name in sorted(os.listdir(adapter)):
            if name.startswith("adapter_"):
                stat = os.stat(os.path.join(adapter, name))
                files[name] = [stat.st_size, stat.st_mtime_ns]
    return {"adapter": os.path.abspath(adapter) if os.path.isdir(adapter) else adapter, "base": base, "files": files}


def merge_adapter_folder(adapter: str, base: str, args: Any, init_kwargs: dict) -> Path:
    """Merge ``adapter`` into ``base`` and save model + tokenizer to ``args.output_dir/_merged_base``; return it.

    The base is loaded in full precision (``init_kwargs`` without ``quantization_config``), so a 4-bit run quantizes
    the merged weights when TRL loads this folder. The main process writes while the others wait; a folder whose
    ``trl_ext_merge.json`` records the same adapter files is reused as is.
    """
    from peft import PeftModel
    from transformers import AutoProcessor

    from ..trainers.trl_compat import create_model

    target = Path(args.output_dir) / MERGED_FOLDER_NAME
    record = _adapter_record(adapter, base)
    with args.main_process_first(local=bool(getattr(args, "save_on_each_node", False)), desc="merging the adapter"):
        record_path = target / MERGE_RECORD_NAME
        if record_path.is_file() and json.loads(record_path.read_text()) == record:
            return target
        if not args.should_save:
            raise RuntimeError(f"merge_adapter: the main process did not write {target}.")
        kwargs = {k: v for k, v in init_kwargs.items() if k not in ("quantization_config", "load_in_4bit",
                                                                     "load_in_8bit")}
        kwargs["device_map"] = None
        merged = PeftModel.from_pretrained(create_model(base, **kwargs), adapter).merge_and_unload()
        if target.exists():
            shutil.rmtree(target)
        merged.save_pretrained(str(target))
        AutoProcessor.from_pretrained(tokenizer_source(adapter),
                                      trust_remote_code=init_kwargs["trust_remote_code"]).save_pretrained(str(target))
        record_path.write_text(json.dumps(record, indent=2))
    return target


def use_base_as_reference(trainer: Any) -> None:
    """After TRL's ``__init__``: for a policy continued from an adapter folder, delete the frozen copy of the starting
    adapter that TRL adds as the reference, so the reference is the base with adapters disabled (the module
    docstring). Any other policy is left as TRL built it."""
    from ..trainers.trl_compat import drop_trl_reference_adapter

    model = trainer.accelerator.unwrap_model(trainer.model)
    if getattr(model, ADAPTER_FOLDER_ATTRIBUTE, None) is not None:
        drop_trl_reference_adapter(model)


__all__ = [
    "AdapterFolderArguments",
    "adapter_base_model",
    "is_adapter_folder",
    "merge_adapter_folder",
    "peft_config_for",
    "resolve_adapter_model",
    "tokenizer_source",
    "use_base_as_reference",
]
