"""Two pushes that fail (a revoked token; the server killed at the commit): each raises HubPushError naming the
local files, which still reload to the trained logits (tests/test_hub_push.py)."""

import torch
from hub_common import ARGS, RESULT, finish, local_tree, probe_outputs
from hub_generic_trainer import build_trainer
from transformers import AutoModelForCausalLM

from trl_ext.hub import HubPushError

trainer, tok = build_trainer(save_strategy="no")
trainer.train()
before_logits, _ = probe_outputs(trainer.model, tok)
RESULT["errors"] = []
for attempt, kwargs in (("auth", {"token": "hf_revoked_token"}), ("killed", {})):
    try:
        trainer.push_to_hub(**kwargs)
    except HubPushError as err:
        RESULT["errors"].append({"attempt": attempt, "message": str(err), "cause": type(err.__cause__).__name__,
                                 "local_files": err.local_files})
    # nothing local is lost: the folder reloads to the same logits after each failed push
    reloaded = AutoModelForCausalLM.from_pretrained(ARGS["output_dir"])
    RESULT[f"{attempt}_local_logits_equal"] = bool(torch.equal(before_logits, probe_outputs(reloaded, tok)[0]))
RESULT["local_files"] = local_tree(ARGS["output_dir"])
finish()
