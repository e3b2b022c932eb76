"""The model inside its training wrappers: the one place trl_ext unwraps DDP / DeepSpeed / FSDP and PEFT."""

from __future__ import annotations

from typing import Any


def unwrap_model(model: Any) -> Any:
    """The ``transformers`` model inside ``model``'s wrappers.

    Distributed containers (DDP, DataParallel, DeepSpeed, FSDP) are removed with accelerate's
    ``extract_model_from_parallel`` (what ``Accelerator.unwrap_model`` calls; a compiled model stays compiled), then a
    PEFT wrapper with ``get_base_model()`` (the LoRA layers stay in place). Anything else is returned as it is.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> unwrap_model(torch.nn.DataParallel(layer)) is layer, unwrap_model(None)
        (True, None)
    """
    import torch
    from accelerate.utils import extract_model_from_parallel

    if isinstance(model, torch.nn.Module):
        model = extract_model_from_parallel(model)
    if hasattr(model, "get_base_model"):  # PEFT
        model = model.get_base_model()
    return model
