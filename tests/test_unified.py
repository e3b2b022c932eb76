"""UnifiedLikelihoodTrainer: oracles against stock TRL, one forward per mixed batch, per-kind terms, gradient
accumulation across kinds, reference handling (none / separate / PEFT adapters disabled), QLoRA, bad input."""

import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from trl_ext.core.likelihood import (
    dpo_sigmoid_loss,
    reduce_loss,
    rft_loss,
    rwr_loss,
    sequence_logps,
    sft_loss,
)
from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer
from trl_ext.trainers.unified_collator import infer_row_kind, mix_datasets

from helpers import nf4_config, run_script

PROMPTS = ["What is 2 + 2?", "Add 5 and 1.", "Compute 3 times 3.", "What is 10 - 4?", "Halve 8.", "1 + 9 ="]


def _demos(n=4):
    return Dataset.from_dict({
        "prompt": PROMPTS[:n],
        "completion": [" 4", " The sum is 6, done.", " 9", " Six. Because ten minus four is six."][:n],
    })


def _pairs(n=4):
    return Dataset.from_dict({
        "prompt": PROMPTS[:n],
        "chosen": [" 4", " 6", " It is 9.", " 6 exactly"][:n],
        "rejected": [" 5 probably", " 7", " 8", " 5"][:n],
    })


def _graded():
    return Dataset.from_dict({
        "prompt": PROMPTS[:3],
        "completion": [" 4", " 7 I think", " 9"],
        "reward": [1.0, 0.0, 0.5],
        "label": [True, False, None],
    })


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), report_to="none", bf16=False, per_device_train_batch_size=4,
                max_steps=1, save_strategy="no", logging_steps=1, gradient_checkpointing=False, seed=0,
                dataloader_pin_memory=False)
    base.update(kw)
    return base


def _batch(trainer, n):
    rows = [trainer.train_dataset[i] for i in range(n)]
    return trainer._prepare_inputs(trainer.data_collator(rows))


def _loss_and_grads(trainer, batch):
    model = trainer.model
    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_grads_close(g1, g2, atol=1e-5):
    assert g1.keys() == g2.keys() and len(g1) > 0
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=atol, rtol=0.0, msg=lambda m: f"{name}: {m}")


# ---- config ------------------------------------------------------------------------------------------------------


def test_config_rejects_bad_fields(tmp_path):
    with pytest.raises(ValueError, match="loss_type: unknown loss type"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, loss_type=["sft", "kto"])
    with pytest.raises(ValueError, match="nll_normalization"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, nll_normalization="tokens")
    with pytest.raises(ValueError, match=r"ld_alpha must lie in \[0, 1\]"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, ld_alpha=1.5)
    with pytest.raises(ValueError, match=r"f_divergence_type='forward_kl' is defined only .* \['nca_pair'\] have none"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, loss_type=["sigmoid", "nca_pair"],
                                f_divergence_type="forward_kl")
    with pytest.raises(NotImplementedError, match=r"use_weighting \(WPO\) is not defined for \['aot'\]"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, loss_type=["aot"], use_weighting=True)
    with pytest.raises(ValueError, match="label_smoothing must lie in \\(0, 1\\) for 'exo_pair'"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, loss_type=["exo_pair"])
    with pytest.raises(ValueError, match="loss_weights has 1 value"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, loss_type=["sft", "sigmoid"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="label_smoothing"):
        UnifiedLikelihoodConfig(str(tmp_path), bf16=False, loss_type=["robust"], label_smoothing=0.5)
    args = UnifiedLikelihoodConfig(str(tmp_path), bf16=False, loss_type="simpo")
    assert args.loss_type == ["simpo"] and not args.needs_reference


def test_kind_inference_and_mixing():
    mixed = mix_datasets([_demos(2), _pairs(2), _graded()])
    kinds = [infer_row_kind(r) for r in mixed]
    assert kinds == ["demonstration"] * 2 + ["preference"] * 2 + ["graded"] * 3
    assert infer_row_kind({"prompt": "x", "completion": "y", "chosen": "a", "rejected": "b"}) is None
    with pytest.raises(ValueError, match="column 'prompt'"):
        mix_datasets([_demos(1), Dataset.from_dict({"prompt": [[{"role": "user", "content": "hi"}]],
                                                     "completion": [[{"role": "assistant", "content": "yo"}]]})])


# ---- oracles against stock TRL -----------------------------------------------------------------------------------


#: One entry per DPOTrainer loss type of TRL 1.16 and per option, each with the config it needs.
ORACLE_CASES = {
    "sigmoid": (["sigmoid"], {}),
    "hinge": (["hinge"], {}),
    "ipo": (["ipo"], {}),
    "exo_pair": (["exo_pair"], {"label_smoothing": 1e-3}),
    "nca_pair": (["nca_pair"], {}),
    "robust": (["robust"], {"label_smoothing": 0.2}),
    "bco_pair": (["bco_pair"], {}),
    "sppo_hard": (["sppo_hard"], {}),
    "aot": (["aot"], {"label_smoothing": 0.1}),
    "aot_unpaired": (["aot_unpaired"], {}),
    "apo_zero": (["apo_zero"], {}),
    "apo_down": (["apo_down"], {}),
    "discopop": (["discopop"], {"discopop_tau": 0.5}),
    "sft": (["sft"], {}),
    "sigmoid_norm": (["sigmoid_norm"], {}),
    "sigmoid+sft": (["sigmoid", "sft"], {"loss_weights": [1.0, 0.5]}),
    "mpo": (["sigmoid", "bco_pair", "sft"], {"loss_weights": [0.8, 0.2, 1.0]}),
    "use_weighting": (["sigmoid", "ipo"], {"use_weighting": True, "loss_weights": [1.0, 0.3]}),
    "ld_alpha": (["sigmoid", "aot", "sft"], {"ld_alpha": 0.3}),
    "forward_kl": (["sigmoid", "hinge", "ipo"], {"f_divergence_type": "forward_kl"}),
    "js_divergence": (["robust", "discopop", "sigmoid_norm"], {"f_divergence_type": "js_divergence",
                                                                "label_smoothing": 0.1}),
    "alpha_divergence": (["exo_pair", "sft"], {"f_divergence_type": "alpha_divergence",
                                               "f_alpha_divergence_coef": 0.3, "label_smoothing": 1e-3}),
    "wpo+ld+fdiv": (["sigmoid"], {"use_weighting": True, "ld_alpha": 0.5, "f_divergence_type": "forward_kl"}),
}
#: (format, precompute_ref_log_probs, padding_free); the first is the default run of every case.
ORACLE_VARIANTS = [(fmt, pre, pf) for fmt in ("standard", "conversational") for pre in (False, True)
                   for pf in (False, True)]
#: Cases whose every variant runs in the default suite (the rest of the cross product is marked slow).
ORACLE_ALL_VARIANTS_BY_DEFAULT = ("sigmoid+sft", "wpo+ld+fdiv")


def _oracle_params():
    for name, (loss_type, extra) in ORACLE_CASES.items():
        for variant in ORACLE_VARIANTS:
            fast = variant == ORACLE_VARIANTS[0] or name in ORACLE_ALL_VARIANTS_BY_DEFAULT
            fmt, pre, pf = variant
            yield pytest.param(loss_type, extra, fmt, pre, pf, marks=() if fast else pytest.mark.slow,
                               id=f"{name}-{fmt}-{'precompute' if pre else 'live'}-{'padfree' if pf else 'padded'}")


def _user(t):
    return [{"role": "user", "content": t}]


def _bot(t):
    return [{"role": "assistant", "content": t}]


def _conversational_pairs(n=4):
    p = _pairs(n)
    return Dataset.from_dict({"prompt": [_user(x) for x in p["prompt"]],
                              "chosen": [_bot(x.strip()) for x in p["chosen"]],
                              "rejected": [_bot(x.strip()) for x in p["rejected"]]})


def _perturb(*trainers, seed=1):
    """Perturb the policies identically so that policy ≠ reference and the margins are not 0."""
    for trainer in trainers:
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.add_(0.05 * torch.randn_like(p))


#: Metrics DPOTrainer logs that ours must log with the same value on pair data.
DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
               "logps/rejected", "logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy")


@pytest.mark.parametrize("loss_type,extra,fmt,precompute,padding_free", list(_oracle_params()))
def test_every_dpo_loss_and_option_equals_dpotrainer(tiny_model_path, tmp_path, loss_type, extra, fmt, precompute,
                                                     padding_free):
    """Stock DPOTrainer and ours, same config (``padding_free`` too: DPOTrainer 1.16 falls back to padding, ours
    packs the sequences), same pairs: the loss and every gradient within 1e-5, and DPOTrainer's metrics."""
    pairs = _pairs() if fmt == "standard" else _conversational_pairs()
    kw = _args(tmp_path, beta=0.3, max_length=64, precompute_ref_log_probs=precompute, padding_free=padding_free,
               **extra)
    dpo = DPOTrainer(tiny_model_path, args=DPOConfig(loss_type=loss_type, **kw), train_dataset=pairs)
    ours = UnifiedLikelihoodTrainer(tiny_model_path, args=UnifiedLikelihoodConfig(loss_type=loss_type, **kw),
                                    train_dataset=pairs)
    assert ours.padding_free is padding_free and not dpo.padding_free
    if padding_free:
        # packed attention sums in another order than padded attention: in float32 that rounding (≈ 1e-7 relative)
        # exceeds 1e-5 absolute on the largest gradients of some losses (sppo_hard, forward_kl); in float64 the
        # layout is the only difference left
        for trainer in (dpo, ours):
            for module in (trainer.model, trainer.ref_model):
                if module is not None:
                    module.double()
    _perturb(dpo, ours)
    b_dpo, b_ours = _batch(dpo, 4), _batch(ours, 4)
    torch.testing.assert_close(b_dpo["input_ids"], b_ours["input_ids"])  # same tokenization, same layout
    if precompute and ours._needs_reference:
        torch.testing.assert_close(b_ours["ref_chosen_logps"], b_dpo["ref_chosen_logps"], atol=1e-5, rtol=0.0)
    packed_shapes = []
    hook = ours.model.model.register_forward_hook(lambda m, a, k, out: packed_shapes.append(
        out.last_hidden_state.shape[:2]), with_kwargs=True)
    l_dpo, g_dpo = _loss_and_grads(dpo, b_dpo)
    l_ours, g_ours = _loss_and_grads(ours, b_ours)
    hook.remove()
    n_real = int(b_ours["attention_mask"].sum())
    assert packed_shapes[0] == ((1, n_real) if padding_free else tuple(b_ours["input_ids"].shape))
    assert abs(l_dpo.item() - l_ours.item()) < 1e-5, (l_dpo.item(), l_ours.item())
    _assert_grads_close(g_dpo, g_ours)
    assert max(g.abs().max().item() for g in g_ours.values()) > 1e-4  # the loss trains (e.g. `sft` alone)
    m_dpo, m_ours = dpo._metrics["train"], ours._metrics["train"]
    for key in DPO_METRICS:
        if key.startswith("rewards/") and not ours._needs_reference:
            continue  # `sft` alone: DPOTrainer loads a reference just to log rewards; ours needs none
        assert m_ours[key][-1] == pytest.approx(m_dpo[key][-1], abs=1e-5), key


def test_sigmoid_sft_dpo_code_gives_dpotrainer_loss_and_update(tiny_model_path, tmp_path):
    """Working DPO code with only the import swapped: ``loss_type=["sigmoid", "sft"]`` on pairs gives DPOTrainer's
    logged loss and the same parameter update (one SGD step, lr 1: the update is the gradient)."""
    pairs = _pairs()
    kw = _args(tmp_path, beta=0.3, max_length=64, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant",
               max_grad_norm=1e9, loss_type=["sigmoid", "sft"])
    deltas, logs = [], []
    for trainer_cls, config_cls in ((DPOTrainer, DPOConfig), (UnifiedLikelihoodTrainer, UnifiedLikelihoodConfig)):
        trainer = trainer_cls(tiny_model_path, args=config_cls(**kw), train_dataset=pairs)
        _perturb(trainer)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        deltas.append({n: p.detach() - before[n] for n, p in trainer.model.named_parameters()})
        logs.append(trainer.state.log_history[0])
    assert max(d.abs().max().item() for d in deltas[0].values()) > 1e-3
    for name, d in deltas[0].items():
        torch.testing.assert_close(deltas[1][name], d, atol=1e-5, rtol=0.0, msg=lambda m: f"{name}: {m}")
    assert logs[1]["loss"] == pytest.approx(logs[0]["loss"], abs=1e-5)
    assert logs[1]["loss/sft"] > 0  # the NLL of the chosen completions, not 0
    for key in ("rewards/margins", "logps/chosen", "mean_token_accuracy", "entropy"):
        assert logs[1][key] == pytest.approx(logs[0][key], abs=1e-5), key


def test_padding_free_mixed_batch_equals_padded(tiny_model_path, tmp_path):
    """Demonstrations, pairs and graded rows packed into one row give the padded run's loss, gradients and terms."""
    data = [_demos(2), _pairs(2), _graded()]
    kw = _args(tmp_path, beta=0.2, per_device_train_batch_size=7, use_weighting=True, ld_alpha=0.5)
    runs = []
    for padding_free in (False, True):
        args = UnifiedLikelihoodConfig(loss_type=["sft", "sigmoid", "rwr", "rft"], padding_free=padding_free, **kw)
        trainer = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=data)
        _perturb(trainer, seed=3)
        runs.append((trainer, *_loss_and_grads(trainer, _batch(trainer, 7))))
    (padded, l_pad, g_pad), (packed, l_packed, g_packed) = runs
    assert abs(l_pad.item() - l_packed.item()) < 1e-5
    _assert_grads_close(g_pad, g_packed)
    for key in ("loss/sft", "loss/sigmoid", "loss/rwr", "loss/rft", "logps/graded", "mean_token_accuracy"):
        assert packed._metrics["train"][key][-1] == pytest.approx(padded._metrics["train"][key][-1], abs=1e-5), key


def test_registering_a_loss_is_one_entry(tiny_model_path, tmp_path, monkeypatch):
    """A new loss is one :data:`LOSSES` entry: the config accepts it, the trainer applies it to its rows, normalises
    it by its denominator and logs it, with no other change."""
    from trl_ext.core.likelihood import LOSSES, LossSpec, RowKind

    spec = LossSpec("demo_sum", frozenset({RowKind.DEMONSTRATION}), False, lambda b: -b.demo_logps,
                    lambda b: torch.full_like(b.demo_tokens, 2.0), "test: half the summed NLL per demonstration")
    monkeypatch.setitem(LOSSES, "demo_sum", spec)
    args = UnifiedLikelihoodConfig(loss_type=["demo_sum"], **_args(tmp_path))
    with pytest.warns(UserWarning, match="2 preference row"):  # the registry's kinds: pairs unused by this loss
        trainer = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=[_demos(2), _pairs(2)])
    assert trainer.ref_model is None
    batch = _batch(trainer, 4)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    shift = batch["completion_mask"][:, 1:]
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    demo = batch["row_kind"].tolist().count(0)
    demo_rows = slice(2 * batch["pair_rows"].numel(), 2 * batch["pair_rows"].numel() + demo)
    expected = -(lp[demo_rows] * shift[demo_rows]).sum() / (2.0 * demo)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert trainer._metrics["train"]["loss/demo_sum"][-1] == pytest.approx(expected.item(), rel=1e-5)


def test_precomputed_reference_equals_on_the_fly(tiny_model_path, tmp_path):
    pairs = _pairs()
    ref_free = UnifiedLikelihoodTrainer(
        tiny_model_path, args=UnifiedLikelihoodConfig(loss_type=["sigmoid"], **_args(tmp_path, beta=0.3)),
        train_dataset=pairs,
    )
    pre = UnifiedLikelihoodTrainer(
        tiny_model_path,
        args=UnifiedLikelihoodConfig(loss_type=["sigmoid"], precompute_ref_log_probs=True, **_args(tmp_path, beta=0.3)),
        train_dataset=pairs,
    )
    assert pre.ref_model is None and ref_free.ref_model is not None
    assert "ref_chosen_logps" in pre.train_dataset.column_names
    b = _batch(pre, 4)
    ref_c, ref_r = ref_free._pair_reference_logps(_batch(ref_free, 4)).chunk(2)
    torch.testing.assert_close(b["ref_chosen_logps"], ref_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["ref_rejected_logps"], ref_r, atol=1e-5, rtol=1e-5)


def test_reference_cache_keyed_by_model_and_data(tiny_model_path, tmp_path):
    """Precomputed reference log-probs are cached next to a disk-backed dataset under a key of (data fingerprint,
    model hash): the same model and data reuse the cache without a forward; another model gets its own."""
    from datasets import load_from_disk

    from trl_ext.models import save_tiny_model

    _pairs().save_to_disk(str(tmp_path / "pairs"))
    data = load_from_disk(str(tmp_path / "pairs"))
    args = UnifiedLikelihoodConfig(loss_type=["sigmoid"], precompute_ref_log_probs=True, **_args(tmp_path))

    def cache_files():
        return sorted(p.name for p in (tmp_path / "pairs").glob("cache-*.arrow"))

    first = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=data)
    files = cache_files()
    import transformers.models.llama.modeling_llama as llama  # count every Llama forward of the next trainer

    n_forward = []
    original = llama.LlamaModel.forward
    llama.LlamaModel.forward = lambda self, *a, **k: (n_forward.append(1), original(self, *a, **k))[1]
    try:
        second = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=data)
    finally:
        llama.LlamaModel.forward = original
    assert n_forward == [] and cache_files() == files  # reused: no reference forward
    torch.testing.assert_close(torch.tensor(second.train_dataset["ref_chosen_logps"]),
                               torch.tensor(first.train_dataset["ref_chosen_logps"]))
    other = str(save_tiny_model(tmp_path / "other", seed=1))
    third = UnifiedLikelihoodTrainer(other, args=args, train_dataset=data)
    assert len(cache_files()) > len(files)  # a different model → a different key (and values)
    assert third.train_dataset["ref_chosen_logps"] != first.train_dataset["ref_chosen_logps"]


def test_sft_on_demonstrations_equals_sfttrainer(tiny_model_path, tmp_path):
    demos = _demos()
    kw = _args(tmp_path, max_length=64)
    sft = SFTTrainer(tiny_model_path, args=SFTConfig(completion_only_loss=True, **kw), train_dataset=demos)
    ours = UnifiedLikelihoodTrainer(tiny_model_path, args=UnifiedLikelihoodConfig(loss_type=["sft"], **kw),
                                    train_dataset=demos)
    assert ours.ref_model is None  # sft needs no reference
    b_sft, b_ours = _batch(sft, 4), _batch(ours, 4)
    l_sft, g_sft = _loss_and_grads(sft, b_sft)
    l_ours, g_ours = _loss_and_grads(ours, b_ours)
    assert abs(l_sft.item() - l_ours.item()) < 1e-5, (l_sft.item(), l_ours.item())
    _assert_grads_close(g_sft, g_ours)


# ---- one forward, per-kind terms ---------------------------------------------------------------------------------


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_mixed_batch_one_forward_and_per_kind_terms(tiny_model_path, tmp_path, tokenizer):
    data = [_demos(2), _pairs(2), _graded()]  # 2 demos, 2 pairs, 3 graded rows = 9 sequences
    args = UnifiedLikelihoodConfig(loss_type=["sft", "sigmoid", "rwr", "rft"], loss_weights=[1.0, 2.0, 0.5, 0.25],
                                   rwr_temperature=2.0, **_args(tmp_path, beta=0.2, per_device_train_batch_size=7))
    trainer = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=data)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _batch(trainer, 7)
    assert batch["input_ids"].shape[0] == 9
    policy_calls, h1 = _count_calls(trainer.model.model)
    ref_calls, h2 = _count_calls(trainer.ref_model.model)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    h1.remove()
    h2.remove()
    assert len(policy_calls) == 1  # every sequence of every kind in one policy forward
    assert len(ref_calls) == 1  # the reference only sees the pair sequences
    # independent computation: one forward per row, the core bank, per-kind normalisation
    def row_logps(model, row, which="completion_ids"):
        ids = torch.tensor([row["prompt_ids"] + row[which]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        return lp[len(row["prompt_ids"]) - 1:].sum().item(), len(row[which])
    rows = [trainer.train_dataset[i] for i in range(7)]
    demo = [row_logps(trainer.model, r) for r in rows if r["row_kind"] == 0]
    pol_c = [row_logps(trainer.model, r) for r in rows if r["row_kind"] == 1]
    pol_r = [row_logps(trainer.model, r, "rejected_ids") for r in rows if r["row_kind"] == 1]
    ref_c = [row_logps(trainer.ref_model, r) for r in rows if r["row_kind"] == 1]
    ref_r = [row_logps(trainer.ref_model, r, "rejected_ids") for r in rows if r["row_kind"] == 1]
    graded = [(row_logps(trainer.model, r), r["row_reward"], r["row_label"]) for r in rows if r["row_kind"] == 2]
    t = lambda xs: torch.tensor(xs, dtype=torch.float32)  # noqa: E731
    # `sft`: one token mean over the demonstrations and the chosen completions of the pairs (DPOTrainer's `sft`)
    sft = reduce_loss(*sft_loss(t([s for s, _ in demo + pol_c]), t([n for _, n in demo + pol_c])))
    nll_demo = reduce_loss(*sft_loss(t([s for s, _ in demo]), t([n for _, n in demo])))
    dpo = dpo_sigmoid_loss(t([s for s, _ in pol_c]), t([s for s, _ in pol_r]), t([s for s, _ in ref_c]),
                           t([s for s, _ in ref_r]), 0.2)[0].mean()
    gS, gN = t([g[0][0] for g in graded]), t([g[0][1] for g in graded])
    rewards = t([1.0, 0.0, 0.5])  # reward column
    rwr = reduce_loss(*rwr_loss(gS, gN, rewards=rewards, temperature=2.0))
    rft = reduce_loss(*rft_loss(gS, gN, torch.tensor([True, False, True])))  # label, label, reward 0.5 ≥ 0.5
    m = trainer._metrics["train"]
    for key, value in {"sft": sft, "sigmoid": dpo, "rwr": rwr, "rft": rft}.items():
        assert m[f"loss/{key}"][-1] == pytest.approx(value.item(), rel=1e-4), key
    expected = sft + 2.0 * dpo + 0.5 * rwr + 0.25 * rft
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert m["nll/demonstration"][-1] == pytest.approx(nll_demo.item(), rel=1e-4)
    assert m["rows/graded"][-1] == 3 and m["rows/preference"][-1] == 2


def test_gradient_accumulation_normalised_across_kinds(tiny_model_path, tmp_path):
    """One optimizer step on the same 4 mixed rows: batch 4 × GA 1 and batch 2 × GA 2 give the same update, and the
    same logged metrics (pooled over the step, not averaged over micro-batches)."""
    data = [_demos(2), _pairs(1), _graded().select([0])]
    params, logs = {}, {}
    for bs, ga in [(4, 1), (2, 2), (1, 4)]:
        args = UnifiedLikelihoodConfig(
            loss_type=["sft", "sigmoid", "rft"],
            **_args(tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, optim="sgd",
                    learning_rate=1.0, max_grad_norm=1e9, lr_scheduler_type="constant", beta=0.5),
        )
        trainer = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=data)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        params[(bs, ga)] = {n: p.detach() - before[n] for n, p in trainer.model.named_parameters()}
        logs[(bs, ga)] = trainer.state.log_history[0]
    ref = params[(4, 1)]
    assert max(d.abs().max().item() for d in ref.values()) > 1e-3
    for key in [(2, 2), (1, 4)]:
        for n in ref:
            torch.testing.assert_close(params[key][n], ref[n], atol=2e-6, rtol=1e-4)
        # every term / kind metric is the step's value (1 × 4: each micro-batch holds one row of one kind)
        for metric, value in logs[(4, 1)].items():
            got = logs[key][metric] * (key[1] if metric.startswith("rows/") else 1)  # rows per micro-batch
            assert got == pytest.approx(value, abs=1e-5), (key, metric)
    first = logs[(4, 1)]
    assert first["loss"] == pytest.approx(first["loss/sft"] + first["loss/sigmoid"] + first["loss/rft"], abs=1e-5)


# ---- references ------------------------------------------------------------------------------------------------


def test_reference_free_losses_load_no_reference(tiny_model_path, tmp_path):
    data = [_demos(2), _pairs(2), _graded()]
    args = UnifiedLikelihoodConfig(loss_type=["sft", "simpo", "orpo", "rwr", "rft"], **_args(tmp_path, max_steps=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every kind is used: no warning
        trainer = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=data)
    assert trainer.ref_model is None
    assert "ref_chosen_logps" not in trainer.train_dataset.column_names
    assert args.precompute_ref_log_probs is False  # the user's config is left as given
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed  # full fine-tuning updates the weights
    logged = trainer.state.log_history[0]
    assert {"loss/simpo", "loss/orpo"} & logged.keys() or {"loss/sft", "loss/rft"} & logged.keys()


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def test_lora_cached_reference_is_base_model_not_policy(tiny_model_path, tmp_path):
    """Regression for TRL PR #6527: under PEFT, reference log-probs cached in the dataset are computed with the
    adapters disabled (the base model), never by the policy itself, even after the adapter has been trained."""
    pairs = _pairs()
    args = UnifiedLikelihoodConfig(
        loss_type=["sigmoid", "sft"], precompute_ref_log_probs=True,
        **_args(tmp_path, max_steps=6, learning_rate=5e-2, per_device_train_batch_size=2),
    )
    trainer = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=pairs, peft_config=_lora_config())
    assert trainer.ref_model is None
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    trainer.train()
    model = trainer.model
    # frozen base, trained adapter
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if "lora_" not in n)
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    # a fresh precompute after training (what `evaluate(eval_dataset=…)` runs)
    fresh = trainer._prepare_dataset(_pairs(), trainer.processing_class, args, "eval")
    cached = trainer._precompute_ref_logps(fresh, "eval", 4)
    batch = trainer._prepare_inputs(trainer.data_collator([cached[i] for i in range(4)]))
    model.eval()
    shift = batch["completion_mask"][:, 1:]
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        policy = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      labels=labels, fused_lm_head=True).log_probs, shift)[0]
        with model.disable_adapter():
            base = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        labels=labels, fused_lm_head=True).log_probs, shift)[0]
    cached_all = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    torch.testing.assert_close(cached_all, base, atol=1e-4, rtol=1e-5)
    assert (cached_all - policy).abs().max() > 1e-2  # the trained policy is not its own reference
    # the cache made at init (untrained, zero-init adapter) is also the base model's
    init_batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    torch.testing.assert_close(torch.cat([init_batch["ref_chosen_logps"], init_batch["ref_rejected_logps"]]), base,
                               atol=1e-4, rtol=1e-5)


def test_qlora_mixed_run(tiny_model_path, tmp_path):
    bnb = nf4_config()
    args = UnifiedLikelihoodConfig(
        loss_type=["sft", "sigmoid"], **_args(tmp_path, max_steps=3, learning_rate=1e-2, per_device_train_batch_size=4,
                                              model_init_kwargs={"device_map": "cpu"}),
    )
    trainer = UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=[_demos(), _pairs()],
                                       quantization_config=bnb, peft_config=_lora_config())
    assert getattr(trainer.model, "is_loaded_in_4bit", False)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(p, lora_before[n]) for n, p in trainer.model.named_parameters() if "lora_B" in n)


# ---- bad input -------------------------------------------------------------------------------------------------


def _make(tiny_model_path, tmp_path, data, **kw):
    args = UnifiedLikelihoodConfig(**{**dict(loss_type=["sft", "sigmoid"]), **kw}, **_args(tmp_path))
    return UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=data)


def test_bad_rows_raise_before_training(tiny_model_path, tmp_path):
    bad = mix_datasets([_demos(2), Dataset.from_dict({"prompt": ["q"], "answer": ["1"]})])
    with pytest.raises(ValueError, match=r"row 2 of the train dataset matches no kind; its columns with a value are "
                                         r"\['answer', 'prompt'\]"):
        _make(tiny_model_path, tmp_path, bad)
    same = Dataset.from_dict({"prompt": ["a", "b"], "chosen": [" x", " y"], "rejected": [" z", " y"]})
    with pytest.raises(ValueError, match="row 1 of the train dataset: 'chosen' is identical to 'rejected'"):
        _make(tiny_model_path, tmp_path, same)
    nan = Dataset.from_dict({"prompt": ["a", "b"], "completion": [" x", " y"], "reward": [1.0, float("nan")]})
    with pytest.raises(ValueError, match="row 1 of the train dataset: column 'reward' is nan"):
        _make(tiny_model_path, tmp_path, nan, loss_type=["rwr"])
    long = Dataset.from_dict({"prompt": ["word " * 50, "word " * 60], "completion": [" x", " y"]})
    with pytest.raises(ValueError, match=r"train dataset has no row left: the prompt of each of its 2 row\(s\) has ≥ "
                                         r"max_length=16 tokens"):
        _make(tiny_model_path, tmp_path, long, loss_type=["sft"], max_length=16)
    with pytest.raises(ValueError, match="rows must be demonstration"):
        _make(tiny_model_path, tmp_path, Dataset.from_dict({"prompt": ["a"], "answer": ["b"]}))
    with pytest.raises(TypeError, match="must be a UnifiedLikelihoodConfig"):
        UnifiedLikelihoodTrainer(tiny_model_path, args=DPOConfig(str(tmp_path), bf16=False), train_dataset=_demos())


def test_fully_truncated_rows_dropped_like_dpotrainer_with_one_warning(tiny_model_path, tmp_path):
    """Rows whose prompt fills ``max_length`` are dropped, as DPOTrainer drops them, with one warning counting them."""
    long = "word " * 40
    pairs = Dataset.from_dict({"prompt": ["2+2?", long, "3+3?", long + "more"], "chosen": [" 4", " a", " 6", " b"],
                               "rejected": [" 5", " c", " 7", " d"]})
    demos = Dataset.from_dict({"prompt": [long, "1+1?"], "completion": [" x", " 2"]})
    dpo = DPOTrainer(tiny_model_path, args=DPOConfig(**_args(tmp_path, max_length=16)), train_dataset=pairs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = _make(tiny_model_path, tmp_path, [pairs, demos], max_length=16)
    dropped = [w for w in caught if "dropped" in str(w.message)]
    assert len(dropped) == 1, [str(w.message) for w in caught]
    assert "dropped 3 of 6 row(s) (first: [1, 3, 4]) whose prompt has ≥ max_length=16 tokens" in str(dropped[0].message)
    assert [r["prompt_ids"] for r in ours.train_dataset if r["row_kind"] == 1] == dpo.train_dataset["prompt_ids"]
    assert ours.train_dataset["row_kind"] == [1, 1, 0]


def test_reference_free_run_does_not_hash_the_model(tiny_model_path, tmp_path, monkeypatch):
    """DPOTrainer hashes the whole model to key a precompute cache; a run without reference needs none."""
    import trl.trainer.dpo_trainer as dpo_trainer

    calls = []
    original = dpo_trainer.hash_module
    monkeypatch.setattr(dpo_trainer, "hash_module", lambda module: (calls.append(1), original(module))[1])
    trainer = _make(tiny_model_path, tmp_path, _demos(), loss_type=["sft"])
    assert calls == [] and trainer.ref_model is None and "ref_chosen_logps" not in trainer.train_dataset.column_names
    assert dpo_trainer.hash_module is not original  # our own spy is back in place
    _make(tiny_model_path, tmp_path, _pairs(), loss_type=["sigmoid"], precompute_ref_log_probs=True)
    assert calls == [1]  # a reference precompute still keys its cache by the model


def test_evaluate_with_compute_metrics_like_dpotrainer(tiny_model_path, tmp_path):
    """``compute_metrics`` receives the logits of every sequence (recomputed, as DPOTrainer does) and the input ids."""
    import numpy as np

    seen = []

    def compute_metrics(pred):
        seen.append((pred.predictions.shape, pred.label_ids.shape))
        logits, ids = pred.predictions[:, :-1], pred.label_ids[:, 1:]
        return {"n_sequences": float(logits.shape[0]), "mean_logit": float(np.mean(logits)),
                "top1_agreement": float((logits.argmax(-1) == ids).mean())}

    pairs = _pairs()
    kw = _args(tmp_path, per_device_eval_batch_size=4, loss_type=["sigmoid", "sft"])
    results = []
    for trainer_cls, config_cls in ((DPOTrainer, DPOConfig), (UnifiedLikelihoodTrainer, UnifiedLikelihoodConfig)):
        trainer = trainer_cls(tiny_model_path, args=config_cls(**kw), train_dataset=pairs, eval_dataset=pairs,
                              compute_metrics=compute_metrics)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # DPOTrainer deprecates the extra logits forward
            results.append(trainer.evaluate())
    dpo, ours = results
    assert seen[0] == seen[1] and seen[1][0][0] == 8  # chosen and rejected of 4 pairs
    for key in ("eval_loss", "eval_n_sequences", "eval_mean_logit", "eval_top1_agreement", "eval_rewards/margins"):
        assert ours[key] == pytest.approx(dpo[key], abs=1e-5), key


def _tiny_moe(path, tokenizer):
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           output_router_logits=True, router_aux_loss_coef=0.05, max_position_embeddings=256,
                           tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    MixtralForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


def test_moe_router_loss_added_and_logged_like_dpotrainer(tokenizer, tmp_path):
    """A tiny Mixtral (from a config, router logits on): the router aux loss enters the loss and is logged as
    ``aux_loss``, as DPOTrainer does; loss and gradients equal DPOTrainer's."""
    moe = _tiny_moe(tmp_path / "moe", tokenizer)
    pairs = _pairs()
    kw = _args(tmp_path, beta=0.3, max_length=64, loss_type=["sigmoid", "sft"])
    dpo = DPOTrainer(moe, args=DPOConfig(**kw), train_dataset=pairs)
    ours = UnifiedLikelihoodTrainer(moe, args=UnifiedLikelihoodConfig(**kw), train_dataset=pairs)
    assert dpo.aux_loss_enabled and ours.aux_loss_enabled
    _perturb(dpo, ours)
    l_dpo, g_dpo = _loss_and_grads(dpo, _batch(dpo, 4))
    l_ours, g_ours = _loss_and_grads(ours, _batch(ours, 4))
    assert abs(l_dpo.item() - l_ours.item()) < 1e-5
    _assert_grads_close(g_dpo, g_ours)
    aux = ours._metrics["train"]["aux_loss"][-1]
    assert aux > 0 and aux == pytest.approx(dpo._metrics["train"]["aux_loss"][-1], abs=1e-6)
    assert ours.router_aux_loss_coef == 0.05  # the architecture's own coefficient, as DPOTrainer reads it
    ours._metrics["train"].clear()
    ours.train()
    assert ours.state.log_history[0]["aux_loss"] > 0


def test_loss_without_rows_warns(tiny_model_path, tmp_path):
    with pytest.warns(UserWarning, match="'sigmoid' applies to preference rows, and the train dataset has none"):
        trainer = _make(tiny_model_path, tmp_path, _demos(), loss_type=["sft", "sigmoid"])
    assert trainer.ref_model is not None  # the reference is still loaded: the config asked for sigmoid
    with pytest.warns(UserWarning, match="has 3 graded row"):
        _make(tiny_model_path, tmp_path, [_demos(2), _graded()], loss_type=["sft"])


def test_long_completions_truncated_at_max_length(tiny_model_path, tmp_path):
    data = Dataset.from_dict({"prompt": ["q"], "completion": [" word" * 40]})
    trainer = _make(tiny_model_path, tmp_path, data, loss_type=["sft"], max_length=12)
    batch = _batch(trainer, 1)
    assert batch["input_ids"].shape[1] == 12 and batch["completion_mask"].sum() > 0


# ---- formats, evaluation, card ---------------------------------------------------------------------------------


def test_conversational_rows_tokenize_like_dpotrainer(tiny_model_path, tmp_path):
    user = lambda t: [{"role": "user", "content": t}]  # noqa: E731
    bot = lambda t: [{"role": "assistant", "content": t}]  # noqa: E731
    pairs = Dataset.from_dict({"prompt": [user("2+2?"), user("3+3?")], "chosen": [bot("4"), bot("6")],
                               "rejected": [bot("5"), bot("7")]})
    demos = Dataset.from_dict({"prompt": [user("1+1?")], "completion": [bot("2")]})
    dpo = DPOTrainer(tiny_model_path, args=DPOConfig(**_args(tmp_path)), train_dataset=pairs)
    ours = _make(tiny_model_path, tmp_path, [pairs, demos])
    for i in range(2):
        for col in ("prompt_ids", "chosen_ids"):
            ours_col = "completion_ids" if col == "chosen_ids" else col
            assert ours.train_dataset[i][ours_col] == dpo.train_dataset[i][col]
        assert ours.train_dataset[i]["rejected_ids"] == dpo.train_dataset[i]["rejected_ids"]
    assert ours.train_dataset[2]["row_kind"] == 0 and len(ours.train_dataset[2]["completion_ids"]) > 0


def test_evaluate_mixed_and_model_card(tiny_model_path, tmp_path):
    trainer = _make(tiny_model_path, tmp_path, [_demos(2), _pairs(2)], loss_type=["sft", "sigmoid"])
    metrics = trainer.evaluate(eval_dataset=[_demos(2), _pairs(2)])
    assert math.isfinite(metrics["eval_loss"]) and "eval_loss/sft" in metrics and "eval_rewards/margins" in metrics
    # held-out preference accuracy from the policy's own log-likelihoods (defined before training)
    mixed = [_demos(2), _pairs(4)]
    scores = trainer.pair_logps(mixed, batch_size=3)
    assert scores["chosen_logps"].shape == (4,) and (scores["chosen_tokens"] > 0).all()
    expected = (scores["chosen_logps"] > scores["rejected_logps"]).float().mean().item()
    assert trainer.preference_accuracy(mixed) == expected
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "UnifiedLikelihoodTrainer" in card and "None](https://huggingface.co/None)" not in card


@pytest.mark.slow
def test_example_script_runs_end_to_end(tiny_model_path, tmp_path, monkeypatch):
    """examples/unified.py on the tiny model: trains on gsm_symbolic demonstrations + pairs, writes results + plot."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "unified.py"
    spec = importlib.util.spec_from_file_location("unified_example", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    monkeypatch.setitem(sys.modules, "unified_example", module)  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    out = tmp_path / "example"
    script_args, training_args, model_args = module.make_parser().parse_args_and_config(args=[
        "--model_name_or_path", tiny_model_path, "--num_demonstrations", "4", "--num_pairs", "4", "--num_eval", "4",
        "--num_eval_questions", "4", "--eval_max_new_tokens", "8", "--max_length", "256", "--output_dir", str(out),
    ])
    results = module.main(script_args, training_args, model_args)
    saved = json.loads((out / "results.json").read_text())
    assert saved["train_rows"] == {"demonstration": 4, "preference": 4}
    for stage in ("before", "after"):
        assert 0.0 <= saved[stage]["preference_accuracy"] <= 1.0 and "answer_accuracy" in saved[stage]
    assert results["heldout_implicit_reward_accuracy"] is not None
    assert (out / "unified_curves.png").is_file() and (out / "README.md").is_file()


# ---- data parallelism: 2 processes (gloo) == 1 process over the same global batch --------------------------------

#: The global batch of the data-parallel test, in sampler order: 3 demonstrations, 3 pairs, 2 graded rows, of different
#: lengths, so that every split (4 + 4 rows, or 2 + 2 rows × 2 micro-batches) gives the ranks different numbers of
#: tokens and different kinds (a micro-batch may even hold no pair at all).
DP_ROWS = [
    {"prompt": "Explain why 12 is even.",
     "completion": " Twelve is divisible by two because 12 = 2 * 6, so it leaves no remainder: 12 is even."},
    {"prompt": "What is 2 + 2?", "completion": " 4"},
    {"prompt": "Add 5 and 1.", "chosen": " The sum is 6.", "rejected": " 7"},
    {"prompt": "Compute 3 times 3.", "completion": " It is 9, since three threes make nine.", "label": True},
    {"prompt": "What is 10 - 4?", "chosen": " 6", "rejected": " Ten minus four is five, I believe."},
    {"prompt": "Halve 8.", "chosen": " Half of eight is four.", "rejected": " 3"},
    {"prompt": "1 + 9 =", "completion": " 10", "reward": 0.8},
    {"prompt": "Name a prime number above 10.", "completion": " 11 is prime."},
]

#: Configurations of the data-parallel test: a live reference model, and reference log-probs precomputed into the
#: dataset (in batches of 3, so that the precompute's shards are uneven over 2 processes).
DP_CONFIGS = {
    "live_reference": dict(loss_type=["sigmoid", "sft", "rft"], loss_weights=[1.0, 0.5, 0.25]),
    "precomputed_reference": dict(loss_type=["sigmoid", "sft", "rwr"], loss_weights=[1.0, 0.5, 0.25],
                                  precompute_ref_log_probs=True, precompute_ref_batch_size=3),
}


def _dp_dataset():
    kinds = {"demonstration": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected"),
             "graded": ("prompt", "completion", "reward", "label")}
    parts = [Dataset.from_list([{c: row.get(c) for c in cols} for row in DP_ROWS if infer_row_kind(row) == kind])
             for kind, cols in kinds.items()]
    mixed = mix_datasets(parts)
    order = {row["prompt"]: i for i, row in enumerate(mixed)}
    return mixed.select([order[row["prompt"]] for row in DP_ROWS])  # back to the order of DP_ROWS


def _dp_args(out_dir, per_device, grad_accum, **kw):
    """One SGD step with lr 1 (the update is the gradient: Adam's first step would hide a wrong loss scale), no
    clipping, sequential sampling (both runs see DP_ROWS in order), on CPU (without `use_cpu`, accelerate runs each
    torchrun process on its own as a 1-process job)."""
    base = _args(Path(out_dir), per_device_train_batch_size=per_device, gradient_accumulation_steps=grad_accum,
                 optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=1e9, beta=0.5,
                 max_length=64, disable_tqdm=True, train_sampling_strategy="sequential", use_cpu=True, **kw)
    return UnifiedLikelihoodConfig(**base)


def _dp_load(run_dir, world):
    import json

    ranks = []
    for rank in range(world):
        with open(os.path.join(run_dir, f"rank{rank}.json")) as f:
            ranks.append(json.load(f))
        assert ranks[-1]["world"] == world
    return ranks, torch.load(os.path.join(run_dir, "delta.pt"))


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process_run(tiny_model_path, tmp_path):
    """One optimizer step on the same 8 mixed rows: 1 process × 8 rows, 2 processes × 4 rows, and 2 processes ×
    2 rows × 2 accumulation steps give the same loss, per-term metrics, reference log-probs per row and parameters.

    The ranks hold different kinds and numbers of tokens, so per-rank normalisers (or a wrong DDP/accumulation scale)
    would change the loss, the metrics and the update."""
    runs = {(1, 8, 1): tmp_path / "one", (2, 4, 1): tmp_path / "two", (2, 2, 2): tmp_path / "two_ga"}
    for (world, per_device, grad_accum), out_dir in runs.items():
        out_dir.mkdir()
        run_script("unified_dp_worker", tiny_model_path, out_dir, per_device, grad_accum, nproc=world, timeout=900)

    expected_rows = {  # rows of each rank's micro-batches: accelerate deals the sampler's batches out round-robin
        (1, 8, 1): [[list(range(8))]],
        (2, 4, 1): [[[0, 1, 2, 3]], [[4, 5, 6, 7]]],
        (2, 2, 2): [[[0, 1], [4, 5]], [[2, 3], [6, 7]]],
    }
    live_ref = None
    for name in DP_CONFIGS:
        one, one_delta = _dp_load(runs[(1, 8, 1)] / name, 1)
        assert max(d.abs().max().item() for d in one_delta.values()) > 1e-2  # a real update
        one_ref = one[0]["micro_batches"][0]["ref"]
        assert sorted(map(int, one_ref)) == [2, 4, 5]  # the pairs
        for col, values in one[0]["cached"].items():  # precomputed: a value for each pair row, 0 for the others
            assert [i for i, v in enumerate(values) if v != 0.0] == [2, 4, 5], col
        if live_ref is None:
            live_ref = one_ref
        for key in [(2, 4, 1), (2, 2, 2)]:
            world, _, grad_accum = key
            ranks, delta = _dp_load(runs[key] / name, world)
            seen = [[mb["rows"] for mb in rank["micro_batches"]] for rank in ranks]
            assert seen == expected_rows[key], (name, key, seen)
            # the split really is uneven: the ranks hold different numbers of completion tokens and of pairs (with
            # accumulation, rank 0's first micro-batch has no pair while rank 1's has one)
            tokens = [sum(mb["tokens"] for mb in rank["micro_batches"]) for rank in ranks]
            assert tokens[0] != tokens[1], tokens
            n_pairs = [[len(mb["ref"]) for mb in rank["micro_batches"]] for rank in ranks]
            assert n_pairs[0] != n_pairs[1], n_pairs
            # reference log-probs: each rank uses those of its own rows, equal to the 1-process run's (and, when
            # precomputed, to the live reference model's)
            for rank in ranks:
                for mb in rank["micro_batches"]:
                    for row, value in mb["ref"].items():
                        assert value == pytest.approx(one_ref[row], abs=1e-5), (name, key, row)
                        assert value == pytest.approx(live_ref[row], abs=1e-5), (name, key, row)
                if rank["cached"]:  # the precomputed columns: the same on every rank and in the 1-process run
                    for col, values in rank["cached"].items():
                        assert values == pytest.approx(one[0]["cached"][col], abs=1e-5), (name, key, col)
            # logged step: the loss, every per-term / per-kind metric and the gradient norm
            logs_one = one[0]["logs"]
            for rank in ranks:
                logs = rank["logs"]
                assert logs.keys() == logs_one.keys()
                for metric, value in logs_one.items():
                    got = logs[metric]
                    if metric.startswith("rows/"):  # rows per micro-batch of one process
                        got = got * world * grad_accum
                    # abs 1e-5; rel 1e-7 (≈ 1 float32 ulp) only matters for the summed log-probs (|logps/*| ≈ 100)
                    assert got == pytest.approx(value, abs=1e-5, rel=1e-7), (name, key, metric, got, value)
            # the update: identical on both ranks, equal to the 1-process update
            assert ranks[0]["delta_fingerprint"] == ranks[1]["delta_fingerprint"]
            for param, d in one_delta.items():
                torch.testing.assert_close(delta[param], d, atol=1e-5, rtol=0.0,
                                           msg=lambda m: f"{name} {key} {param}: {m}")
        assert {"loss/sigmoid", "loss/sft", "rewards/margins", "logps/graded"} <= logs_one.keys()
