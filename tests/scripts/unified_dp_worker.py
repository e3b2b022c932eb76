"""The UnifiedLikelihood runs of tests/test_unified.py's 2-process test: ``python unified_dp_worker.py MODEL OUT
PER_DEVICE GRAD_ACCUM``, alone or under ``torch.distributed.run`` (gloo). One SGD step per config of ``DP_CONFIGS`` on
the 8 mixed rows; each rank dumps its micro-batches (rows, tokens, reference log-probs), cached columns, first log and
update fingerprint to ``OUT/<config>/rank<r>.json``, rank 0 the update itself to ``delta.pt``."""

import json
import os
import sys

import torch
from test_unified import DP_CONFIGS, _dp_args, _dp_dataset

from trl_ext.trainers.unified import UnifiedLikelihoodTrainer

model_path, out_dir, per_device, grad_accum = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for name, kw in DP_CONFIGS.items():
    run_dir = os.path.join(out_dir, name)
    os.makedirs(run_dir, exist_ok=True)
    trainer = UnifiedLikelihoodTrainer(model_path, args=_dp_args(run_dir, per_device, grad_accum, **kw),
                                       train_dataset=_dp_dataset())
    row_of = {tuple(r["prompt_ids"]): i for i, r in enumerate(trainer.train_dataset)}
    cached = {k: list(trainer.train_dataset[k]) for k in ("ref_chosen_logps", "ref_rejected_logps")
              if k in trainer.train_dataset.column_names}
    collate = trainer.data_collator

    def collate_with_row_ids(examples):
        batch = collate(examples)
        batch["row_ids"] = torch.tensor([row_of[tuple(e["prompt_ids"])] for e in examples])
        return batch

    trainer.data_collator = collate_with_row_ids
    micro_batches = []
    compute_loss = trainer.compute_loss

    def spy(model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = inputs["row_ids"].tolist()
        pairs = [rows[i] for i in inputs["pair_rows"].tolist()]
        if "ref_chosen_logps" in inputs:
            ref = torch.stack([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]], 1)
        elif pairs:
            ref = torch.stack(trainer._pair_reference_logps(inputs).float().chunk(2), 1)
        else:
            ref = torch.zeros(0, 2)
        loss = compute_loss(model, inputs, return_outputs, num_items_in_batch)
        micro_batches.append({"rows": rows, "tokens": int(inputs["completion_mask"].sum()),
                              "ref": {str(r): v for r, v in zip(pairs, ref.tolist())}})
        return loss

    trainer.compute_loss = spy
    # policy != reference, so that the DPO margins are not 0 (same perturbation on every rank and run)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    delta = {n: (p.detach() - before[n]).cpu() for n, p in trainer.model.named_parameters()}
    rank = trainer.accelerator.process_index
    if rank == 0:
        torch.save(delta, os.path.join(run_dir, "delta.pt"))
    with open(os.path.join(run_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world": trainer.accelerator.num_processes, "micro_batches": micro_batches, "cached": cached,
                   "logs": trainer.state.log_history[0],
                   "delta_fingerprint": {n: [d.sum().item(), d.abs().sum().item()] for n, d in delta.items()}}, f)
