"""What one process of ``accelerate launch --config_file ... accelerate_world.py OUT`` sees, built the way every
trainer builds it (``TrainingArguments``, ``use_cpu`` when there is no GPU): world size, rank, distributed type and
backend, written to ``OUT/rank<r>.json`` (tests/test_accelerate_configs.py)."""

import json
import os
import sys

import torch
import torch.distributed as dist
from transformers import TrainingArguments

args = TrainingArguments(output_dir=sys.argv[1], use_cpu=not torch.cuda.is_available(), report_to="none")
state = args.distributed_state
info = {"world": args.world_size, "rank": args.process_index, "type": state.distributed_type.name,
        "backend": dist.get_backend() if dist.is_initialized() else None}
with open(os.path.join(sys.argv[1], f"rank{args.process_index}.json"), "w") as f:
    json.dump(info, f)
