"""Pushing trained models to the Hugging Face Hub: a clear error when the upload fails after the local save.

``transformers.Trainer.push_to_hub`` already does the right thing for what is pushed: it saves the final model
(or PEFT adapter), tokenizer, generation config and ``training_args.bin`` into ``output_dir``, writes the card
(``create_model_card``, which trl_ext's :class:`~trl_ext.model_card.ModelCardMixin` replaces: ``README.md`` +
``training_curves.png``), then uploads ``output_dir`` **without** ``checkpoint-*`` folders (optimizer and
scheduler states live only there) and without ``_*`` files. ``hub_strategy="checkpoint"`` or ``"all_checkpoints"``
is the explicit opt-in to push checkpoints (and their optimizer states) too. :class:`HubPushMixin` reuses all of
that and only changes failures: a network or authentication error during the upload surfaces as one
:class:`HubPushError` that says the local save is complete and how to retry, and a repository that cannot be
created when the trainer is built fails there, before any training step.

Example:
    >>> from transformers import Trainer
    >>> from trl_ext.hub import HubPushMixin
    >>> from trl_ext.model_card import ModelCardMixin
    >>> class MyTrainer(HubPushMixin, ModelCardMixin, Trainer):
    ...     pass
    >>> # trainer = MyTrainer(model, TrainingArguments("out", push_to_hub=True, hub_model_id="me/model"), ...)
    >>> # trainer.train(); trainer.push_to_hub()  # raises HubPushError if the upload fails; out/ is complete
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class HubPushError(RuntimeError):
    """The upload to the Hub failed; the local save in ``output_dir`` completed before the failure.

    Attributes: ``repo_id``, ``output_dir``, ``endpoint``, ``local_files`` (what is saved locally) and
    ``__cause__`` (the original ``huggingface_hub`` / ``httpx`` error).
    """

    def __init__(self, message: str, *, repo_id: str | None, output_dir: str, endpoint: str,
                 local_files: list[str] | None = None):
        super().__init__(message)
        self.repo_id, self.output_dir, self.endpoint = repo_id, output_dir, endpoint
        self.local_files = list(local_files or [])


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _describe(exc: BaseException) -> str:
    """One line naming the cause: HTTP status (401/403 → credentials) or the transport error."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    first_line = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else ""
    if status in (401, 403):
        return (f"authentication failed (HTTP {status}: {first_line}); check that HF_TOKEN / `hub_token` is set "
                "and has write access to this repository")
    if status is not None:
        return f"the Hub answered HTTP {status}: {first_line}"
    return f"{type(exc).__name__}: {first_line or 'connection lost'} (is HF_ENDPOINT reachable?)"


class HubPushMixin:
    """Mixin for a ``transformers.Trainer`` subclass (put it first in the bases): clear errors for Hub failures.

    - ``_save`` also writes ``generation_config.json`` next to a PEFT adapter, so adapter repos carry it too.
    - ``push_to_hub`` (also called by ``save_model`` when ``args.push_to_hub``) raises :class:`HubPushError`
      when the upload fails **after** the model, tokenizer, card and plot are saved in ``output_dir``; errors
      during the local save itself are raised unchanged.
    - ``init_hf_repo`` (called by ``Trainer.__init__`` when ``args.push_to_hub``) raises :class:`HubPushError`
      when the repository cannot be created, so a wrong endpoint or token fails before training.
    """

    _hub_local_save_complete: bool = False

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """``Trainer._save``, plus ``generation_config.json`` next to a PEFT adapter (peft saves only the adapter)."""
        super()._save(output_dir, state_dict=state_dict)  # type: ignore[misc]
        if not self.args.should_save:  # type: ignore[attr-defined]
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir  # type: ignore[attr-defined]
        model = self.accelerator.unwrap_model(self.model)  # type: ignore[attr-defined]
        generation_config = getattr(model, "generation_config", None)
        if (hasattr(model, "peft_config") and generation_config is not None
                and not Path(output_dir, "generation_config.json").exists()):
            generation_config.save_pretrained(output_dir)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        try:
            return super().init_hf_repo(token=token, private=private)  # type: ignore[misc]
        except Exception as exc:  # network / auth errors of create_repo
            repo_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name  # type: ignore[attr-defined]
            raise HubPushError(
                f"push_to_hub=True but the Hub repository '{repo_id}' cannot be created at {_endpoint()}: "
                f"{_describe(exc)}. Nothing was trained yet; fix the endpoint/token or set push_to_hub=False.",
                repo_id=repo_id, output_dir=str(self.args.output_dir), endpoint=_endpoint(),  # type: ignore[attr-defined]
            ) from exc

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        super().create_model_card(*args, **kwargs)  # type: ignore[misc]
        # Trainer.push_to_hub saves the model, then writes the card, then uploads: from here on, a failure is
        # an upload failure and everything is on disk.
        self._hub_local_save_complete = True

    def push_to_hub(self, *args: Any, **kwargs: Any):
        self._hub_local_save_complete = False
        try:
            return super().push_to_hub(*args, **kwargs)  # type: ignore[misc]
        except Exception as exc:
            if not self._hub_local_save_complete:
                raise
            output_dir = str(self.args.output_dir)  # type: ignore[attr-defined]
            repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id  # type: ignore[attr-defined]
            local = sorted(
                str(p.relative_to(output_dir)) for p in Path(output_dir).rglob("*")
                if p.is_file() and not p.relative_to(output_dir).parts[0].startswith(("checkpoint-", "_"))
            )
            raise HubPushError(
                f"Pushing '{output_dir}' to {_endpoint()}/{repo_id} failed: {_describe(exc)}. The local save is "
                f"complete ({len(local)} files in {output_dir}: {', '.join(local[:12])}"
                f"{', ...' if len(local) > 12 else ''}); nothing local was lost. Retry with `trainer.push_to_hub()` "
                f"or `hf upload {repo_id} {output_dir} --exclude 'checkpoint-*'`.",
                repo_id=repo_id, output_dir=output_dir, endpoint=_endpoint(), local_files=local,
            ) from exc


__all__ = ["HubPushError", "HubPushMixin"]
