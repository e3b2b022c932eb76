"""Checkpoints and resume shared by trl_ext's trainers: atomic checkpoints, skip incomplete ones, never train past a
finished run, continue exactly.

:class:`ResumeMixin` goes first in the bases of ``RFTTrainer``, ``ProcessGRPOTrainer``, ``UnifiedLikelihoodTrainer``
and ``PRMTrainer``:

- **Atomic checkpoints.** ``_save_checkpoint`` writes every file of ``checkpoint-N`` — model or adapter, value head
  and ``rft_state.json`` (RFT's ``_save``), optimizer, scheduler, scaler, RNG states, rollout buffers, and
  ``trainer_state.json`` last — into the staging sibling ``_checkpoint-N.tmp-<host>-<pid>`` (:func:`staging_folder`;
  ``<pid>`` of the main process, the same folder on every process) and renames it to ``checkpoint-N`` only when all
  are written: after a barrier of all processes (the end of ``_save_rng_state``, or of ``save_model`` with
  ``save_only_model``), the main process writes ``trainer_state.json`` into it and renames it
  (:func:`publish_checkpoint`; an older ``checkpoint-N`` of the same step is replaced without a moment where a
  half-written one exists). Then the Trainer's push of the checkpoint (``hub_strategy="checkpoint"`` /
  ``"all_checkpoints"``: ``last-checkpoint/`` / ``checkpoint-N/``) and the ``save_total_limit`` rotation run on the
  complete folder, and ``best_model_checkpoint`` names ``checkpoint-N``. A kill at any moment therefore leaves either
  a complete ``checkpoint-N`` or none plus a staging folder; an exception during a save removes its staging folder.
  Files that subclasses add after ``Trainer._save_checkpoint`` returns (the README model card, GRPO's
  ``entropy_ctrl_state.json`` with adaptive entropy) go into the published folder. The leading ``_`` keeps
  staging folders out of ``checkpoint-*`` globs, rotation and the Hub uploads of ``output_dir`` (which ignore
  ``_*``). Not covered: power loss (files are not fsynced).
- ``train`` first removes stale staging folders of ``output_dir`` (:func:`remove_stale_checkpoint_staging`): made on
  this host by a process that is gone, with a warning naming each; a live process's, or another host's, stay.
- ``resume_from_checkpoint=True`` resolves to the last *complete* ``checkpoint-N`` of ``output_dir``
  (:func:`last_complete_checkpoint`). A ``checkpoint-N`` without a readable ``trainer_state.json`` (written by another
  trainer without atomic saves, or damaged) or whose value head was saved with other policy weights
  (:func:`~trl_ext.models.value_head.check_policy_pairing`) is skipped with a warning naming it, instead of failing
  with ``FileNotFoundError trainer_state.json`` / ``SafetensorError``.
- A checkpoint that already reached the run's ``max_steps`` (``args.max_steps``, or, when training by epochs with the
  same ``num_train_epochs``, the ``max_steps`` recorded in its ``trainer_state.json``) is a finished run: ``train``
  loads its weights and state, warns that there is nothing left to train, calls no reward function, moves no weight,
  and returns a ``TrainOutput`` at the checkpoint's step. (The Trainer alone would run one more step past it.)
- Exact continuation for the GRPO-based trainers: TRL's shuffling ``RepeatSampler`` gets a ``set_epoch``
  (:func:`~trl_ext.trainers.trl_compat.grpo_sampler_with_set_epoch`, the same order as an uninterrupted stock run),
  so a resume in epoch ``e > 0`` does not replay epoch 0; and each checkpoint saves GRPO's micro-step counter and
  buffered rollout (``rollout_buffer_<process>.pt``, next to the RNG states), so a resume between the updates of one
  rollout (``steps_per_generation > 1``) uses the same rollout. ``UnifiedLikelihoodTrainer`` (DPO's data order) needs
  nothing more: its resume in epoch 2 is exact as it is.

Together: a run SIGKILLed at any moment (inside saves too) and restarted with ``resume_from_checkpoint=True`` until it
finishes ends bit-identical to the uninterrupted run with the same seed (tests/test_reliability_kill.py).

Example:
    >>> trainer.train(resume_from_checkpoint=True)  # doctest: +SKIP
    UserWarning: RFTTrainer: checkpoint .../checkpoint-6 is at global step 6 of max_steps 6: the run is finished ...
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

__all__ = [
    "ResumeMixin",
    "checkpoint_problem",
    "last_complete_checkpoint",
    "remove_stale_cache_temporaries",
    "publish_checkpoint",
    "remove_stale_checkpoint_staging",
    "staging_folder",
]

_TRAINER_STATE_NAME = "trainer_state.json"
ROLLOUT_BUFFER_NAME = "rollout_buffer_{}.pt"
"""Per-process file of a checkpoint holding GRPO's micro-step counter and buffered rollout (steps_per_generation > 1)."""
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_STAGING_RE = re.compile(rf"^_{PREFIX_CHECKPOINT_DIR}-\d+\.(?:tmp|old)-(?P<host>.+)-(?P<pid>\d+)$")


def _owner_tag() -> str:
    """``<host>-<pid>`` of this process: whose staging folder it is (host sanitised for a file name)."""
    return f"{re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname())}-{os.getpid()}"


def staging_folder(run_dir: str | os.PathLike, step: int, owner: str, kind: str = "tmp") -> str:
    """``run_dir/_checkpoint-<step>.<kind>-<owner>``: where ``checkpoint-<step>`` is written before its rename.

    The leading ``_`` keeps it out of everything that looks for checkpoints (``checkpoint-*`` globs, rotation,
    ``get_last_checkpoint``) and out of the Trainer's Hub uploads of ``output_dir`` (they ignore ``_*``).
    """
    return os.path.join(run_dir, f"_{PREFIX_CHECKPOINT_DIR}-{step}.{kind}-{owner}")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def remove_stale_checkpoint_staging(output_dir: str | os.PathLike) -> list[str]:
    """Remove the staging folders (``_checkpoint-N.tmp-<host>-<pid>``, ``….old-…``) of saves that never finished;
    returns the removed paths.

    A folder is stale when it was made on this host by a process that is gone (or by this very process, which has no
    save in progress when a ``train`` starts). A live process's folder, or one made on another host, is left alone.
    """
    if not os.path.isdir(output_dir):
        return []
    host, _ = _owner_tag().rsplit("-", 1)
    removed = []
    for name in sorted(os.listdir(output_dir)):
        match = _STAGING_RE.match(name)
        path = os.path.join(output_dir, name)
        if not match or match["host"] != host or not os.path.isdir(path):
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


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


def publish_checkpoint(staging: str, final: str, owner: str) -> None:
    """Rename the complete ``staging`` folder to ``final``; an existing ``final`` (an older save of that step) is
    renamed aside first and removed after, so ``final`` is at every moment absent, the old or the new checkpoint."""
    if not os.path.exists(final):
        os.rename(staging, final)
        return
    run_dir, name = os.path.split(final)
    aside = staging_folder(run_dir, int(name.rsplit("-", 1)[1]), owner, kind="old")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(final, aside)
    os.rename(staging, final)
    shutil.rmtree(aside, ignore_errors=True)


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
        if self.args.should_save:
            for path in remove_stale_checkpoint_staging(self.args.output_dir):
                warnings.warn(f"{who}: removed {path}, the unfinished checkpoint save of a process that is gone.",
                              stacklevel=2)
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
        output_dir = self._staged(output_dir)
        super()._save_rng_state(output_dir)
        from .trl_compat import grpo_rollout_buffer_state

        state = grpo_rollout_buffer_state(self)
        if state is not None and state["buffered_inputs"] is not None:
            import torch

            path = os.path.join(output_dir, ROLLOUT_BUFFER_NAME.format(self.args.process_index))
            torch.save(state, path + ".tmp")
            os.replace(path + ".tmp", path)
        if self._checkpoint_staging is not None:
            self.accelerator.wait_for_everyone()  # every process's files are in; trainer_state.json comes next

    # ---- atomic checkpoints: write into a staging sibling, rename when complete ---------------------------------

    _checkpoint_staging: tuple[str, str] | None = None
    _checkpoint_owner: str | None = None

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """``Trainer._save_checkpoint`` with every file written into ``_checkpoint-N.tmp-<host>-<pid>`` (module doc).

        ``save_model``, ``_save_optimizer_and_scheduler``, ``_save_scaler`` and ``_save_rng_state`` are pointed at the
        staging folder; the write of ``trainer_state.json`` (the Trainer's last file, main process, after a barrier)
        goes there too and renames the folder to ``checkpoint-N``. Only then do the Trainer's Hub push and
        ``save_total_limit`` rotation run, on the complete folder.
        """
        from transformers.trainer_utils import SaveStrategy

        step = self.state.global_step
        run_dir = self._get_output_dir(trial=trial)
        final = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        staging = staging_folder(run_dir, step, self._staging_owner())
        # Trainer sets best_model_checkpoint when checkpoint-N exists right after save_model; it does not yet
        if (self.state.best_global_step == step and step
                and self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST)):
            self.state.best_model_checkpoint = final
        self._checkpoint_staging = (final, staging)
        state = self.state
        state.save_to_json = self._save_state_and_publish  # instance attribute: only for this save
        try:
            super()._save_checkpoint(model, trial)
        except Exception:
            if self.args.should_save:  # a failed save (full disk, ...) leaves nothing; a kill leaves the stale folder
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            self._checkpoint_staging = None
            state.__dict__.pop("save_to_json", None)

    def _staging_owner(self) -> str:
        """The main process's ``<host>-<pid>``, the same on every process (broadcast once)."""
        if self._checkpoint_owner is None:
            owner = [_owner_tag()]
            if self.accelerator.num_processes > 1:
                from accelerate.utils import broadcast_object_list

                broadcast_object_list(owner, from_process=0)
            self._checkpoint_owner = owner[0]
        return self._checkpoint_owner

    def _staged(self, output_dir: str | None) -> str | None:
        """The staging folder while ``_save_checkpoint`` writes ``output_dir`` = its ``checkpoint-N``; else as is."""
        if self._checkpoint_staging is None or output_dir is None:
            return output_dir
        final, staging = self._checkpoint_staging
        return staging if os.path.abspath(output_dir) == os.path.abspath(final) else output_dir

    def _save_state_and_publish(self, json_path: str) -> None:
        """Write ``trainer_state.json`` into the staging folder, then rename it to ``checkpoint-N`` (main process)."""
        from transformers import TrainerState

        final, staging = self._checkpoint_staging or (None, None)
        if final is None or os.path.abspath(os.path.dirname(json_path)) != os.path.abspath(final):
            TrainerState.save_to_json(self.state, json_path)
            return
        TrainerState.save_to_json(self.state, os.path.join(staging, os.path.basename(json_path)))
        publish_checkpoint(staging, final, self._staging_owner())

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(self._staged(output_dir), _internal_call=_internal_call)
        if self._checkpoint_staging is not None and self.args.save_only_model:
            self.accelerator.wait_for_everyone()  # no optimizer/RNG files follow: every process's files are in

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(self._staged(output_dir))

    def _save_scaler(self, output_dir: str) -> None:
        super()._save_scaler(self._staged(output_dir))

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
