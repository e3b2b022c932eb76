"""The one place where trl_ext reaches into TRL internals.

Every private member of a TRL class or module that trl_ext reads, writes or overrides is reached through a small
function here, grouped by the TRL class it belongs to, so a TRL upgrade that renames one breaks one function here,
not the trainers. At import, :func:`check_trl_members` verifies that each member listed in :data:`TRL_MEMBERS`
exists on the installed TRL and raises one ``ImportError`` naming what is missing, the installed version and
:data:`SUPPORTED_TRL` otherwise.

Sections: versions · ``GRPOConfig`` · ``GRPOTrainer`` · ``RepeatSampler`` · ``VLLMGeneration`` · ``DPOTrainer`` ·
model loading (``GRPOTrainer`` / ``DPOTrainer.__init__``) · data utils (``trl.data_utils``, ``trl.trainer.utils``) ·
``TrlParser`` · the import-time check. A new wrapper goes into its class's section, and the member it reaches into
into :data:`TRL_MEMBERS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import functools
import importlib
import importlib.util
from typing import Any, Iterator, NamedTuple

from ..models.wrappers import unwrap_model


# ---- versions ---------------------------------------------------------------------------------------------------

SUPPORTED_TRL = ">=1.16,<1.17"
"""The TRL versions trl_ext is tested with: the ``trl`` pin of ``pyproject.toml`` (1.16.0 is the only 1.16 release)."""


def _trl_version() -> str:
    import trl

    return trl.__version__


# ---- GRPOConfig (trl_ext/trainers/rft.py) -----------------------------------------------------------------------

class _GroupOfOne(int):
    """The int 1, except that ``_GroupOfOne(1) < 2`` is ``False``: it passes the one check of TRL 1.16's
    ``GRPOConfig.__post_init__`` that refuses ``num_generations=1`` (see
    :func:`grpo_post_init_allowing_one_generation`). Every other use (``%``, ``==``, arithmetic) is the int 1's."""

    def __lt__(self, other: Any) -> bool:
        return False if other == 2 else int(self) < other


def grpo_post_init_allowing_one_generation(config: Any, post_init: Any) -> None:
    """Run ``GRPOConfig.__post_init__`` (``post_init``, bound) accepting ``num_generations == 1``.

    The one place where trl_ext gets past a TRL check. GRPO needs groups (``num_generations >= 2``) for its
    group-relative advantage, and TRL 1.16's ``__post_init__`` raises "GRPO requires at least 2 generations per
    prompt" for ``num_generations < 2``; PPO with a critic needs no groups, and ``GRPOTrainer`` itself handles groups
    of one (its eval path allows ``num_generations_eval=1``). The caller has validated ``num_generations >= 1``.

    Why not a legal value during the call and ``1`` afterwards: the same ``__post_init__`` also checks that the
    generation batch (and the eval batch) is divisible by ``num_generations``. With 1 that always holds; with any
    legal value ``>= 2`` it refuses valid PPO batches (``per_device_train_batch_size=3``, or a generation batch of 1,
    which no value ``>= 2`` divides). So ``config.num_generations`` is :class:`_GroupOfOne` during the call (the
    ``< 2`` guard sees ``False``, the divisibility checks see 1) and a plain ``1`` again afterwards. Every other
    check and derived field of TRL's ``__post_init__`` (``generation_batch_size``, ``steps_per_generation``, …) runs
    unchanged; with ``num_generations != 1`` this is ``post_init()`` itself.
    """
    if config.num_generations != 1:
        post_init()
        return
    config.num_generations = _GroupOfOne(1)
    try:
        post_init()
    finally:
        config.num_generations = 1


# ---- GRPOTrainer: rollout, rewards and logging (rft.py, process_grpo.py) ----------------------------------------

def grpo_tokenizer(trainer: Any):
    """The text tokenizer of a ``GRPOTrainer`` (``trainer._tokenizer``; the processor's tokenizer for VLMs)."""
    tokenizer = getattr(trainer, "_tokenizer", None)
    if tokenizer is None:
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    return tokenizer


def grpo_num_generations(trainer: Any) -> int:
    """Group size of the current mode: ``num_generations`` in training, ``num_generations_eval`` in evaluation."""
    if trainer.model.training:
        return trainer.num_generations
    return getattr(trainer, "num_generations_eval", None) or trainer.num_generations


def grpo_log_metric(trainer: Any, name: str, value: float) -> None:
    """Queue a scalar metric as a reward function's ``log_metric`` does (``trainer._log_metric``).

    Valid while ``_generate_and_score_completions`` runs (e.g. inside ``_calculate_rewards``): TRL flushes the queue
    at its end, averaging over processes, into ``trainer._metrics[mode]``.
    """
    trainer._log_metric(name, value)


def grpo_log_extra(trainer: Any, column: str, values: list) -> None:
    """Queue a completions-table column (one value per local completion), as ``log_extra`` does."""
    trainer._log_completion_extra(column, values)


def grpo_metrics(trainer: Any, mode: str):
    """The ``defaultdict(list)`` of metrics that ``GRPOTrainer.log`` averages and flushes: ``trainer._metrics[mode]``
    (``mode``: ``"train"`` or ``"eval"``). Append a value per step to log it under that name."""
    return trainer._metrics[mode]


def grpo_replace_logged_advantages(trainer: Any, values: list[float]) -> None:
    """Overwrite the advantages that ``_generate_and_score_completions`` just logged for the completions table.

    ``values`` are the global batch's, in order; TRL keeps them in the deque ``trainer._logs["advantages"]``.
    """
    logged = trainer._logs["advantages"]
    n = min(len(values), len(logged))
    for i in range(n):
        logged[len(logged) - n + i] = values[len(values) - n + i]


def grpo_require_batch_keys(batch: dict, keys: tuple[str, ...], where: str) -> None:
    """Raise a clear error when a ``GRPOTrainer`` rollout batch lacks a key that trl_ext's math reads.

    ``where`` names the reader (e.g. ``"RFTTrainer._generate_and_score_completions"``). A key that is missing or
    ``None`` means the installed TRL builds its batch differently from TRL 1.16 (renamed key): fail, never continue
    with a default.
    """
    missing = [k for k in keys if batch.get(k) is None]
    if missing:
        raise KeyError(
            f"{where}: the batch built by trl {_trl_version()}'s GRPOTrainer._generate_and_score_completions has no "
            f"{', '.join(repr(k) for k in missing)} (keys: {sorted(batch)}). trl_ext supports trl{SUPPORTED_TRL}; "
            "this TRL version renamed or dropped it."
        )


def grpo_local_slice(trainer: Any, n_local: int) -> slice:
    """Rows of this process in a tensor gathered over processes (``_calculate_rewards``' output), as TRL slices."""
    start = trainer.accelerator.process_index * n_local
    return slice(start, start + n_local)


# ---- GRPOTrainer: reference policy and policy forward (rft.py) --------------------------------------------------

def grpo_kl_loss_term_off(trainer: Any) -> None:
    """Switch off ``GRPOTrainer``'s ``β·KL`` *loss* term for the rest of the run (``trainer.beta = 0``), once.

    TRL's ``trainer.beta`` is the coefficient of the k3 KL term that ``_compute_loss`` adds to the per-token loss (and
    the switch for computing ``ref_per_token_logps`` at rollout). RFT puts the KL in the *reward* instead, so that loss
    coefficient is 0 by design. Call this after ``GRPOTrainer.__init__`` has built the reference (it does so from
    ``args.beta > 0``); from then on the caller computes the reference log-probs itself
    (:func:`grpo_reference_logps`) and keeps its own β — never read ``trainer.beta`` for it.
    """
    trainer.beta = 0.0


def grpo_has_reference(trainer: Any) -> bool:
    """Whether ``GRPOTrainer`` set up a reference policy: a separate ``ref_model``, or a PEFT policy whose adapters
    can be switched off (``use_adapter(model, None)``, or the frozen ``"ref"`` adapter TRL adds for a pretrained one)."""
    from accelerate.utils import is_peft_model

    return trainer.ref_model is not None or is_peft_model(trainer.accelerator.unwrap_model(trainer.model))


def grpo_reference_logps(trainer: Any, batch: dict, batch_size: int | None = None):
    """Per-token log-probs ``(B, T)`` of a rollout batch's completions under TRL's reference policy, no grad.

    The same reference ``GRPOTrainer._generate_and_score_completions`` uses for ``ref_per_token_logps``:
    ``trainer.ref_model`` when TRL loaded one (full fine-tuning), else the PEFT policy with its adapters disabled
    (or TRL's ``"ref"`` adapter when training a pretrained adapter).
    """
    if trainer.ref_model is not None:
        return grpo_policy_logps(trainer, trainer.ref_model, batch, batch_size=batch_size)
    from trl.trainer.utils import use_adapter

    if not grpo_has_reference(trainer):
        raise RuntimeError(
            "GRPOTrainer built no reference policy (no ref_model and no PEFT adapters to disable); with beta > 0 "
            f"trl {_trl_version()} should have built one."
        )
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
        return grpo_policy_logps(trainer, trainer.model, batch, batch_size=batch_size)


_GRPO_FORWARD_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)


def grpo_policy_logps(trainer: Any, model: Any, batch: dict, batch_size: int | None = None):
    """Per-token log-probs of the completion tokens of a ``_generate_and_score_completions`` batch, no grad.

    Runs ``trainer._get_per_token_logps_and_entropies`` (TRL's fused LM-head forward) on
    ``prompt_ids ‖ completion_ids`` with gradient checkpointing off, as TRL does for ``old_per_token_logps``;
    multimodal fields present in ``batch`` are passed through. Returns ``(B, T)``.
    """
    import torch
    from trl.models.utils import disable_gradient_checkpointing

    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    extra = {k: batch[k] for k in _GRPO_FORWARD_KEYS if batch.get(k) is not None}
    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, batch["completion_ids"].size(1), batch_size=batch_size, **extra
        )
    return logps


def fused_lm_head_model(model: Any):
    """The causal LM whose forward TRL's ``add_fused_lm_head`` patched (inside DDP and PEFT): a forward hook on it sees
    the output of every policy forward, a ``FusedCausalLMOutput`` when called with ``fused_lm_head=True``."""
    return unwrap_model(model)


def fused_lm_head_log_probs(output: Any):
    """The per-token log-probs ``(B, L)`` of a forward through TRL's fused LM head (``FusedCausalLMOutput.log_probs``:
    entry ``t`` is ``log π(token_t | tokens before t)``, as ``_get_per_token_logps_and_entropies`` slices it), or
    ``None`` for an ordinary forward (e.g. inside ``generate``)."""
    return getattr(output, "log_probs", None)


def fused_lm_head_backbone(model: Any):
    """The module whose ``last_hidden_state`` TRL's fused LM head projects (``add_fused_lm_head``).

    That head calls ``causal_lm.base_model`` (the decoder stack, e.g. ``LlamaModel``) and projects its
    ``last_hidden_state``, so a forward hook on this module sees the final-norm hidden states of every policy
    forward, fused or not. ``model`` may be wrapped by DDP and/or PEFT.
    """
    return unwrap_model(model).base_model


# ---- GRPOTrainer: rollout buffer across checkpoints (checkpointing.py) ------------------------------------------

def grpo_rollout_buffer_state(trainer: Any) -> dict | None:
    """GRPOTrainer's micro-step counter and buffered rollout (``_step``, ``_buffered_inputs``); ``None`` if not GRPO."""
    if not hasattr(trainer, "_buffered_inputs") or not hasattr(trainer, "_step"):
        return None
    return {"step": trainer._step, "buffered_inputs": trainer._buffered_inputs}


def grpo_restore_rollout_buffer(trainer: Any, state: dict) -> None:
    """Put back what :func:`grpo_rollout_buffer_state` returned (the next micro-steps use the buffered rollout)."""
    trainer._step = int(state["step"])
    trainer._buffered_inputs = state["buffered_inputs"]


# ---- RepeatSampler (trl.trainer.utils; checkpointing.py) --------------------------------------------------------

_EPOCH_SAMPLERS: dict = {}


def grpo_sampler_with_set_epoch(sampler: Any) -> Any:
    """TRL's shuffling ``RepeatSampler`` with a ``set_epoch(e)`` that makes epoch ``e``'s order a function of ``e``.

    ``RepeatSampler`` draws one ``randperm`` per epoch from its own generator (seeded once with ``args.seed``) and has
    no ``set_epoch``: a trainer resumed in epoch ``e > 0`` starts a fresh generator and replays epoch 0's order. With
    ``set_epoch(e)`` (which the Trainer calls before each epoch) the generator is re-seeded and ``e`` permutations are
    drawn and dropped first, so epoch ``e`` gets the ``(e+1)``-th permutation — the order of an uninterrupted stock run,
    with or without a resume. Any other sampler (no shuffle, no seed, DPO's) is returned unchanged.
    """
    from trl.trainer.utils import RepeatSampler

    if not isinstance(sampler, RepeatSampler) or not sampler.shuffle or sampler.seed is None:
        return sampler
    cls = type(sampler)
    if cls not in _EPOCH_SAMPLERS:
        import torch

        def set_epoch(self, epoch: int) -> None:
            self._trl_ext_epoch = int(epoch)

        def __iter__(self):
            epoch = getattr(self, "_trl_ext_epoch", None)
            if epoch is not None:
                self.generator.manual_seed(self.seed)
                for _ in range(epoch):
                    torch.randperm(self.num_samples, generator=self.generator)
            return cls.__iter__(self)

        _EPOCH_SAMPLERS[cls] = type(f"Epoch{cls.__name__}", (cls,), {"set_epoch": set_epoch, "__iter__": __iter__})
    sampler.__class__ = _EPOCH_SAMPLERS[cls]
    return sampler


# ---- VLLMGeneration (trl.generation.vllm_generation; vllm_sync.py) ----------------------------------------------

def grpo_route_vllm_weight_sync(trainer: Any, build: Any) -> bool:
    """Let ``build`` choose the ``(name, tensor)`` stream that ``trainer``'s vLLM weight sync pushes.

    TRL's ``VLLMGeneration.sync_weights`` (``trainer.vllm_generation``) pushes, in colocate mode
    (``llm…model.load_weights([(name, tensor)])``) and in server mode (a metadata pass, then an NCCL stream to
    ``trl vllm-serve``), whatever its private ``_iter_named_params()`` yields. ``build(model, trl_iterator, fix_name,
    sharded)`` gets the model TRL syncs, TRL's own iterator (bound method), TRL's vLLM name fixer
    (``_fix_param_name_to_vllm``) and whether parameters are sharded (FSDP / ZeRO-3); it returns a zero-argument
    callable giving the iterator to use, or ``None`` to keep TRL's. Set on this ``VLLMGeneration`` instance only.
    Returns ``False`` when the trainer does not generate with vLLM.
    """
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None:
        return False
    dist = generation._dist
    iterator = build(
        generation.model,
        generation._iter_named_params,
        generation._fix_param_name_to_vllm,
        bool(dist.is_fsdp or dist.is_zero3),
    )
    if iterator is not None:
        generation._iter_named_params = iterator
    return True


@contextlib.contextmanager
def vllm_colocate_engine_unquantized() -> Iterator[None]:
    """Within the block, a colocated vLLM engine built by TRL's ``VLLMGeneration`` for a bitsandbytes 4-bit policy
    loads the checkpoint unquantized (its own dtype), not with in-flight ``quantization="bitsandbytes"``.

    TRL 1.16 passes ``quantization="bitsandbytes"`` to ``vllm.LLM`` (module global ``LLM`` of
    ``trl.generation.vllm_generation``) when the policy has ``bnb.nn.Linear4bit`` modules; such an engine holds packed
    4-bit codes with its own scales and cannot take full-precision weights from a sync. Other arguments are unchanged.
    Without vLLM installed nothing is patched (TRL raises its own ImportError).
    """
    import trl.generation.vllm_generation as vllm_generation

    original = getattr(vllm_generation, "LLM", None)
    if original is None:
        yield
        return

    def build_llm(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("quantization") == "bitsandbytes":
            kwargs["quantization"] = None
        return original(*args, **kwargs)

    vllm_generation.LLM = build_llm
    try:
        yield
    finally:
        vllm_generation.LLM = original


# ---- DPOTrainer (unified.py) ------------------------------------------------------------------------------------

def dpo_tokenizer(trainer: Any):
    """The text tokenizer of a ``DPOTrainer`` (``trainer._tokenizer``: the processor's tokenizer for VLMs, with the
    pad token TRL set)."""
    return trainer._tokenizer


def dpo_reference_context(trainer: Any):
    """Context manager under which ``trainer.model`` computes reference log-probs, as ``DPOTrainer`` does: no grad,
    gradient checkpointing off, and for a PEFT model without a separate ``ref_model`` the adapters **disabled** (or
    the frozen ``"ref"`` copy that DPOTrainer adds for a pretrained adapter switched on)."""
    import contextlib

    import torch
    from accelerate.utils import is_peft_model
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs))
    if trainer.ref_model is None and is_peft_model(trainer.model):
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        stack.enter_context(use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None))
    return stack


def dpo_metrics(trainer: Any, mode: str):
    """The ``defaultdict(list)`` of metrics that ``DPOTrainer.log`` averages and flushes: ``trainer._metrics[mode]``."""
    return trainer._metrics[mode]


def dpo_count_train_tokens(trainer: Any, attention_mask) -> int:
    """Add the batch's (all-process) token count to DPOTrainer's running ``num_tokens`` and return the total."""
    n = trainer.accelerator.gather_for_metrics(attention_mask.sum()).sum().item()
    trainer._total_train_tokens += n // trainer._tp_size
    return trainer._total_train_tokens


@contextlib.contextmanager
def dpo_ref_cache_shared_across_processes(trainer: Any, dataset: Any) -> Iterator[None]:
    """Within the block, every process agrees on where ``DPOTrainer._precompute_ref_logps`` caches ``dataset``'s
    reference log-probs.

    TRL computes them on all processes, gathers them, writes them on the main process to
    ``dataset._get_cache_file_path(fingerprint)`` and reads that file back on every process. For a dataset held in
    memory (no cache files, e.g. ``Dataset.from_dict``) ``datasets`` returns a *random* name in a *per-process*
    temporary folder, so with several processes the others open a file that was never written
    (``FileNotFoundError``). Here such a dataset's path is ``cache-<fingerprint>.arrow`` in the main process's
    temporary folder on every process (one node, or a shared ``/tmp``). One process, or a disk-backed dataset: no-op.
    """
    import os

    from accelerate.utils import broadcast_object_list
    from datasets import is_caching_enabled
    from datasets.fingerprint import get_temporary_cache_files_directory

    if trainer.accelerator.num_processes == 1 or (is_caching_enabled() and getattr(dataset, "cache_files", None)):
        yield
        return
    folder = [get_temporary_cache_files_directory()]
    broadcast_object_list(folder, from_process=0)
    dataset._get_cache_file_path = lambda fingerprint: os.path.join(folder[0], f"cache-{fingerprint}.arrow")
    try:
        yield
    finally:
        del dataset._get_cache_file_path  # back to the class method


@contextlib.contextmanager
def dpo_model_hash_skipped() -> Iterator[None]:
    """Within the block, ``DPOTrainer.__init__`` does not hash the model's weights.

    With ``precompute_ref_log_probs=True`` TRL 1.16 hashes the whole state dict (``hash_module``, the module global of
    ``trl.trainer.dpo_trainer``) to key the reference cache. A trainer that precomputes nothing (no loss needs a
    reference) would pay that for nothing; here the hash is a constant that no cache is ever keyed by.
    """
    import trl.trainer.dpo_trainer as dpo_trainer

    original = dpo_trainer.hash_module
    dpo_trainer.hash_module = lambda module: "unused: no reference log-probs are precomputed"
    try:
        yield
    finally:
        dpo_trainer.hash_module = original


# ---- model loading: GRPOTrainer / DPOTrainer.__init__ with a string or PeftModel `model` (models/adapters.py) ---

GRPO_PROCESSOR_KWARGS = {"truncation_side": "left", "padding_side": "left"}
"""Keyword arguments with which ``GRPOTrainer.__init__`` loads the processing class of a string ``model``."""

DPO_PROCESSOR_KWARGS: dict = {}
"""Keyword arguments with which ``DPOTrainer.__init__`` loads the processing class of a string ``model``."""

TRL_REFERENCE_ADAPTER = "ref"
"""Name of the frozen adapter copy that ``GRPOTrainer`` / ``DPOTrainer`` add to a ``PeftModel`` passed without
``peft_config`` (their reference policy for a pretrained adapter)."""


def trl_model_init_kwargs(args: Any, quantization_config: Any = None) -> dict:
    """The ``from_pretrained`` kwargs with which ``GRPOTrainer`` / ``DPOTrainer`` load a string ``model``: a copy of
    ``args.model_init_kwargs`` plus ``quantization_config`` (TRL's error when it is given twice), ``device_map=None``
    under multi-GPU / DeepSpeed, and ``trust_remote_code`` from ``args``."""
    kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    if quantization_config is not None:
        if "quantization_config" in kwargs:
            raise ValueError(
                "You set `quantization_config` both as a trainer argument and in `args.model_init_kwargs`. "
                "Please set it in only one place, preferably as a trainer argument."
            )
        kwargs["quantization_config"] = quantization_config
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        kwargs["device_map"] = None
    kwargs.setdefault("trust_remote_code", getattr(args, "trust_remote_code", False))
    return kwargs


def create_model(model_id: str, **kwargs: Any):
    """Load a model as TRL's trainers load a string ``model`` (``trl.trainer.utils.create_model_from_path``: dtype
    strings, ``device_map`` default, architecture from the config)."""
    from trl.trainer.utils import create_model_from_path

    return create_model_from_path(model_id, **kwargs)


def drop_trl_reference_adapter(model: Any) -> bool:
    """Delete the frozen ``"ref"`` adapter copy that TRL added to a ``PeftModel`` (see :data:`TRL_REFERENCE_ADAPTER`),
    so that TRL's reference policy becomes the base with adapters disabled (``use_adapter(model, None)``). Returns
    whether there was one."""
    peft_config = getattr(model, "peft_config", None)
    if not peft_config or TRL_REFERENCE_ADAPTER not in peft_config:
        return False
    model.delete_adapter(TRL_REFERENCE_ADAPTER)
    return True


# ---- data utils: trl.data_utils, trl.trainer.utils (unified.py, unified_collator.py) ----------------------------

def tokenize_example(processing_class: Any, text_or_messages: Any, **chat_template_kwargs: Any) -> list[int]:
    """Token ids of a str (tokenizer call) or a message list (chat template), as TRL's dataset preparation does
    (``trl.data_utils._tokenize``)."""
    from trl.data_utils import _tokenize

    return _tokenize(processing_class, text_or_messages, **chat_template_kwargs)["input_ids"]


def common_prefix_len(ids: list[int], other_ids: list[int]) -> int:
    """Number of leading tokens two sequences share (``trl.data_utils.common_prefix_length``): where a completion
    starts when the tokenized prompt is not a prefix of the tokenized prompt+completion."""
    from trl.data_utils import common_prefix_length

    return common_prefix_length(ids, other_ids)


def pad_sequences(tensors: list, padding_value: int, pad_to_multiple_of: int | None = None):
    """Right-pad 1-D tensors into one ``(N, T)`` tensor (``trl.trainer.utils.pad``)."""
    from trl.trainer.utils import pad

    return pad(tensors, padding_value=padding_value, padding_side="right", pad_to_multiple_of=pad_to_multiple_of)


# ---- TrlParser (trl_ext/cli/common.py) --------------------------------------------------------------------------

def trl_parser_field_adder(parser: Any):
    """``parser._parse_dataclass_field(group, field)``, the function with which ``TrlParser`` (TRL's copy of
    ``HfArgumentParser``) adds one dataclass field to an argument group; ``None`` when the installed TRL lacks it
    (the caller then keeps the stock single group)."""
    return getattr(parser, "_parse_dataclass_field", None)


# ---- the import-time check --------------------------------------------------------------------------------------

class TrlMember(NamedTuple):
    """A member of a TRL class or module that trl_ext relies on (an entry of :data:`TRL_MEMBERS`).

    ``owner``: ``"module:Class"`` or ``"module"``. ``kind``: ``"method"`` or ``"attribute"`` (looked up on the class
    or module), ``"field"`` (a dataclass field), ``"instance attribute"`` (it exists only on a constructed object, so
    the check is that a method which the class or one of its TRL bases defines assigns it: a ``STORE_ATTR`` of that
    name in their compiled code). ``used_by``: what in trl_ext needs it. ``requires``: a package without which the
    member is not needed (and not checked).
    """

    owner: str
    name: str
    kind: str
    used_by: str
    requires: str | None = None


_GRPO = "trl.trainer.grpo_trainer:GRPOTrainer"
_DPO = "trl.trainer.dpo_trainer:DPOTrainer"
_VLLM = "trl.generation.vllm_generation:VLLMGeneration"
_SAMPLER = "trl.trainer.utils:RepeatSampler"

TRL_MEMBERS: tuple[TrlMember, ...] = (
    # GRPOConfig
    TrlMember("trl:GRPOConfig", "num_generations", "field", "grpo_post_init_allowing_one_generation"),
    TrlMember("trl:GRPOConfig", "num_generations_eval", "field", "grpo_num_generations"),
    # GRPOTrainer: hooks trl_ext overrides (an override of a method TRL no longer has would never run)
    TrlMember(_GRPO, "_generate_and_score_completions", "method", "RFTTrainer, ProcessGRPOTrainer (override)"),
    TrlMember(_GRPO, "_calculate_rewards", "method", "RFTTrainer, ProcessGRPOTrainer (override)"),
    TrlMember(_GRPO, "_compute_loss", "method", "RFTTrainer (override)"),
    TrlMember(_GRPO, "_get_per_token_logps_and_entropies", "method", "grpo_policy_logps"),
    TrlMember(_GRPO, "_tag_names", "attribute", "model card and model tags (set by every trl_ext trainer)"),
    TrlMember(_GRPO, "_name", "attribute", "model card (set by every trl_ext trainer)"),
    TrlMember(_GRPO, "_paper", "attribute", "model card citation"),
    # GRPOTrainer: members read or written
    TrlMember(_GRPO, "_log_metric", "method", "grpo_log_metric"),
    TrlMember(_GRPO, "_log_completion_extra", "method", "grpo_log_extra"),
    TrlMember(_GRPO, "_metrics", "instance attribute", "grpo_metrics"),
    TrlMember(_GRPO, "_logs", "instance attribute", "grpo_replace_logged_advantages"),
    TrlMember(_GRPO, "beta", "instance attribute", "grpo_kl_loss_term_off"),
    TrlMember(_GRPO, "_step", "instance attribute", "grpo_rollout_buffer_state, grpo_restore_rollout_buffer"),
    TrlMember(_GRPO, "_buffered_inputs", "instance attribute", "grpo_rollout_buffer_state, grpo_restore_…"),
    # RepeatSampler
    TrlMember(_SAMPLER, "shuffle", "instance attribute", "grpo_sampler_with_set_epoch"),
    TrlMember(_SAMPLER, "seed", "instance attribute", "grpo_sampler_with_set_epoch"),
    TrlMember(_SAMPLER, "generator", "instance attribute", "grpo_sampler_with_set_epoch"),
    TrlMember(_SAMPLER, "num_samples", "instance attribute", "grpo_sampler_with_set_epoch"),
    # VLLMGeneration
    TrlMember(_VLLM, "_iter_named_params", "method", "grpo_route_vllm_weight_sync"),
    TrlMember(_VLLM, "_fix_param_name_to_vllm", "method", "grpo_route_vllm_weight_sync"),
    TrlMember(_VLLM, "_dist", "instance attribute", "grpo_route_vllm_weight_sync"),
    TrlMember("trl.generation.vllm_generation", "LLM", "attribute", "vllm_colocate_engine_unquantized", "vllm"),
    # DPOTrainer: hooks trl_ext overrides
    TrlMember(_DPO, "_prepare_dataset", "method", "UnifiedLikelihoodTrainer (override)"),
    TrlMember(_DPO, "_precompute_ref_logps", "method", "UnifiedLikelihoodTrainer (override)"),
    TrlMember(_DPO, "_tag_names", "attribute", "model card and model tags (set by every trl_ext trainer)"),
    TrlMember(_DPO, "_name", "attribute", "model card (set by every trl_ext trainer)"),
    TrlMember(_DPO, "_paper", "attribute", "model card citation"),
    # DPOTrainer: members read or written
    TrlMember(_DPO, "_tokenizer", "instance attribute", "dpo_tokenizer"),
    TrlMember(_DPO, "_metrics", "instance attribute", "dpo_metrics"),
    TrlMember(_DPO, "_total_train_tokens", "instance attribute", "dpo_count_train_tokens"),
    TrlMember(_DPO, "_tp_size", "instance attribute", "dpo_count_train_tokens"),
    TrlMember("trl.trainer.dpo_trainer", "hash_module", "attribute", "dpo_model_hash_skipped"),
    # data utils and model loading
    TrlMember("trl.data_utils", "_tokenize", "attribute", "tokenize_example"),
    TrlMember("trl.data_utils", "common_prefix_length", "attribute", "common_prefix_len"),
    TrlMember("trl.trainer.utils", "pad", "attribute", "pad_sequences"),
    TrlMember("trl.trainer.utils", "use_adapter", "attribute", "dpo_reference_context, grpo_reference_logps"),
    TrlMember("trl.trainer.utils", "create_model_from_path", "attribute", "create_model"),
    TrlMember("trl.models.utils", "disable_gradient_checkpointing", "attribute", "grpo_policy_logps"),
    TrlMember("trl.trainer.utils:FusedCausalLMOutput", "log_probs", "field", "fused_lm_head_log_probs"),
    # TrlParser
    TrlMember("trl:TrlParser", "_add_dataclass_arguments", "method", "GroupedTrlParser (override)"),
    TrlMember("trl:TrlParser", "_parse_dataclass_field", "method", "trl_parser_field_adder"),
)
"""Every TRL member trl_ext relies on, checked by :func:`check_trl_members` when this module is imported.

Not checked: what a member *means* (a tensor's shape, a batch key: :func:`grpo_require_batch_keys` checks those at
run time), public TRL API (``trainer.ref_model``, ``args.beta``, …), and ``GRPOTrainer._tokenizer``, which
:func:`grpo_tokenizer` reads with a fallback.
"""


def _resolve(owner: str) -> Any:
    """The class or module that ``"module:Class"`` / ``"module"`` names (``ImportError`` / ``AttributeError`` if it
    does not exist)."""
    module_name, _, class_name = owner.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name) if class_name else module


@functools.lru_cache(maxsize=None)
def _assigned_attributes(cls: type) -> frozenset[str]:
    """Names assigned as ``<obj>.name = ...`` (``STORE_ATTR``) in the compiled code of the methods that ``cls`` and its
    TRL bases define, nested functions included: the instance attributes their ``__init__`` & co. set."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("trl."):
            continue
        for value in vars(klass).values():
            function = getattr(value, "__func__", getattr(value, "fget", value))
            codes = [getattr(function, "__code__", None)]
            while codes:
                code = codes.pop()
                if code is None:
                    continue
                names.update(i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR")
                codes.extend(c for c in code.co_consts if hasattr(c, "co_code"))
    return frozenset(names)


def _has_member(owner: Any, member: TrlMember) -> bool:
    """Whether ``owner`` (a class or module) has ``member`` as its ``kind`` says."""
    if member.kind == "field":
        return member.name in {f.name for f in dataclasses.fields(owner)}
    if member.kind == "instance attribute":
        return member.name in _assigned_attributes(owner)
    if not hasattr(owner, member.name):
        return False
    return member.kind != "method" or callable(getattr(owner, member.name))


def missing_trl_members(members: tuple[TrlMember, ...] = TRL_MEMBERS) -> list[str]:
    """``"owner.name (kind, used by ...)"`` for each of ``members`` that the installed TRL lacks (an owner that does
    not import counts as missing); members whose ``requires`` package is not installed are skipped."""
    missing = []
    for member in members:
        if member.requires is not None and importlib.util.find_spec(member.requires) is None:
            continue
        try:
            found = _has_member(_resolve(member.owner), member)
        except (ImportError, AttributeError, TypeError):  # no such owner, or a field of a non-dataclass
            found = False
        if not found:
            missing.append(f"{member.owner.replace(':', '.')}.{member.name} ({member.kind}, used by {member.used_by})")
    return missing


def check_trl_members(members: tuple[TrlMember, ...] = TRL_MEMBERS) -> None:
    """Raise one ``ImportError`` naming every member of ``members`` missing from the installed TRL, its version and
    :data:`SUPPORTED_TRL`; return ``None`` when all are there."""
    missing = missing_trl_members(members)
    if missing:
        raise ImportError(
            f"trl_ext needs TRL internals that trl {_trl_version()} does not have: {'; '.join(missing)}. trl_ext "
            f"supports trl{SUPPORTED_TRL}: install a supported version (pip install 'trl{SUPPORTED_TRL}')."
        )


check_trl_members()
