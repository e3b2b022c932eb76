"""Value head: a scalar critic ``V(s_t)`` read from a causal LM's last hidden state.

A :class:`ValueHead` is one ``Linear(hidden_size, 1)`` kept in float32 (also under autocast and on 4-bit bases). It is
saved next to the model or the PEFT adapter as two files, ``value_head.safetensors`` (weights) and
``value_head_config.json`` (shape and provenance), so a folder written by ``RFTTrainer`` still loads with plain
``AutoModelForCausalLM.from_pretrained`` / ``AutoPeftModelForCausalLM.from_pretrained``.

Example:
    >>> import torch
    >>> from trl_ext.models.value_head import ValueHead
    >>> head = ValueHead(hidden_size=8, init="zeros")
    >>> head(torch.randn(2, 5, 8)).shape
    torch.Size([2, 5])
    >>> head.save_pretrained("/tmp/vh")  # doctest: +SKIP
    >>> ValueHead.from_pretrained("/tmp/vh")  # doctest: +SKIP
    ValueHead(hidden_size=8)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .wrappers import unwrap_model

VALUE_HEAD_WEIGHTS_NAME = "value_head.safetensors"
"""File name of the value head's weights (safetensors, float32)."""
VALUE_HEAD_CONFIG_NAME = "value_head_config.json"
"""File name of the value head's config (``hidden_size``, ``bias``, ``dtype``, provenance)."""
VALUE_HEAD_ATTRIBUTE = "value_head"
"""Name of the submodule :func:`attach_value_head` registers on the causal LM."""

_FORMAT = "trl_ext.value_head"
_FORMAT_VERSION = 1

POLICY_WEIGHT_PATTERNS = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "pytorch_model.bin",
    "pytorch_model-*-of-*.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
"""Policy weight files (full model, shards, PEFT adapter) whose hashes pair a saved value head with its policy."""

ValueHeadInit = Literal["normal", "zeros"]


class ValueHead(nn.Module):
    """Scalar value per position: ``V = w·h + b`` on the (float32-cast) last hidden state ``h``.

    Args:
        hidden_size: width of the model's last hidden state.
        init: ``"normal"`` (``w ~ N(0, 1/(hidden_size+1))``, ``b = 0``, as OpenRLHF's critic head) or ``"zeros"``
            (``V ≡ 0`` at the start).
        bias: whether the linear layer has a bias.

    Example:
        >>> head = ValueHead(4, init="zeros")
        >>> head(torch.ones(1, 3, 4))
        tensor([[0., 0., 0.]], grad_fn=<SqueezeBackward1>)
    """

    def __init__(self, hidden_size: int, init: ValueHeadInit = "normal", bias: bool = True) -> None:
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"ValueHead: hidden_size must be a positive int, got {hidden_size!r}.")
        self.hidden_size = hidden_size
        self.summary = nn.Linear(hidden_size, 1, bias=bias, dtype=torch.float32)
        self.reset_parameters(init)
        # Provenance written to value_head_config.json (e.g. the reward model it was initialised from)
        self.source: str | None = None

    def reset_parameters(self, init: ValueHeadInit = "normal") -> None:
        """Re-initialise the weights (``"normal"`` or ``"zeros"``)."""
        with torch.no_grad():
            if init == "normal":
                self.summary.weight.normal_(mean=0.0, std=1.0 / (self.hidden_size + 1))
            elif init == "zeros":
                self.summary.weight.zero_()
            else:
                raise ValueError(f"ValueHead: init must be 'normal' or 'zeros', got {init!r}.")
            if self.summary.bias is not None:
                self.summary.bias.zero_()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(..., hidden_size)`` hidden states → ``(...)`` float32 values (autocast off: the head stays fp32)."""
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            return self.summary(hidden_states.to(self.summary.weight.dtype)).squeeze(-1)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}"

    # ---- construction from a reward model -------------------------------------------------------------------

    @classmethod
    def from_reward_model(cls, reward_model: nn.Module) -> ValueHead:
        """A value head initialised from a sequence-classification reward model's score head.

        The reward model (e.g. one trained by TRL's ``RewardTrainer``: ``AutoModelForSequenceClassification`` with
        ``num_labels=1``) maps the last hidden state of the last token to a reward through ``score``; copying that
        layer gives a critic that starts by predicting the reward model's score. Its hidden size must equal the
        policy's (same architecture family); the caller checks that.

        Example:
            >>> from transformers import AutoModelForSequenceClassification, LlamaConfig
            >>> rm = AutoModelForSequenceClassification.from_config(LlamaConfig(
            ...     hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            ...     num_key_value_heads=1, vocab_size=64, num_labels=1, pad_token_id=0))
            >>> torch.equal(ValueHead.from_reward_model(rm).summary.weight, rm.score.weight)
            True
        """
        score = _score_layer(reward_model)
        if score.out_features != 1:
            raise ValueError(
                f"ValueHead.from_reward_model: the reward model's score head has {score.out_features} outputs; a "
                "reward model has exactly one (num_labels=1)."
            )
        head = cls(score.in_features, init="zeros", bias=True)
        with torch.no_grad():
            head.summary.weight.copy_(score.weight.detach().float())
            if score.bias is not None:
                head.summary.bias.copy_(score.bias.detach().float())
        config = getattr(reward_model, "config", None)
        head.source = getattr(config, "_name_or_path", None) or type(reward_model).__name__
        return head

    # ---- serialization ----------------------------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        """The content of ``value_head_config.json``."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "hidden_size": self.hidden_size,
            "bias": self.summary.bias is not None,
            "dtype": "float32",
            "source": self.source,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, policy: dict[str, Any] | None = None) -> Path:
        """Write ``value_head.safetensors`` and ``value_head_config.json`` into ``save_directory``.

        ``policy`` (e.g. :func:`policy_record` of the folder, written right after the policy) is stored in the config
        as ``"policy"``: :func:`check_policy_pairing` then refuses the folder if its policy files are not the ones the
        head was saved with. Both files are written to temporaries and renamed, so each is either old or complete.
        """
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        config = self.config_dict()
        if policy is not None:
            config["policy"] = policy
        weights = save_directory / VALUE_HEAD_WEIGHTS_NAME
        tmp_weights = weights.with_name(f".{weights.name}.tmp-{os.getpid()}")
        save_file(state, str(tmp_weights), metadata={"format": "pt"})
        os.replace(tmp_weights, weights)
        atomic_write_text(save_directory / VALUE_HEAD_CONFIG_NAME, json.dumps(config, indent=2) + "\n")
        return save_directory

    def load_weights(self, directory: str | os.PathLike) -> None:
        """Load ``value_head.safetensors`` from a local folder into this head, in place (shapes must match)."""
        from safetensors.torch import load_file

        path = Path(directory) / VALUE_HEAD_WEIGHTS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"ValueHead.load_weights: no {VALUE_HEAD_WEIGHTS_NAME} in {directory}.")
        state = load_file(str(path), device="cpu")
        device = self.summary.weight.device
        self.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **hub_kwargs: Any) -> ValueHead:
        """Load a value head from a local folder or a Hub repo holding ``value_head.safetensors`` + its config.

        ``hub_kwargs`` (``revision``, ``token``, ``subfolder``, ``cache_dir``…) go to ``hf_hub_download``.
        """
        folder = _resolve_folder(path_or_repo_id, **hub_kwargs)
        config_file = folder / VALUE_HEAD_CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(
                f"ValueHead.from_pretrained: {path_or_repo_id} has no {VALUE_HEAD_CONFIG_NAME}; was it saved by "
                "RFTTrainer or ValueHead.save_pretrained?"
            )
        config = json.loads(config_file.read_text())
        if config.get("format") != _FORMAT:
            raise ValueError(f"ValueHead.from_pretrained: {config_file} is not a trl_ext value-head config.")
        head = cls(int(config["hidden_size"]), init="zeros", bias=bool(config.get("bias", True)))
        head.load_weights(folder)
        head.source = config.get("source")
        return head

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload value head",
        private: bool | None = None,
    ) -> str:
        """Upload ``value_head.safetensors`` + ``value_head_config.json`` to a model repo (created if missing).

        ``RFTTrainer.push_to_hub`` already uploads them with the model; this is for a head on its own. Returns the
        commit URL.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message
            )
        return str(info)


def _score_layer(reward_model: nn.Module) -> nn.Linear:
    """The score head of a sequence-classification model (``score``, else ``classifier``), unwrapped from PEFT."""
    model = unwrap_model(reward_model)
    for name in ("score", "classifier"):
        layer = getattr(model, name, None)
        layer = getattr(layer, "modules_to_save", {}).get("default", layer) if layer is not None else None
        if isinstance(layer, nn.Linear):
            return layer
    raise ValueError(
        f"ValueHead.from_reward_model: {type(model).__name__} has no linear `score` (or `classifier`) head; pass a "
        "sequence-classification reward model such as one trained by trl.RewardTrainer."
    )


def _resolve_folder(path_or_repo_id: str | os.PathLike, **hub_kwargs: Any) -> Path:
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path
    text = str(path_or_repo_id)
    if path.is_absolute() or text.startswith(".") or text.count("/") > 1 or path.exists():
        raise FileNotFoundError(f"ValueHead.from_pretrained: {text} is not a folder holding {VALUE_HEAD_CONFIG_NAME}.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        config = hf_hub_download(text, VALUE_HEAD_CONFIG_NAME, **hub_kwargs)
        hf_hub_download(text, VALUE_HEAD_WEIGHTS_NAME, **hub_kwargs)
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"ValueHead.from_pretrained: the Hub repo {text} has no {VALUE_HEAD_CONFIG_NAME}.") from err
    return Path(config).parent


# ---- attaching a head to a causal LM -----------------------------------------------------------------------------


def attach_value_head(model: nn.Module, value_head: ValueHead) -> nn.Module:
    """Register ``value_head`` as the submodule ``value_head`` of the causal LM inside ``model`` (PEFT unwrapped).

    As a submodule it is seen by every wrapper (PEFT keeps it trainable, DDP syncs its gradients, the Trainer puts it
    in the optimizer) while ``save_pretrained`` of the model leaves it out (``_keys_to_ignore_on_save``), so the model
    folder stays loadable by plain transformers; the head is saved on its own by :meth:`ValueHead.save_pretrained`.
    The head is moved to the model's device and kept in float32. Returns ``model``.

    Example:
        >>> from trl_ext.models import tiny_model
        >>> lm, _ = tiny_model()  # doctest: +SKIP
        >>> attach_value_head(lm, ValueHead(lm.config.hidden_size)); get_value_head(lm)  # doctest: +SKIP
    """
    lm = unwrap_model(model)
    hidden_size = getattr(lm.config.get_text_config(), "hidden_size", None)
    if hidden_size is not None and hidden_size != value_head.hidden_size:
        raise ValueError(
            f"attach_value_head: the value head expects hidden_size={value_head.hidden_size}, but the model's "
            f"hidden size is {hidden_size}."
        )
    device = next((p.device for p in lm.parameters() if p.device.type != "meta"), torch.device("cpu"))
    lm.add_module(VALUE_HEAD_ATTRIBUTE, value_head.to(device=device, dtype=torch.float32))
    value_head.requires_grad_(True)
    keys = {f"{VALUE_HEAD_ATTRIBUTE}.{name}" for name, _ in value_head.named_parameters()}
    lm._keys_to_ignore_on_save = set(getattr(lm, "_keys_to_ignore_on_save", None) or ()) | keys
    return model


def get_value_head(model: nn.Module) -> ValueHead | None:
    """The value head attached to ``model`` by :func:`attach_value_head` (``None`` if there is none)."""
    head = getattr(unwrap_model(model), VALUE_HEAD_ATTRIBUTE, None)
    return head if isinstance(head, ValueHead) else None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and ``os.replace`` (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def policy_fingerprint(directory: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` of the policy weight files in ``directory`` (:data:`POLICY_WEIGHT_PATTERNS`)."""
    d = Path(directory)
    names = sorted({p.name for pattern in POLICY_WEIGHT_PATTERNS for p in d.glob(pattern) if p.is_file()})
    return {name: _sha256(d / name) for name in names}


def policy_record(directory: str | os.PathLike, global_step: int | None = None) -> dict[str, Any]:
    """What a value head saved next to its policy records about it: the policy files' hashes and the step."""
    return {"global_step": global_step, "files": policy_fingerprint(directory)}


def check_policy_pairing(directory: str | os.PathLike, where: str = "load_policy_and_value_head") -> None:
    """Raise ``ValueError`` if the value head in ``directory`` was saved with other policy files than those there.

    The head's ``value_head_config.json`` records the hashes of the policy weight files written with it
    (``RFTTrainer`` saves the policy first, then the head with that record). A folder where a save was interrupted
    after the policy was rewritten — or into which files of two runs were copied — has a policy whose hashes differ
    from the record: loading that pair would silently combine a critic with a policy it was never trained with. A
    head saved without a record (``ValueHead.save_pretrained`` alone, older trl_ext) is not checked.
    """
    d = Path(directory)
    config_file = d / VALUE_HEAD_CONFIG_NAME
    if not config_file.is_file():
        return
    record = json.loads(config_file.read_text()).get("policy")
    if not record or not record.get("files"):
        return
    found = policy_fingerprint(d)
    if found != record["files"]:
        differ = sorted(n for n in set(found) | set(record["files"]) if found.get(n) != record["files"].get(n))
        step = record.get("global_step")
        raise ValueError(
            f"{where}: {d / VALUE_HEAD_WEIGHTS_NAME} was saved with other policy weights than the ones in {d} "
            f"({', '.join(differ)} differ from the sha256 recorded in {VALUE_HEAD_CONFIG_NAME}"
            f"{f' at global step {step}' if step is not None else ''}): the folder mixes two saves (e.g. a save "
            "interrupted after the policy was written, or files copied from another run). Save the policy and the "
            "value head again together, or use the checkpoint folder they both came from."
        )


def has_value_head_files(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a saved value head (both files)."""
    d = Path(directory)
    return (d / VALUE_HEAD_WEIGHTS_NAME).is_file() and (d / VALUE_HEAD_CONFIG_NAME).is_file()


def load_policy_and_value_head(
    path_or_repo_id: str | os.PathLike,
    attach: bool = False,
    **from_pretrained_kwargs: Any,
) -> tuple[nn.Module, ValueHead]:
    """Load the policy and its value head from a folder (or Hub repo) written by ``RFTTrainer``.

    A folder with ``adapter_config.json`` loads with ``peft.AutoPeftModelForCausalLM`` (base model from the adapter
    config), any other with ``transformers.AutoModelForCausalLM``; ``from_pretrained_kwargs`` (``dtype``,
    ``quantization_config``, ``device_map``…) go to that call. With ``attach=True`` the head is also registered on the
    model (:func:`attach_value_head`).

    Example:
        >>> from trl_ext.models.value_head import load_policy_and_value_head
        >>> model, value_head = load_policy_and_value_head("outputs/rft")  # doctest: +SKIP
        >>> values = value_head(model(input_ids, output_hidden_states=True).hidden_states[-1])  # doctest: +SKIP
    """
    local = Path(path_or_repo_id)
    if local.is_dir():
        check_policy_pairing(local)  # before anything heavy is loaded
    is_adapter = (local / "adapter_config.json").is_file() if local.is_dir() else _hub_has_file(
        str(path_or_repo_id), "adapter_config.json", from_pretrained_kwargs
    )
    if is_adapter:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path_or_repo_id), **from_pretrained_kwargs)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(path_or_repo_id), **from_pretrained_kwargs)
    hub_kwargs = {k: from_pretrained_kwargs[k] for k in ("revision", "token", "cache_dir") if k in from_pretrained_kwargs}
    value_head = ValueHead.from_pretrained(path_or_repo_id, **hub_kwargs)
    if attach:
        attach_value_head(model, value_head)
    else:
        device = next(model.parameters()).device
        value_head.to(device)
    return model, value_head


def _hub_has_file(repo_id: str, filename: str, kwargs: dict[str, Any]) -> bool:
    from huggingface_hub import file_exists

    return file_exists(repo_id, filename, revision=kwargs.get("revision"), token=kwargs.get("token"))
