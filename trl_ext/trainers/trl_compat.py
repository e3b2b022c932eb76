"""The one place where trl_ext reaches into TRL internals.

Each function wraps one internal attribute or method of a TRL class, so a TRL upgrade that renames it breaks one
function here, not the trainers. Append-only: every engineer adds functions, nobody edits or deletes others'.
"""

from __future__ import annotations

from typing import Any

from ..models.wrappers import unwrap_model



# ---- ProcessGRPOTrainer (trl_ext/trainers/process_grpo.py) — GRPOTrainer internals, TRL 1.16 -------------------------


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


def grpo_replace_logged_advantages(trainer: Any, values: list[float]) -> None:
    """Overwrite the advantages that ``_generate_and_score_completions`` just logged for the completions table.

    ``values`` are the global batch's, in order; TRL keeps them in the deque ``trainer._logs["advantages"]``.
    """
    logged = trainer._logs["advantages"]
    n = min(len(values), len(logged))
    for i in range(n):
        logged[len(logged) - n + i] = values[len(values) - n + i]


# ---- UnifiedLikelihoodTrainer (trl_ext/trainers/unified.py) — DPOTrainer / data_utils internals, TRL 1.16 ----------


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


# ---- RFTTrainer (trl_ext/trainers/rft.py) — GRPOConfig / GRPOTrainer internals, TRL 1.16 -------------------------

import contextlib  # noqa: E402
from typing import Iterator  # noqa: E402


class _GroupOfOne(int):
    """The int 1, except that it passes ``GRPOConfig.__post_init__``'s ``num_generations < 2`` guard."""

    def __lt__(self, other: Any) -> bool:
        return False if other == 2 else int(self) < other


def grpo_post_init_allowing_one_generation(config: Any, post_init: Any) -> None:
    """Run ``GRPOConfig.__post_init__`` (``post_init``, bound) accepting ``num_generations == 1``.

    GRPO needs groups (``num_generations >= 2``) for its group-relative advantage; PPO with a critic does not. Every
    other check and derived field of TRL's ``__post_init__`` (``generation_batch_size``, ``steps_per_generation``, …)
    still runs; ``config.num_generations`` is a plain ``1`` again afterwards. GRPOTrainer itself handles groups of one
    (its own eval path uses them).
    """
    if config.num_generations != 1:
        post_init()
        return
    config.num_generations = _GroupOfOne(1)
    try:
        post_init()
    finally:
        config.num_generations = 1


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


def _trl_version() -> str:
    import trl

    return trl.__version__


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
            f"{', '.join(repr(k) for k in missing)} (keys: {sorted(batch)}). trl_ext supports trl 1.16; this TRL "
            "version renamed or dropped it."
        )


@contextlib.contextmanager
def grpo_tap_per_token_logps(trainer: Any, on_call: Any = None) -> Iterator[list]:
    """Record what ``trainer._get_per_token_logps_and_entropies`` returns within the block.

    Yields a list that receives one ``(per_token_logps, entropies)`` tuple per call (tensors with their autograd
    graph). ``on_call(per_token_logps, entropies)``, if given, runs right after each call returns: inside
    ``GRPOTrainer._compute_loss`` that is after the policy forward and *before* TRL 1.16 reads
    ``inputs["advantages"]``, so the callback may still set them from this very forward.
    """
    calls: list = []
    original = trainer._get_per_token_logps_and_entropies

    def tapped(*args: Any, **kwargs: Any):
        out = original(*args, **kwargs)
        calls.append((out[0], out[1]))
        if on_call is not None:
            on_call(out[0], out[1])
        return out

    trainer._get_per_token_logps_and_entropies = tapped
    try:
        yield calls
    finally:
        del trainer._get_per_token_logps_and_entropies  # back to the class method


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


def fused_lm_head_backbone(model: Any):
    """The module whose ``last_hidden_state`` TRL's fused LM head projects (``add_fused_lm_head``).

    That head calls ``causal_lm.base_model`` (the decoder stack, e.g. ``LlamaModel``) and projects its
    ``last_hidden_state``, so a forward hook on this module sees the final-norm hidden states of every policy
    forward, fused or not. ``model`` may be wrapped by DDP and/or PEFT.
    """
    return unwrap_model(model).base_model


def grpo_local_slice(trainer: Any, n_local: int) -> slice:
    """Rows of this process in a tensor gathered over processes (``_calculate_rewards``' output), as TRL slices."""
    start = trainer.accelerator.process_index * n_local
    return slice(start, start + n_local)


# ---- vLLM weight sync (trl_ext/trainers/vllm_sync.py) — trl.generation.vllm_generation internals, TRL 1.16 ---------


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


# ---- UnifiedLikelihoodTrainer, data parallelism (trl_ext/trainers/unified.py) — DPOTrainer / datasets, TRL 1.16 --


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


# ---- UnifiedLikelihoodTrainer, drop-in for DPOTrainer (trl_ext/trainers/unified.py) — DPOTrainer internals, TRL 1.16


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


# ---- checkpoints and resume (trl_ext/trainers/checkpointing.py) — RepeatSampler / GRPOTrainer internals, TRL 1.16 --

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


def grpo_rollout_buffer_state(trainer: Any) -> dict | None:
    """GRPOTrainer's micro-step counter and buffered rollout (``_step``, ``_buffered_inputs``); ``None`` if not GRPO."""
    if not hasattr(trainer, "_buffered_inputs") or not hasattr(trainer, "_step"):
        return None
    return {"step": trainer._step, "buffered_inputs": trainer._buffered_inputs}


def grpo_restore_rollout_buffer(trainer: Any, state: dict) -> None:
    """Put back what :func:`grpo_rollout_buffer_state` returned (the next micro-steps use the buffered rollout)."""
    trainer._step = int(state["step"])
    trainer._buffered_inputs = state["buffered_inputs"]


# ---- adapter folders as `model=` (trl_ext/models/adapters.py) — GRPOTrainer / DPOTrainer model loading, TRL 1.16 ----

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
