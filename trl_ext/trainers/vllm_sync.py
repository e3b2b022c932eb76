"""vLLM weight sync of the RL trainers, safe for QLoRA (bitsandbytes 4-bit / 8-bit base + LoRA).

TRL's ``GRPOTrainer`` with ``use_vllm=True`` pushes the policy into the vLLM engine before each generation
(``VLLMGeneration.sync_weights``; colocate: ``model.load_weights`` per tensor, server: an NCCL stream to
``trl vllm-serve``). With a PEFT model TRL calls ``merge_adapter()``, streams every base parameter and calls
``unmerge_adapter()``. Over a bitsandbytes base that is wrong twice: the merge dequantizes, adds the LoRA delta and
**re-quantizes** the frozen base (lossy: the base drifts at every sync, and a small LoRA delta is mostly rounded away,
so vLLM samples from ≈ the base model), and the streamed tensors are the packed ``uint8`` 4-bit codes that a
full-precision vLLM model cannot load.

For a quantized model :func:`iter_vllm_weights` streams instead, per layer and **without touching the module**::

    W_served = dequantize(W_base) + Σ_adapters scaling · B @ A        (LoRA layers, computed in float32)
    W_served = dequantize(W_base)                                      (quantized layers without LoRA)
    W_served = W                                                       (every other parameter, as is)

under the names of the plain transformers model (what vLLM loads); dequantized weights take the dtype of the input
embeddings (the checkpoint dtype, which vLLM loads too). The LoRA delta is PEFT's own (``get_delta_weight``), the
dequantization bitsandbytes' (PEFT's ``dequantize_bnb_weight``). LoRA variants (DoRA, …) are refused at construction:
PEFT 0.21 can only merge them by rebuilding the base weight. Consequently the
vLLM engine must hold the model **unquantized**: in colocate mode :class:`VLLMSyncMixin` makes TRL build it from the
checkpoint in its own dtype instead of ``quantization="bitsandbytes"``; in server mode serve the full-precision base
model (``trl vllm-serve --model <base>``, no ``--quantization``).

Unquantized models keep TRL's sync unchanged. For both, modules that trl_ext adds to the policy (the
:class:`~trl_ext.models.value_head.ValueHead` of ``RFTTrainer``) are left out: vLLM rejects unknown parameter names.

Example:
    >>> from trl import GRPOTrainer
    >>> from trl_ext.trainers.vllm_sync import VLLMSyncMixin
    >>> class MyTrainer(VLLMSyncMixin, GRPOTrainer):  # what RFTTrainer and ProcessGRPOTrainer do
    ...     pass
    >>> import torch
    >>> from trl_ext.trainers.vllm_sync import iter_vllm_weights
    >>> [name for name, _ in iter_vllm_weights(torch.nn.Linear(2, 3))]
    ['weight', 'bias']
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..models import unwrap_model
from ..models.value_head import VALUE_HEAD_ATTRIBUTE, ValueHead, get_value_head
from .trl_compat import grpo_route_vllm_weight_sync, vllm_colocate_engine_unquantized

__all__ = ["VLLMSyncMixin", "install_vllm_weight_sync", "is_bnb_quantized", "iter_vllm_weights"]

class VLLMSyncMixin:
    """Mixin, placed before ``GRPOTrainer`` in the bases, that makes TRL's vLLM weight sync QLoRA-safe.

    Around ``GRPOTrainer.__init__`` it (1) lets a colocated vLLM engine load the checkpoint unquantized when the policy
    is 4-bit (the engine receives dequantized, merged weights), and (2) routes ``sync_weights`` through
    :func:`install_vllm_weight_sync`. Without ``use_vllm`` it does nothing.

    Example:
        >>> from trl import GRPOTrainer
        >>> class MyTrainer(VLLMSyncMixin, GRPOTrainer):
        ...     pass
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with vllm_colocate_engine_unquantized():
            super().__init__(*args, **kwargs)
        install_vllm_weight_sync(self)


def is_bnb_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds bitsandbytes-quantized (4-bit or 8-bit) parameters."""
    return any(_bnb_param_type(p) for p in model.parameters())


def install_vllm_weight_sync(trainer: Any) -> bool:
    """Route ``trainer``'s vLLM weight sync (colocate and server) through :func:`iter_vllm_weights` when its model is
    bitsandbytes-quantized; otherwise keep TRL's iterator, with trl_ext's value head left out. Returns whether the
    trainer generates with vLLM.

    Raises ``ValueError`` (at construction) for a quantized model that this sync cannot serve: sharded parameters
    (FSDP, DeepSpeed ZeRO-3), PEFT tuners other than LoRA, trainable-token wrappers, or LoRA variants (DoRA, …).

    Example:
        >>> from types import SimpleNamespace
        >>> install_vllm_weight_sync(SimpleNamespace())  # no vLLM engine: nothing to do
        False
    """
    return grpo_route_vllm_weight_sync(trainer, _build_iterator)


def iter_vllm_weights(
    model: nn.Module, fix_name: Callable[[str], str] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the ``(name, tensor)`` pairs of the model that vLLM should serve, without modifying ``model``.

    ``model`` may be a ``PeftModel`` or a plain model, quantized or not. LoRA layers yield
    ``dequantize(W) + Σ scaling·B@A`` (PEFT's ``get_delta_weight`` of each active, not yet merged adapter) and their
    bias (plus the LoRA bias, if any); quantized layers yield ``dequantize(W)``; other
    parameters are yielded as they are, tied ones once. ``modules_to_save`` yield the active copy. Names are those of
    the plain transformers model, passed through ``fix_name`` (TRL's vLLM name fixer when installed by
    :func:`install_vllm_weight_sync`). Value heads are skipped.

    Example:
        >>> import torch
        >>> dict(iter_vllm_weights(torch.nn.Linear(2, 1, bias=False)))["weight"].shape
        torch.Size([1, 2])
    """
    fix_name = fix_name or (lambda name: name)
    base = unwrap_model(model)
    embeddings = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
    with torch.no_grad():
        for name, tensor in _walk(base, "", dtype, set()):
            yield fix_name(name), tensor


# ---------------------------------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------------------------------


def _build_iterator(
    model: nn.Module, trl_iterator: Callable[[], Iterator], fix_name: Callable[[str], str], sharded: bool
) -> Callable[[], Iterator] | None:
    if not is_bnb_quantized(model):
        return functools.partial(_without_value_head, model, trl_iterator)
    _check_quantized_model(model, sharded)
    return functools.partial(iter_vllm_weights, model, fix_name)


def _without_value_head(model: nn.Module, trl_iterator: Callable[[], Iterator]) -> Iterator:
    """TRL's own stream, minus the value head's parameters (vLLM's ``load_weights`` rejects unknown names)."""
    if get_value_head(model) is None:
        yield from trl_iterator()
        return
    for name, tensor in trl_iterator():
        if VALUE_HEAD_ATTRIBUTE not in name.split("."):
            yield name, tensor


def _check_quantized_model(model: nn.Module, sharded: bool) -> None:
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper

    where = "use_vllm=True with a bitsandbytes-quantized model (QLoRA)"
    if sharded:
        raise ValueError(
            f"{where}: the QLoRA-safe vLLM weight sync of trl_ext does not support sharded parameters (FSDP or "
            "DeepSpeed ZeRO-3). Use DDP (plain `accelerate launch`), or an unquantized model."
        )
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer) and not isinstance(module, LoraLayer):
            raise ValueError(
                f"{where}: module {name!r} is a {type(module).__name__}; only LoRA adapters (peft LoraConfig) can be "
                "synced to vLLM over a quantized base."
            )
        if isinstance(module, AuxiliaryTrainingWrapper) and not isinstance(module, ModulesToSaveWrapper):
            raise ValueError(
                f"{where}: module {name!r} is a {type(module).__name__} (e.g. trainable_token_indices), which the "
                "vLLM weight sync does not support; use modules_to_save instead."
            )
        if isinstance(module, LoraLayer):
            _check_plain_lora(module, name)


def _check_plain_lora(module: nn.Module, name: str) -> None:
    for adapter, variant in getattr(module, "lora_variant", {}).items():
        raise ValueError(
            f"use_vllm=True with a bitsandbytes-quantized model (QLoRA): adapter {adapter!r} of {name!r} uses the LoRA "
            f"variant {type(variant).__name__} (e.g. use_dora=True); PEFT merges such variants only by rebuilding the "
            "quantized base weight, which the vLLM weight sync must not do. Use plain LoRA, or an unquantized base."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk(module: nn.Module, prefix: str, dtype: torch.dtype, seen: set[int]) -> Iterator[tuple[str, torch.Tensor]]:
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    if isinstance(module, ValueHead):
        return
    if isinstance(module, LoraLayer):
        yield from _lora_layer(module, prefix, dtype, seen)
        return
    if isinstance(module, ModulesToSaveWrapper):
        active = module.active_adapters[0] if module.active_adapters else None
        if module.disable_adapters or active not in module.modules_to_save:
            chosen = module.original_module
        else:
            chosen = module.modules_to_save[active]
        yield from _walk(chosen, prefix, dtype, seen)
        return
    for name, param in module.named_parameters(prefix=prefix, recurse=False):
        if id(param) in seen:  # tied weights: once, as `named_parameters()` (and TRL's sync) yields them
            continue
        seen.add(id(param))
        yield name, _dense(module, param, dtype)
    for child_name, child in module.named_children():
        yield from _walk(child, _join(prefix, child_name), dtype, seen)


def _lora_layer(module: nn.Module, prefix: str, dtype: torch.dtype, seen: set[int]):
    """``(name, tensor)`` of a LoRA layer's base parameters, the active unmerged adapters merged in (out of place)."""
    from peft.tuners.tuners_utils import check_adapters_to_merge

    _check_plain_lora(module, prefix)
    base = module.get_base_layer()
    adapters = [a for a in check_adapters_to_merge(module) if a in module.lora_A]
    for name, param in base.named_parameters(prefix=prefix, recurse=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        short = name.rsplit(".", 1)[-1]
        out_dtype = param.dtype if param.is_floating_point() else dtype
        if short == "weight" and adapters:
            weight = _dense(base, param, torch.float32).float()
            for adapter in adapters:
                weight = weight + module.get_delta_weight(adapter).float()
            yield name, weight.to(out_dtype)
        elif short == "bias" and any(module.lora_bias.get(a, False) for a in adapters):
            bias = param.detach().float()
            for adapter in adapters:
                if module.lora_bias.get(adapter, False):
                    bias = bias + module.lora_B[adapter].bias.detach().float()
            yield name, bias.to(out_dtype)
        else:
            yield name, _dense(base, param, dtype)


def _bnb_param_type(param: torch.Tensor) -> str | bool:
    name = type(param).__name__
    return "4bit" if name == "Params4bit" else "8bit" if name == "Int8Params" else False


def _dense(module: nn.Module, param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``param.data``, dequantized (to ``dtype``) when it is a bitsandbytes parameter. Never modifies ``module``."""
    kind = _bnb_param_type(param)
    if not kind:
        return param.data
    state = getattr(param, "quant_state", None)
    if kind == "4bit" and getattr(state, "packing_format_for_cpu", False):
        return _dequantize_cpu_packed_4bit(param.data, state).to(dtype)
    from peft.utils.integrations import dequantize_bnb_weight

    return dequantize_bnb_weight(param, state=getattr(module, "state", None)).to(dtype)


def _dequantize_cpu_packed_4bit(data: torch.Tensor, state: Any) -> torch.Tensor:
    """Dequantize a 4-bit weight that bitsandbytes repacked for its CPU kernel (first no-grad eval forward on a CPU
    with AVX512-BF16), on copies: the codes are unpacked with bitsandbytes' inverse and scaled by the bf16 block
    scales that the CPU kernel itself uses. CPU-only (vLLM never runs there); kept so CPU runs and tests are exact."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse, dequantize_4bit

    recovered = copy.copy(state)
    recovered.original_nested = False  # keep the bf16 scales as they are (no re-quantization of absmax)
    codes, recovered = _convert_weight_packed_for_cpu_inverse(data, recovered)
    recovered.absmax = state.absmax.T.reshape(-1).float()
    recovered.nested = False
    return dequantize_4bit(codes, recovered)
