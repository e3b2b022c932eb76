"""Reinforcement fine-tuning with a critic: PPO actor-critic on top of TRL's ``GRPOTrainer``.

:class:`RFTTrainer` keeps everything ``GRPOTrainer`` does — generation (transformers or vLLM), reward-function and
reward-model calling, PEFT/QLoRA, the reference policy, logging, checkpoints, ``accelerate launch`` — and replaces the
group-relative advantage with a learned critic:

The ``(B, T)`` advantage, from reward to loss, all in this file (:class:`~trl_ext.trainers.grpo_base.GRPOBase` calls
:meth:`RFTTrainer.token_advantages` when TRL hands over the rollout batch, and puts the result in
``batch["advantages"]``, which TRL's loss reads):

1. **Rollout** (TRL's ``_generate_and_score_completions``): TRL generates and scores; the sequence score is the
   weighted sum of the reward functions (``None`` skipped, as in TRL) minus ``missing_eos_penalty`` for a completion
   without EOS.
2. **Targets** (:meth:`RFTTrainer.token_advantages`, once per rollout): one no-grad forward of TRL's reference policy
   (its ``ref_model``, or the PEFT policy with adapters disabled) gives ``logp_ref``, one of the policy gives the
   rollout log-probs ``logp_old`` and the values ``V_old`` of a :class:`~trl_ext.models.value_head.ValueHead` on the
   last hidden state; they give per-token rewards (:func:`trl_ext.core.rlhf_token_rewards`: score on the last real
   token, ``−β·(logp_old − logp_ref)`` on every token), then advantages and returns (:func:`trl_ext.core.gae`),
   the advantages :func:`trl_ext.core.whiten`-ed with the mean and variance of the *global* batch (float64 moments
   all-reduced over processes). As in PPO implementations, ``logp_old``/``V_old`` come from their own pass: one
   no-grad forward per rollout more than ``GRPOTrainer`` with ``num_iterations=1`` (which reuses the training
   forward's log-probs). When TRL computed ``old_per_token_logps`` itself (``num_iterations > 1``, vLLM importance
   sampling), those are used.
3. **Update** (``_compute_loss``): TRL's clipped-surrogate loss (``epsilon``, ``epsilon_high``, every ``loss_type``)
   plus ``vf_coef ·`` :func:`trl_ext.core.clipped_value_loss` on the values of the *same* forward pass, over
   ``num_iterations`` epochs and ``steps_per_generation`` minibatches of one rollout. TRL's own ``β·KL`` *loss* term
   is off for the whole run (``trainer.beta = 0`` once, after TRL built the reference): the KL is in the reward, with
   RFT's own coefficient :attr:`RFTTrainer.kl_coef`, which no TRL hook touches. The value loss is the token mean over
   the global batch (all processes, all accumulation steps) whatever the ``loss_type``, as in PPO implementations, so
   that N processes × B completions give exactly the update of 1 process × N·B (tested with 2 gloo processes).

Why a forward hook: with TRL's fused LM head the policy forward returns log-probs, never hidden states. The hook on the
module whose ``last_hidden_state`` the LM head projects (``causal_lm.base_model``) sees that tensor in every policy
forward — fused or not, PEFT or not, under DDP — so the critic costs one ``Linear(hidden, 1)`` per forward, not an
extra pass. The value head is a submodule of the policy (:func:`~trl_ext.models.value_head.attach_value_head`): the
optimizer, DDP, PEFT (it stays trainable, in fp32, over a 4-bit base) and ``save_pretrained`` (which leaves it out)
all treat it correctly, and the trainer saves it as ``value_head.safetensors`` + ``value_head_config.json`` in every
checkpoint and final folder, reloads it on ``resume_from_checkpoint``, and uploads it with ``push_to_hub``
(:mod:`~trl_ext.trainers.value_head_files`).

Logged each step (literature names): ``pg_loss`` (the policy loss TRL's ``_compute_loss`` returned and that was
optimised: the surrogate of the ``loss_type``, plus TRL's entropy bonus / router aux loss when enabled; averaged over
processes, summed over accumulation steps), ``approx_kl`` (k3 of the update's ratio), ``vf_loss``, ``vf_clipfrac``,
``value_pred_mean``, ``value_mean``, ``returns_mean``, ``explained_variance``, ``kl`` (mean per-sequence Σ_t k1 at
rollout), ``beta`` (the coefficient used in this rollout's reward), ``rlhf_reward`` (score − β·KL),
``advantages_std`` — and from TRL ``clip_ratio/*``, ``entropy``, ``reward``, ``rewards/<grader>/mean``,
``completions/mean_length`` … Token statistics are token-weighted over all processes' tokens and per-sequence ones
over all sequences, so they do not depend on how the batch is split; the adaptive KL controller sees the global KL,
so β stays identical on every process. The value head is a submodule of the wrapped
model, so DDP broadcasts process 0's initial head to all processes (the 2-process test builds a different head on each).

Example:
    >>> from trl_ext.data import rl_dataset
    >>> from trl_ext.rewards import default_grader
    >>> from trl_ext.trainers.rft import RFTConfig, RFTTrainer
    >>> args = RFTConfig(output_dir="outputs/rft", per_device_train_batch_size=4, max_completion_length=32,
    ...                  max_steps=2, report_to="none")  # doctest: +SKIP
    >>> trainer = RFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", reward_funcs=default_grader("chain_sum"),
    ...                      args=args, train_dataset=rl_dataset("chain_sum", 64))  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from trl import GRPOConfig, SyncRefModelCallback

from ..core import AdaptiveKLController, clipped_value_loss, gae, kl_k1, kl_k3, masked_mean, masked_sum
from ..core import explained_variance, explained_variance_from_moments, masked_moments, moments_mean_var
from ..core import rlhf_token_rewards, whiten, whiten_with_stats
from ..models.adapters import AdapterFolderArguments
from ..models.value_head import ValueHead, attach_value_head, get_value_head
from .grpo_base import GRPOBase, RolloutRewards
from .trl_compat import (
    fused_lm_head_backbone,
    fused_lm_head_log_probs,
    fused_lm_head_model,
    grpo_has_reference,
    grpo_kl_loss_term_off,
    grpo_local_slice,
    grpo_metrics,
    grpo_policy_logps,
    grpo_post_init_allowing_one_generation,
    grpo_reference_logps,
    grpo_require_batch_keys,
)
from .value_head_files import RFT_STATE_NAME, ValueHeadFilesMixin

# explained_variance(_from_moments) live in trl_ext.core.masked; re-exported for the old import path
__all__ = ["RFT_STATE_NAME", "RFTConfig", "RFTTrainer", "explained_variance", "explained_variance_from_moments"]

_NOT_APPLICABLE = {
    "scale_rewards": ("group", "the advantages come from GAE with the critic, whitened over the batch, not from "
                      "group statistics of the rewards"),
    "multi_objective_aggregation": ("sum_then_normalize", "the sequence score is the weighted sum of the reward "
                                    "functions, and GAE + whitening replace the normalisation"),
    "use_bias_correction_kl": (True, "it corrects TRL's KL loss term, which RFT does not use (the KL is in the "
                               "reward)"),
}
"""GRPOConfig options that have no meaning in RFT: their default is accepted, any other value is refused."""

_ROLLOUT_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "num_items_in_batch")
"""Keys of TRL's rollout batch that the RFT math reads."""

_PPO_CITATION = """@article{schulman2017proximal,
    title   = {{Proximal Policy Optimization Algorithms}},
    author  = {John Schulman and Filip Wolski and Prafulla Dhariwal and Alec Radford and Oleg Klimov},
    year    = 2017,
    eprint  = {arXiv:1707.06347}
}"""


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RFTConfig(AdapterFolderArguments, GRPOConfig):
    r"""Configuration of :class:`RFTTrainer`: every ``GRPOConfig`` field, plus the critic and the RLHF reward.

    Defaults that differ from ``GRPOConfig``: ``beta=0.05`` (the KL coefficient, used in the *reward*),
    ``num_generations=1`` (PPO needs no groups; larger groups work too). ``loss_type="dapo"`` (TRL's default too) is
    the token mean over the *global* batch, as in PPO implementations: with one process and no gradient accumulation
    it equals ``"bnpo"``, but ``"bnpo"`` normalises by each process's own token count, so with several processes whose
    completions differ in length (DDP averages the per-process means) it weights tokens unequally; ``"dapo"`` gives
    N processes × B completions exactly the update of 1 process × N·B. ``scale_rewards`` and
    ``multi_objective_aggregation`` do not apply: the advantages come from GAE over the weighted sum of the reward
    functions.

    Example:
        >>> from trl_ext.trainers.rft import RFTConfig
        >>> args = RFTConfig(output_dir="out", vf_coef=0.1, cliprange_value=0.2, kl_target=6.0, report_to="none",
        ...                  use_cpu=True, bf16=False)
        >>> args.num_generations, args.beta
        (1, 0.05)
    """

    beta: float = field(
        default=0.05,
        metadata={
            "help": "KL coefficient β of the per-token penalty −β·(logp_old − logp_ref) (k1) added to the reward. In "
            "RFT the KL is in the reward, not in the loss. 0 disables the penalty and loads no reference model. With "
            "`kl_target` set, this is the initial value of the adaptive coefficient."
        },
    )
    num_generations: int | None = field(
        default=1,
        metadata={
            "help": "Completions sampled per prompt. PPO needs no groups, so 1 (default) is allowed, unlike GRPO; "
            "larger groups work too. The generation batch must be divisible by it."
        },
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "Aggregation of TRL's per-token clipped-surrogate loss, and of the value loss: 'dapo' (default) is "
            "the token mean over the global batch (all processes, all accumulation steps; as in PPO implementations "
            "and `trl_ext.core.ppo_policy_loss`), so 2 processes x 4 completions train exactly as 1 x 8. 'bnpo' is "
            "the token mean over each process's local batch: the same with one process and no gradient accumulation, "
            "but with several processes DDP averages per-process means, which weights the tokens of short-completion "
            "processes more. Any other GRPOConfig `loss_type` works ('grpo', 'dr_grpo', 'cispo', 'sapo', 'vespo', "
            "'luspo'). The value loss is always the token mean over the global batch, whatever the loss type."
        },
    )
    vf_coef: float = field(
        default=0.1,
        metadata={"help": "Weight of the value loss in the total loss: loss = policy loss + vf_coef · vf_loss."},
    )
    cliprange_value: float | None = field(
        default=0.2,
        metadata={
            "help": "Clip range ε_v of the clipped value loss, in reward units: V_clip = clip(V, V_old − ε_v, V_old + "
            "ε_v). Must be > 0; `None` (null in YAML) disables value clipping."
        },
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount γ of GAE (1.0 for language models)."})
    lam: float = field(default=0.95, metadata={"help": "λ of GAE: 1 gives Monte-Carlo returns, 0 one-step TD."})
    whiten_advantages: bool = field(
        default=True,
        metadata={
            "help": "Whiten the GAE advantages over the valid tokens of the global rollout batch (all processes): "
            "zero mean, unit variance."
        },
    )
    kl_target: float | None = field(
        default=None,
        metadata={
            "help": "Target of the adaptive KL controller (Ziegler et al., 2019), in nats per sequence (Σ_t k1). When "
            "set, β starts at `beta` and is adapted after each rollout towards this KL. `None`: β stays fixed."
        },
    )
    kl_horizon: float = field(
        default=10000.0,
        metadata={"help": "Horizon (in samples) of the adaptive KL controller: larger values adapt β more slowly."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={
            "help": "Subtracted from the score of a completion that ends without an EOS token (e.g. truncated at "
            "`max_completion_length`). `None`: no penalty."
        },
    )
    value_head_init: str = field(
        default="normal",
        metadata={
            "help": "Initialisation of the value head when none is passed to the trainer: 'normal' (N(0, 1/(H+1))), "
            "'zeros', or 'reward_model' (copy the score head of the first reward model in `reward_funcs`)."
        },
    )
    value_head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the value head's own parameter group (no weight decay). `None`: the value "
            "head uses `learning_rate` like the policy."
        },
    )
    resume_with_fresh_value_head: bool = field(
        default=False,
        metadata={
            "help": "Resuming from a checkpoint without value-head files (e.g. a GRPOTrainer checkpoint) or without "
            "rft_state.json (adaptive beta) raises, naming the missing file. Set True to resume anyway with a "
            "freshly initialised value head (and beta from the config), explicitly."
        },
    )
    validate_reward_funcs: bool = field(
        default=True,
        metadata={
            "help": "Before training, call each reward function once on two dataset rows with placeholder "
            "completions, so that a wrong number of rewards or a NaN fails before step 1. Disable for reward "
            "functions with costly side effects (e.g. a paid judge API)."
        },
    )

    def __post_init__(self) -> None:
        if self.cliprange_value is not None and not self.cliprange_value > 0:
            raise ValueError(
                f"RFTConfig.cliprange_value must be > 0 (in reward units), or None to disable value clipping; got "
                f"{self.cliprange_value}."
            )
        if self.vf_coef < 0:
            raise ValueError(f"RFTConfig.vf_coef must be >= 0, got {self.vf_coef}.")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"RFTConfig.gamma and RFTConfig.lam must lie in [0, 1]; got {self.gamma}, {self.lam}.")
        if self.beta < 0:
            raise ValueError(f"RFTConfig.beta must be >= 0, got {self.beta}.")
        if self.kl_target is not None:
            if not self.kl_target > 0:
                raise ValueError(f"RFTConfig.kl_target must be > 0 (nats per sequence), got {self.kl_target}.")
            if self.beta == 0:
                raise ValueError("RFTConfig.kl_target needs beta > 0: the adaptive controller scales beta.")
        if self.kl_horizon <= 0:
            raise ValueError(f"RFTConfig.kl_horizon must be > 0, got {self.kl_horizon}.")
        if self.value_head_init not in ("normal", "zeros", "reward_model"):
            raise ValueError(
                f"RFTConfig.value_head_init must be 'normal', 'zeros' or 'reward_model', got {self.value_head_init!r}."
            )
        if self.value_head_learning_rate is not None and not self.value_head_learning_rate > 0:
            raise ValueError(f"RFTConfig.value_head_learning_rate must be > 0, got {self.value_head_learning_rate}.")
        if self.num_generations is None or self.num_generations < 1:
            raise ValueError(f"RFTConfig.num_generations must be >= 1, got {self.num_generations}.")
        grpo_post_init_allowing_one_generation(self, super().__post_init__)
        for name, (default, why) in _NOT_APPLICABLE.items():
            if getattr(self, name) != default:
                raise ValueError(
                    f"RFTConfig.{name}={getattr(self, name)!r} is not supported by RFTTrainer: {why}. Leave it at its "
                    f"default ({default!r})."
                )


# ---------------------------------------------------------------------------------------------------------------------
# Reference sync (sync_ref_model=True)
# ---------------------------------------------------------------------------------------------------------------------


class _PolicyParameters:
    """The parameters of a policy without those of its value head, in the policy's order (what the reference has)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def parameters(self) -> Iterator[nn.Parameter]:
        head = get_value_head(self.model)
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        return (p for p in self.model.parameters() if id(p) not in head_ids)


class PolicyOnlySyncRefModelCallback(SyncRefModelCallback):
    """TRL's ``SyncRefModelCallback`` (``ref ← (1 − α)·ref + α·policy`` every ``ref_model_sync_steps``, ZeRO-3
    aware) over the policy's parameters only: the value head attached to the policy has no counterpart in the
    reference, so TRL's own callback would zip one parameter list against a longer one and fail."""

    def on_step_end(self, args, state, control, **kwargs):
        if self.ref_model is None or state.global_step % args.ref_model_sync_steps != 0:
            return
        model = kwargs["model"]
        if self.accelerator:
            model = self.accelerator.unwrap_model(model)
        self.sync_target_model(_PolicyParameters(model), self.ref_model, args.ref_model_mixup_alpha)


@dataclass
class _PolicyForwards:
    """What :meth:`RFTTrainer._observe_policy` saw: per policy forward, ``V`` of all positions and the per-token
    log-probs, each ``(B, L)``."""

    values: list[torch.Tensor] = field(default_factory=list)
    logps: list[torch.Tensor] = field(default_factory=list)

    def completion_values(self, completion_length: int) -> torch.Tensor:
        """``V(s_t)`` for each completion token ``t``: the value at the position whose logits predict token ``t``."""
        return torch.cat(self.values, dim=0)[:, -completion_length - 1 : -1]

    def completion_logps(self, completion_length: int) -> torch.Tensor:
        """``log π(token_t)`` of each completion token (TRL's slice of the fused head's log-probs)."""
        return torch.cat(self.logps, dim=0)[:, -completion_length:]


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


class RFTTrainer(ValueHeadFilesMixin, GRPOBase):
    """PPO actor-critic reinforcement fine-tuning (value head, clipped value loss, GAE, KL in the reward).

    Takes every argument of TRL's ``GRPOTrainer`` (``model``, ``reward_funcs`` — graders from
    :mod:`trl_ext.rewards`, any TRL reward function, or sequence-classification reward models —, ``args``
    (an :class:`RFTConfig`), ``train_dataset`` with a ``prompt`` column, ``peft_config``, ``quantization_config``, …)
    plus ``value_head``: a :class:`~trl_ext.models.value_head.ValueHead` to start from (e.g.
    ``ValueHead.from_pretrained(folder)`` or ``ValueHead.from_reward_model(rm)``); by default one is created per
    ``args.value_head_init``. See the module docstring for the algorithm and the logged metrics.

    Example:
        >>> from trl_ext.trainers.rft import RFTConfig, RFTTrainer
        >>> def reward_len(completions, **kwargs):
        ...     return [-abs(20 - len(c)) / 20 for c in completions]
        >>> trainer = RFTTrainer(model="path/to/model", reward_funcs=reward_len, train_dataset=dataset,
        ...                      args=RFTConfig(output_dir="out", max_steps=10, report_to="none"))  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        >>> trainer.value_head  # doctest: +SKIP
        ValueHead(hidden_size=576)
    """

    _tag_names = ["trl", "trl-ext", "rft", "ppo", "value-head"]
    _name = "RFT"
    _config_class = RFTConfig
    _accepted_configs = (RFTConfig,)
    _no_reward_hint = (
        "RFTTrainer: reward_funcs may be a grader from trl_ext.rewards (e.g. default_grader(task)), any TRL reward "
        "function, or a sequence-classification reward model (path or model)."
    )
    _paper = {"title": "Proximal Policy Optimization Algorithms", "id": "1707.06347", "citation": _PPO_CITATION}
    _card_template = "rft.md"
    _card_hyperparameters = (
        "beta", "kl_target", "vf_coef", "cliprange_value", "epsilon", "epsilon_high", "gamma", "lam",
        "num_generations", "num_iterations", "steps_per_generation", "max_completion_length", "loss_type",
        "temperature", "missing_eos_penalty",
    )
    _card_plot_keys = ("reward", "kl", "vf_loss", "pg_loss", "explained_variance", "entropy")
    _card_metric_keys = (
        "reward", "reward_std", "rewards/*", "vf_loss", "pg_loss", "kl", "beta", "explained_variance",
        "vf_clipfrac", "value_pred_mean", "returns_mean", "advantages_std", "entropy", "clip_ratio/region_mean",
        "completions/mean_length", "eval_*", "train_loss", "train_runtime",
    )

    def __init__(self, *grpo_args: Any, value_head: ValueHead | None = None, **grpo_kwargs: Any) -> None:
        super().__init__(*grpo_args, **grpo_kwargs)  # GRPOTrainer's arguments; bad input fails before anything loads
        args = self.args

        # ---- the KL in the reward: RFT's own coefficient; TRL's KL *loss* term off ----------------------------
        self._fixed_kl_coef = float(args.beta)
        self.kl_ctl = AdaptiveKLController(args.beta, args.kl_target, args.kl_horizon) if args.kl_target else None
        if args.beta > 0:
            if not grpo_has_reference(self):
                raise RuntimeError(
                    "RFTTrainer: beta > 0 needs a reference policy, but GRPOTrainer built none (no ref_model, no PEFT "
                    "adapters to disable)."
                )
            grpo_kl_loss_term_off(self)  # TRL built the reference from args.beta; its loss coefficient is 0 in RFT
        self._policy_only_ref_sync()

        # ---- the critic ----------------------------------------------------------------------------------------
        if value_head is None:
            value_head = self._build_value_head()
        attach_value_head(self.model, value_head)

    # ---- construction helpers ------------------------------------------------------------------------------------

    @property
    def value_head(self) -> ValueHead:
        """The critic's head (a submodule of the policy model)."""
        head = get_value_head(self.model)
        if head is None:
            raise RuntimeError("RFTTrainer: the policy model has no value head attached.")
        return head

    @property
    def kl_coef(self) -> float:
        """The current KL coefficient β of the reward (adapted when ``kl_target`` is set, else ``args.beta``).

        RFT's own state: never TRL's ``self.beta``, which is the coefficient of TRL's KL *loss* term and is 0 in RFT.
        """
        return self.kl_ctl.value if self.kl_ctl is not None else self._fixed_kl_coef

    def _policy_only_ref_sync(self) -> None:
        """With ``sync_ref_model=True``, TRL's ``SyncRefModelCallback`` is replaced by one that mixes only the policy's
        parameters into the reference: the value head is a submodule of the policy, not of the reference."""
        original = self.pop_callback(SyncRefModelCallback)
        if original is not None:
            self.add_callback(PolicyOnlySyncRefModelCallback(ref_model=original.ref_model, accelerator=self.accelerator))

    def _build_value_head(self) -> ValueHead:
        config = self.accelerator.unwrap_model(self.model).config
        hidden_size = config.get_text_config().hidden_size
        if self.args.value_head_init != "reward_model":
            return ValueHead(hidden_size, init=self.args.value_head_init)
        reward_models = [f for f in self.reward_funcs if isinstance(f, nn.Module)]
        if not reward_models:
            raise ValueError(
                "RFTConfig.value_head_init='reward_model' needs a reward model in reward_funcs (a path or an "
                "AutoModelForSequenceClassification); none was given."
            )
        head = ValueHead.from_reward_model(self.accelerator.unwrap_model(reward_models[0]))
        if head.hidden_size != hidden_size:
            raise ValueError(
                f"RFTConfig.value_head_init='reward_model': the reward model's hidden size ({head.hidden_size}) "
                f"differs from the policy's ({hidden_size}); its score head cannot initialise the value head."
            )
        return head

    # ---- what the policy forward computes: values (the hook) and log-probs -----------------------------------

    @contextlib.contextmanager
    def _observe_policy(self, model: nn.Module) -> Iterator[_PolicyForwards]:
        """Within the block, every forward of the policy appends ``V`` of all positions ``(B, L)`` to ``.values`` and,
        for TRL's fused-LM-head forward, the per-token log-probs ``(B, L)`` to ``.logps``. Observation only: the
        forward's result is TRL's (but for a zero term that ties the value head into DDP's graph, see below)."""
        head = self.value_head
        seen = _PolicyForwards()

        def value_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            values = head(hidden)
            seen.values.append(values)
            if not (torch.is_grad_enabled() and values.requires_grad):
                return None
            # Tie the head into the forward's own graph with a term that is zero in value *and* gradient
            # (``0 · V``), so that DDP (which, with find_unused_parameters=True, marks every parameter unreachable
            # from the forward's output as unused) counts the value head as used, while the policy loss still sends
            # no gradient into it: the critic's gradient comes from the value loss only.
            tied = hidden + (values.unsqueeze(-1) * 0.0).to(hidden.dtype)
            if hasattr(output, "last_hidden_state"):
                output.last_hidden_state = tied
                return output
            return (tied, *output[1:])

        def logps_hook(module: nn.Module, inputs: Any, output: Any) -> None:
            logps = fused_lm_head_log_probs(output)
            if logps is not None:
                seen.logps.append(logps)

        handles = [fused_lm_head_backbone(model).register_forward_hook(value_hook),
                   fused_lm_head_model(model).register_forward_hook(logps_hook)]
        try:
            yield seen
        finally:
            for handle in handles:
                handle.remove()

    # ---- rollout: rewards → GAE → (B, T) advantages -----------------------------------------------------------

    def token_advantages(self, batch: dict[str, Any], rewards: RolloutRewards) -> torch.Tensor:
        """PPO's advantages of one rollout, ``(B, T)``: sequence scores, one no-grad forward for ``logp_old`` and
        ``V_old``, per-token RLHF rewards, GAE, whitening (global batch). Adds what the value loss reads to ``batch``:
        ``value_mask``, ``old_values``, ``returns`` (and ``ref_per_token_logps``, ``rft_scores``,
        ``value_items_in_batch``)."""
        args = self.args
        grpo_require_batch_keys(batch, _ROLLOUT_KEYS, "RFTTrainer.token_advantages")
        completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
        B, T = completion_ids.shape
        mask = completion_mask if batch.get("tool_mask") is None else completion_mask * batch["tool_mask"]

        # 1. Sequence scores: weighted sum of the reward functions (None skipped, as TRL does), on this rank's rows
        scores, unscorable = rewards.weighted_sum(self.reward_weights, rows=grpo_local_slice(self, B))
        if args.missing_eos_penalty is not None:
            eos = torch.tensor(self.eos_token_ids, device=completion_ids.device)
            has_eos = (torch.isin(completion_ids, eos) & completion_mask.bool()).any(dim=1)
            scores = torch.where(has_eos, scores, scores - args.missing_eos_penalty)
        batch["rft_scores"] = scores.float()
        batch["value_mask"] = (mask.bool() & ~unscorable.unsqueeze(1)).to(completion_mask.dtype)
        # Value-loss tokens of the global generation batch (all processes), like TRL's num_items_in_batch
        batch["value_items_in_batch"] = self.accelerator.gather(batch["value_mask"].sum()).sum()

        # 2. The rollout policy, no grad: logp_ref (TRL's reference, for the KL reward), logp_old and V_old
        batch_size = args.per_device_train_batch_size if self.model.training else args.per_device_eval_batch_size
        with self._observe_policy(self.model) as seen:
            logps = grpo_policy_logps(self, self.model, batch, batch_size=batch_size)
        if batch.get("old_per_token_logps") is not None:  # TRL computed them already (same policy, same inputs)
            logps = batch["old_per_token_logps"]
        ref_logps = logps  # beta == 0: no reference, no penalty
        if args.beta > 0:  # TRL's KL loss term is off (see __init__), so TRL computed none
            ref_logps = batch["ref_per_token_logps"] = grpo_reference_logps(self, batch, batch_size=batch_size)

        # 3. Per-token rewards → GAE → whitening
        return self._gae_advantages(batch, logps, ref_logps, seen.completion_values(T))

    def _whiten_global(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:func:`~trl_ext.core.whiten` with the mean and variance of the global batch (all processes' valid tokens).

        One process: ``whiten(x, mask)`` itself. Several: the float64 moments ``[n, Σx, Σx²]`` of each process are
        summed by one all-reduce, so every process whitens with the same statistics as one process holding the
        whole batch would.
        """
        if self.accelerator.num_processes == 1:
            return whiten(x, mask)
        mean, var = moments_mean_var(self.accelerator.reduce(masked_moments(x, mask), reduction="sum"))
        return whiten_with_stats(x, mask, mean, var)

    def _gae_advantages(
        self, batch: dict[str, Any], logps: torch.Tensor, ref_logps: torch.Tensor, old_values: torch.Tensor
    ) -> torch.Tensor:
        """Per-token rewards → GAE → whitening: returns the advantages, writes ``old_values`` and ``returns``.

        ``logps`` / ``ref_logps`` / ``old_values``: ``(B, T)`` rollout and reference log-probs and rollout values of
        ``batch``'s completions (detached; ``ref_logps = logps`` gives no KL penalty).
        Whitening and the logged statistics are over the global batch (all processes). Also logs the rollout metrics
        and updates the adaptive KL coefficient (with the global KL, so β stays equal on all processes).
        """
        args = self.args
        mode = "train" if self.model.training else "eval"
        logps, ref_logps, old_values = logps.detach().float(), ref_logps.detach().float(), old_values.detach().float()
        valid = batch["value_mask"].bool()
        scores = batch["rft_scores"]

        beta = self.kl_coef
        token_rewards, kl_penalty = rlhf_token_rewards(scores, logps, ref_logps, valid, beta)
        advantages, returns = gae(token_rewards, old_values, valid, gamma=args.gamma, lam=args.lam)
        if args.whiten_advantages:
            advantages = self._whiten_global(advantages, valid)
        advantages = torch.where(valid, advantages, torch.zeros_like(advantages))
        batch["old_values"] = old_values
        batch["returns"] = returns

        # Metrics over the global batch: float64 moments [n, Σx, Σx²] summed over processes (token-weighted)
        seq_kl = masked_sum(kl_k1(logps, ref_logps), valid, dim=1)
        rows = torch.ones_like(seq_kl)
        moments = torch.stack(
            [
                masked_moments(seq_kl, rows),
                masked_moments(scores + masked_sum(kl_penalty, valid, dim=1), rows),
                masked_moments(old_values, valid),
                masked_moments(returns, valid),
                masked_moments(returns - old_values, valid),
                masked_moments(advantages, valid),
            ]
        )
        moments = self.accelerator.reduce(moments, reduction="sum")
        means, variances = moments_mean_var(moments)
        stats = {
            "kl": means[0].item(),
            "rlhf_reward": means[1].item(),
            "value_mean": means[2].item(),
            "returns_mean": means[3].item(),
            "explained_variance": explained_variance_from_moments(moments[3], moments[4]).item(),
            "advantages_std": variances[5].sqrt().item(),
        }
        for name, value in stats.items():
            grpo_metrics(self, mode)[name].append(value)
        grpo_metrics(self, mode)["beta"].append(float(beta))
        if self.kl_ctl is not None and mode == "train":
            self.kl_ctl.update(stats["kl"], n_steps=valid.size(0) * self.accelerator.num_processes)
        return advantages

    # ---- update: TRL's policy loss + the clipped value loss of the same forward -----------------------------

    def _compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        mode = "train" if self.model.training else "eval"
        T = inputs["completion_mask"].size(1)
        with self._observe_policy(model) as seen:
            policy_loss = super()._compute_loss(model, inputs)  # reads inputs["advantages"] (token_advantages)
        if len(seen.values) != 1 or len(seen.logps) != 1:
            raise RuntimeError(
                f"RFTTrainer: expected exactly one policy forward in GRPOTrainer._compute_loss, saw "
                f"{len(seen.values)} (value hook) / {len(seen.logps)} (log-probs); this TRL version is not supported "
                "by trl_ext.trainers.rft."
            )
        values = seen.completion_values(T)
        vf_loss, vf_clipfrac = clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], inputs["value_mask"], self.args.cliprange_value
        )
        loss = policy_loss + self.args.vf_coef * vf_loss / self._value_loss_normalizer(inputs, mode)
        self._log_update_metrics(inputs, mode, policy_loss, seen.completion_logps(T), values, vf_loss, vf_clipfrac)
        return loss

    def _log_update_metrics(
        self,
        inputs: dict[str, Any],
        mode: str,
        policy_loss: torch.Tensor,
        logps: torch.Tensor,
        values: torch.Tensor,
        vf_loss: torch.Tensor,
        vf_clipfrac: torch.Tensor,
    ) -> None:
        """Log ``pg_loss`` (what TRL's loss returned), ``approx_kl``, ``vf_loss``, ``vf_clipfrac``, ``value_pred_mean``.

        ``pg_loss`` is the optimised policy loss: the value TRL returned on each process (already divided by the
        accumulation steps for training), averaged over processes (as DDP averages the gradients) and multiplied by
        the accumulation steps, so that the mean over an optimizer step's micro-batches (what ``log`` reports) is
        the sum over them — the objective whose gradient was applied. The token statistics are token means over the
        global batch: each local token mean times its token count (exact in float64) gives the local sum; the sums
        and counts are added over processes.
        """
        completion_mask = inputs["completion_mask"]
        mask = completion_mask if inputs.get("tool_mask") is None else completion_mask * inputs["tool_mask"]
        logps = logps.detach()
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps if old_logps is None else old_logps
        approx_kl = masked_mean(kl_k3(old_logps, logps), mask)  # k3 of KL(π_old ‖ π): (ρ − 1) − log ρ
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        pg_loss = self.accelerator.reduce(policy_loss.detach().double(), reduction="mean") * accumulation
        n_pg, n_vf = mask.sum().double(), inputs["value_mask"].sum().double()
        vf_means = torch.stack(
            [vf_loss.detach(), vf_clipfrac, masked_mean(values.detach(), inputs["value_mask"])]
        ).double()
        local = torch.cat([approx_kl.detach().double()[None] * n_pg, n_pg[None], vf_means * n_vf, n_vf[None]])
        sums = self.accelerator.reduce(local, reduction="sum")
        metrics = {
            "pg_loss": pg_loss.item(),
            "approx_kl": (sums[0] / sums[1].clamp(min=1.0)).item(),
            **dict(zip(("vf_loss", "vf_clipfrac", "value_pred_mean"), (sums[2:5] / sums[5].clamp(min=1.0)).tolist())),
        }
        for name, value in metrics.items():
            grpo_metrics(self, mode)[name].append(value)

    def _value_loss_normalizer(self, inputs: dict[str, Any], mode: str) -> Any:
        """Divisor of the local token-mean value loss that makes it a token mean over the global accumulated batch.

        ``vf_loss · n_local / normalizer = Σ_local / (N / P · GA / steps_per_generation)``, with ``N`` the value-loss
        tokens of the whole generation batch (all processes, ``value_items_in_batch``), ``P`` processes and ``GA``
        accumulation steps: once DDP averages the gradients over processes and the micro-batches of a step are
        accumulated, the value loss is ``Σ_{global tokens} / N_step`` — the token mean over the global batch of the
        optimizer step, as PPO implementations define it, whatever the policy's ``loss_type`` (TRL's aggregation of
        its policy loss is not reused: it is internal to ``GRPOTrainer._compute_loss``). In evaluation the batch is
        neither split nor accumulated: ``N / P``. One process, ``GA == steps_per_generation == 1``: ``1``.
        """
        normalizer = inputs["value_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":  # value_items_in_batch spans the generation batch: rescale to one accumulation window
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return normalizer / inputs["value_mask"].sum().clamp(min=1)

    # ---- optimizer -----------------------------------------------------------------------------------------------

    def create_optimizer(self, model: nn.Module | None = None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        lr = self.args.value_head_learning_rate
        if lr is None:
            return optimizer
        head_params = list(self.value_head.parameters())
        head_ids = {id(p) for p in head_params}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in head_ids]
        optimizer.add_param_group({"params": head_params, "lr": lr, "weight_decay": 0.0})
        return optimizer

    def _card_load_snippet(self, repo_id: str, peft: bool) -> str:
        return (
            "from transformers import AutoTokenizer\n"
            "from trl_ext.models.value_head import load_policy_and_value_head\n\n"
            f'model, value_head = load_policy_and_value_head("{repo_id}")  # policy + critic (value_head.safetensors)\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
        )
