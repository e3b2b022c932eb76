"""What every Hub script (``tests/scripts/hub_*.py``) shares. The ``run_hub_script`` fixture (tests/hub_fixtures.py)
runs ``python tests/scripts/hub_<name>.py ARGS_FILE`` against the loopback Hub; a script reads :data:`ARGS` (the
test's arguments plus ``result_file``), fills :data:`RESULT` and calls :func:`finish`, which writes it for the test.

Helpers for scripts that train: :func:`publish_base_model` (the tiny model as ``ARGS["base_repo"]`` on the loopback
Hub), :func:`probe_outputs` (logits and a greedy continuation of :data:`PROBE`) and :func:`local_tree`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ARGS: dict = json.loads(Path(sys.argv[1]).read_text())
RESULT: dict = {}
PROBE = "Question: 2 + 3 = ? Answer: 5"


def finish() -> None:
    with open(ARGS["result_file"], "w") as f:
        json.dump(RESULT, f)


def publish_base_model(repo_id: str | None = None, folder: str | None = None) -> None:
    """Put the tiny model on the loopback Hub so that the trained model's base is a real Hub id."""
    from huggingface_hub import HfApi

    repo_id = repo_id or ARGS["base_repo"]
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder or ARGS["model_path"], commit_message="tiny base")


def probe_outputs(model, tok):
    import torch

    model.eval()
    enc = tok([PROBE], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits.float()
        gen = model.generate(**enc, max_new_tokens=5, do_sample=False)
    return logits, gen[0, enc["input_ids"].shape[1]:].tolist()


def local_tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and ".cache" not in p.parts)
