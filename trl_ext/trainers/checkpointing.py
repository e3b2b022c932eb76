"""Resume behaviour shared by trl_ext's trainers: skip incomplete checkpoints, never train past a finished run,
continue exactly.

:class:`ResumeMixin` goes first in the bases of ``RFTTrainer``, ``ProcessGRPOTrainer`` and ``UnifiedLikelihoodTrainer``
and only overrides ``train``:

- ``resume_from_checkpoint=True`` resolves to the last *complete* ``checkpoint-N`` of ``output_dir``
  (:func:`last_complete_checkpoint`). The Trainer writes ``trainer_state.json`` last in a checkpoint, so a checkpoint
  whose ``trainer_state.json`` is missing or unreadable was interrupted mid-save (a kill, a full disk); it is skipped
  with a warning naming it, instead of failing with ``FileNotFoundError trainer_state.json`` /
  ``SafetensorError``. A checkpoint whose value head was saved with other policy weights
  (:func:`~trl_ext.models.value_head.check_policy_pairing`) is incomplete too.
- A checkpoint that already reached the run's ``max_steps`` (``args.max_steps``, or, when training by epochs with the
  same ``num_train_epochs``, the ``max_steps`` recorded in its ``trainer_state.json``) is a finished run: ``train``
  loads its weights and state, warns that there is nothing left to train, calls no reward function, moves no weight,
  and returns a ``TrainOutput`` at the checkpoint's step. (The Trainer alone would run one more step past it.)
- Exact continuation for the GRPO-based trainers: TRL's shuffling ``RepeatSampler`` gets a ``set_epoch``
  (:func:`~trl_ext.trainers.trl_compat.grpo_sampler_with_set_epoch`, the same order as an uninterrupted stock run),
  so a resume in epoch ``e > 0`` does not replay epoch 0; and each checkpoint saves GRPO's micro-step counter and
  buffered rollout (``rollout_buffer_<process>.pt``, next to the RNG states, before ``trainer_state.json``), so a
  resume between the updates of one rollout (``steps_per_generation > 1``) uses the same rollout.

Example:
    >>> trainer.train(resume_from_checkpoint=True)  # doctest: +SKIP
    UserWarning: RFTTrainer: checkpoint .../checkpoint-6 is at global step 6 of max_steps 6: the run is finished ...
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

__all__ = ["ResumeMixin", "checkpoint_problem", "last_complete_checkpoint", "remove_stale_cache_temporaries"]

_TRAINER_STATE_NAME = "trainer_state.json"
ROLLOUT_BUFFER_NAME = "rollout_buffer_{}.pt"
"""Per-process file of a checkpoint holding GRPO's micro-step counter and buffered rollout (steps_per_generation > 1)."""
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a complete checkpoint (``None`` if it is one).

    Complete: ``trainer_state.json`` (written last by ``Trainer._save_checkpoint``) parses, and a value head saved
    there matches the policy files it was saved with.
    """
    from ..models.value_head import check_policy_pairing

    folder = Path(folder)
    state = folder / _TRAINER_STATE_NAME
    if not state.is_file():
        return f"no {_TRAINER_STATE_NAME} (interrupted while saving)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError) as err:
        return f"unreadable {_TRAINER_STATE_NAME} ({err})"
    try:
        check_policy_pairing(folder)
    except ValueError as err:
        return str(err)
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike, who: str = "Trainer") -> str | None:
    """The complete ``checkpoint-N`` of ``output_dir`` with the largest ``N``; warns naming each newer one skipped."""
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        warnings.warn(
            f"{who}: resume_from_checkpoint=True skips the incomplete checkpoint {path}: {problem}. Resuming from "
            "the previous complete one (delete the incomplete folder when convenient).",
            stacklevel=3,
        )
    return None


def _open_by_a_process(path: str) -> bool:
    """Whether a process visible in ``/proc`` has ``path`` open (Linux; ``False`` elsewhere)."""
    target = os.path.realpath(path)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) == target:
                        return True
                except OSError:
                    continue
        except OSError:
            continue
    return False


def remove_stale_cache_temporaries(dataset: Any, max_age_s: float = 600.0) -> list[str]:
    """Remove the ``tmp*`` files that a killed ``datasets`` cache write (e.g. TRL's reference log-prob cache)
    left in ``dataset``'s cache folder; returns the removed paths.

    ``Dataset.map(cache_file_name=...)`` writes into ``tempfile.NamedTemporaryFile(dir=<cache folder>)`` and renames
    it when done, so a kill leaves a ``tmpXXXXXXXX`` file there forever. Only files untouched for ``max_age_s``
    seconds and (on Linux) open in no process are removed: a live writer's file is never touched. An in-memory dataset
    (no cache files) has nothing to clean.
    """
    files = getattr(dataset, "cache_files", None) or []
    folders = {os.path.dirname(f["filename"]) for f in files if isinstance(f, dict) and f.get("filename")}
    removed = []
    now = __import__("time").time()
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if not re.fullmatch(r"tmp[a-z0-9_]{6,}", name) or not os.path.isfile(path):
                continue
            try:
                if now - os.path.getmtime(path) < max_age_s or _open_by_a_process(path):
                    continue
                os.remove(path)
                removed.append(path)
            except OSError:
                continue
    return removed


class ResumeMixin:
    """``train`` that resumes from the last complete checkpoint and does nothing for a finished run (module doc)."""

    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None, ignore_keys_for_eval=None,
              **kwargs: Any):
        who = type(self).__name__
        if resume_from_checkpoint is True:
            last = last_complete_checkpoint(self.args.output_dir, who=who)
            if last is None:
                raise ValueError(
                    f"{who}: resume_from_checkpoint=True but {self.args.output_dir} holds no complete "
                    f"{PREFIX_CHECKPOINT_DIR}-N folder."
                )
            resume_from_checkpoint = last
        if isinstance(resume_from_checkpoint, (str, os.PathLike)) and trial is None:
            finished = self._finished_run_output(str(resume_from_checkpoint), who)
            if finished is not None:
                return finished
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    # ---- exact resume: epoch-dependent sampler order, the buffered rollout (GRPO-based trainers) ---------------

    def _get_train_sampler(self, *args: Any, **kwargs: Any):
        from .trl_compat import grpo_sampler_with_set_epoch

        return grpo_sampler_with_set_epoch(super()._get_train_sampler(*args, **kwargs))

    def _save_rng_state(self, output_dir: str) -> None:
        # written with the RNG states, before trainer_state.json marks the checkpoint complete
        super()._save_rng_state(output_dir)
        from .trl_compat import grpo_rollout_buffer_state

        state = grpo_rollout_buffer_state(self)
        if state is not None and state["buffered_inputs"] is not None:
            import torch

            path = os.path.join(output_dir, ROLLOUT_BUFFER_NAME.format(self.args.process_index))
            torch.save(state, path + ".tmp")
            os.replace(path + ".tmp", path)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        path = os.path.join(resume_from_checkpoint, ROLLOUT_BUFFER_NAME.format(self.args.process_index))
        if os.path.isfile(path):
            import torch

            from .trl_compat import grpo_restore_rollout_buffer

            grpo_restore_rollout_buffer(self, torch.load(path, map_location=self.args.device, weights_only=False))

    def _finished_run_output(self, checkpoint: str, who: str) -> TrainOutput | None:
        from transformers import TrainerState

        state_file = os.path.join(checkpoint, _TRAINER_STATE_NAME)
        if not os.path.isfile(state_file):
            return None  # the Trainer raises its own error
        state = TrainerState.load_from_json(state_file)
        if self.args.max_steps > 0:
            target = self.args.max_steps
        elif state.num_train_epochs == self.args.num_train_epochs and state.max_steps > 0:
            target = state.max_steps
        else:
            return None
        if state.global_step < target:
            return None
        warnings.warn(
            f"{who}: checkpoint {checkpoint} is at global step {state.global_step} of max_steps {target}: the run is "
            "finished, nothing is trained (no generation, no reward call, no update). Its weights are loaded. Raise "
            "max_steps (or num_train_epochs) to train further.",
            stacklevel=3,
        )
        if not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            self._load_from_checkpoint(checkpoint)
        self.state = state
        loss = next((e["train_loss"] for e in reversed(state.log_history) if "train_loss" in e), 0.0)
        return TrainOutput(state.global_step, loss, {"train_loss": loss, "nothing_to_train": 1.0})
