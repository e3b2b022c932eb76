"""The critic's files in RFT checkpoints and output folders: ``value_head.safetensors`` + ``value_head_config.json``
(the head, with the hashes of the policy files it was saved with) and ``rft_state.json`` (the adaptive KL coefficient
β with ``kl_target``).

:class:`ValueHeadFilesMixin` (first in :class:`~trl_ext.trainers.rft.RFTTrainer`'s bases) writes them with every save
(DeepSpeed/FSDP: from the gathered state dict), reloads them on ``resume_from_checkpoint`` and
``load_best_model_at_end``, copies them with ``push_to_hub(hub_strategy="checkpoint")``, and refuses a checkpoint
without them (a GRPOTrainer checkpoint, deleted files) or whose files come from two different saves — unless
``RFTConfig.resume_with_fresh_value_head`` asks for a fresh critic explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from torch import nn

from ..models.value_head import (
    VALUE_HEAD_ATTRIBUTE,
    VALUE_HEAD_CONFIG_NAME,
    VALUE_HEAD_WEIGHTS_NAME,
    ValueHead,
    atomic_write_text,
    check_policy_pairing,
    has_value_head_files,
    policy_fingerprint,
    policy_record,
)

__all__ = ["RFT_STATE_NAME", "ValueHeadFilesMixin"]

RFT_STATE_NAME = "rft_state.json"
"""File in each checkpoint holding the trainer state that the Trainer does not save (the adaptive KL coefficient)."""


class ValueHeadFilesMixin:
    """Save, reload and push the value head and β with the policy (needs ``self.value_head`` and ``self.kl_ctl``)."""

    def _value_head_for_saving(self, state_dict: dict | None) -> ValueHead:
        """The head to save: from a gathered ``state_dict`` (DeepSpeed/FSDP) when it has the head, else the module."""
        head = self.value_head
        if state_dict:
            prefix = f"{VALUE_HEAD_ATTRIBUTE}."
            found = {k.split(prefix, 1)[1]: v for k, v in state_dict.items() if prefix in k}
            if found and set(found) == set(head.state_dict()):
                copy = ValueHead(head.hidden_size, init="zeros", bias=head.summary.bias is not None)
                copy.load_state_dict({k: v.detach().float().cpu() for k, v in found.items()})
                copy.source = head.source
                return copy
        return head

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        # the policy files are written: record their hashes with the head and beta, so a mixed folder is refused
        record = policy_record(output_dir, global_step=self.state.global_step)
        self._value_head_for_saving(state_dict).save_pretrained(output_dir, policy=record)
        if self.kl_ctl is not None:
            state = {"beta": self.kl_ctl.value, "policy": record}
            atomic_write_text(Path(output_dir, RFT_STATE_NAME), json.dumps(state, indent=2) + "\n")

    def _load_rft_files(self, folder: str | None) -> None:
        """Load the value head and beta of ``folder``; refuse missing files and a policy/head pair of two saves.

        No value head (a GRPOTrainer checkpoint, deleted files) raises naming the file, unless
        ``args.resume_with_fresh_value_head`` (then the current head — freshly initialised — is kept, with a
        warning). The same for ``rft_state.json`` with an adaptive beta (``kl_target``): beta is never silently reset.
        """
        if not folder or not os.path.isdir(folder):
            return
        fresh_ok = getattr(self.args, "resume_with_fresh_value_head", False)
        hint = ("set RFTConfig.resume_with_fresh_value_head=True to start a fresh critic (and beta from the config) "
                "explicitly")
        if has_value_head_files(folder):
            check_policy_pairing(folder, where="RFTTrainer (resume)")
            self.value_head.load_weights(folder)
        else:
            missing = next(n for n in (VALUE_HEAD_WEIGHTS_NAME, VALUE_HEAD_CONFIG_NAME) if not Path(folder, n).is_file())
            if not fresh_ok:
                raise FileNotFoundError(
                    f"RFTTrainer: the checkpoint {folder} has no {missing} (is it a GRPOTrainer checkpoint, or were "
                    f"files removed?): resuming would silently re-initialise the value head. Restore the file, or {hint}."
                )
            warnings.warn(f"RFTTrainer: {folder} has no {missing}; resuming with a fresh value head as asked "
                          "(resume_with_fresh_value_head=True).", stacklevel=2)
        state_file = Path(folder, RFT_STATE_NAME)
        if self.kl_ctl is None:
            return
        if not state_file.is_file():
            if not fresh_ok:
                raise FileNotFoundError(
                    f"RFTTrainer: the checkpoint {folder} has no {RFT_STATE_NAME}, which holds the adaptive KL "
                    f"coefficient beta (kl_target is set): resuming would silently reset beta to {self.args.beta}. "
                    f"Restore the file, or {hint}."
                )
            warnings.warn(f"RFTTrainer: {folder} has no {RFT_STATE_NAME}; beta restarts at {self.args.beta} as asked.",
                          stacklevel=2)
            return
        state = json.loads(state_file.read_text())
        recorded = (state.get("policy") or {}).get("files")
        if recorded is not None and has_value_head_files(folder) and recorded != policy_fingerprint(folder):
            raise ValueError(
                f"RFTTrainer (resume): {state_file} was saved with other policy weights than the ones in {folder}: "
                "the checkpoint mixes two saves. Use a complete checkpoint."
            )
        self.kl_ctl.value = float(state["beta"])

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        self._load_rft_files(resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except ValueError as err:
            if "parameter group" not in str(err):
                raise
            raise ValueError(
                f"RFTTrainer: the optimizer state in {checkpoint} does not fit this trainer's parameter groups ({err}). "
                "It was saved by another trainer (e.g. GRPOTrainer, without RFT's value head) or with another "
                "value_head_learning_rate. Remove optimizer.pt (and scheduler.pt) from the checkpoint to resume with a "
                "fresh optimizer state."
            ) from err

    def _load_best_model(self) -> None:
        super()._load_best_model()
        self._load_rft_files(self.state.best_model_checkpoint)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Trainer copies a fixed list of model files from the checkpoint into output_dir before uploading it
        if self.is_world_process_zero():
            for name in (VALUE_HEAD_WEIGHTS_NAME, VALUE_HEAD_CONFIG_NAME, RFT_STATE_NAME):
                source = os.path.join(checkpoint_folder, name)
                if os.path.isfile(source):
                    os.makedirs(self.args.output_dir, exist_ok=True)
                    shutil.copy(source, os.path.join(self.args.output_dir, name))
        super()._push_from_checkpoint(checkpoint_folder)
