"""The likelihood / preference loss bank: hand-computed values, an independent pure-Python loop, edge cases."""

import math

import pytest
import torch

from trl_ext.core.likelihood import (
    dpo_sigmoid_loss,
    hinge_loss,
    ipo_loss,
    log1mexp,
    orpo_loss,
    reduce_loss,
    rft_loss,
    robust_loss,
    rwr_loss,
    rwr_weights,
    sequence_logps,
    sft_loss,
    simpo_loss,
)


def _logsig(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _seq(row_logps, row_mask):
    """Independent loop: sum and count over the masked tokens of one row."""
    s, n = 0.0, 0
    for lp, m in zip(row_logps, row_mask):
        if m:
            s += lp
            n += 1
    return s, n


def _loop_pair_losses(cw, cl, rw, rl, nw, nl, beta, eps, gamma, lam):
    """Independent scalar implementation of every pair loss for one pair, straight from the papers / TRL."""
    h = beta * ((cw - rw) - (cl - rl))
    out = {
        "sigmoid": -_logsig(h),
        "hinge": max(0.0, 1.0 - h),
        "ipo": ((cw - rw) / nw - (cl - rl) / nl - 1.0 / (2 * beta)) ** 2,
        "robust": (-(1 - eps) * _logsig(h) + eps * _logsig(-h)) / (1 - 2 * eps),
    }
    z = beta * cw / nw - beta * cl / nl - gamma
    out["simpo"] = -(1 - eps) * _logsig(z) - eps * _logsig(-z)
    aw, al = cw / nw, cl / nl
    odds = (aw - math.log(1 - math.exp(aw))) - (al - math.log(1 - math.exp(al)))
    out["orpo"] = -aw - lam * _logsig(odds)
    return out


@pytest.fixture
def batch():
    """Four pairs with padded per-token log-probs; padding holds garbage (NaN / large) that must be ignored."""
    g = torch.Generator().manual_seed(0)
    B, T = 4, 6
    pol = -torch.rand(2 * B, T, generator=g) * 2 - 0.05
    ref = -torch.rand(2 * B, T, generator=g) * 2 - 0.05
    mask = torch.zeros(2 * B, T, dtype=torch.long)
    lengths = [6, 3, 1, 4, 2, 6, 5, 1]  # one-token completions on both sides
    for i, n in enumerate(lengths):
        mask[i, T - n :] = 1  # completion at the end, prompt/padding before
    pol_garbage = torch.where(mask.bool(), pol, torch.full_like(pol, float("nan")))
    ref_garbage = torch.where(mask.bool(), ref, torch.full_like(ref, 1e6))
    return pol, ref, mask, pol_garbage, ref_garbage, lengths


def test_sequence_logps_matches_loop_and_ignores_padding(batch):
    pol, _, mask, pol_garbage, _, lengths = batch
    s, n = sequence_logps(pol_garbage, mask)
    for i in range(pol.size(0)):
        ls, ln = _seq(pol[i].tolist(), mask[i].tolist())
        assert s[i].item() == pytest.approx(ls, abs=1e-6)
        assert n[i].item() == ln == lengths[i]
    assert torch.isfinite(s).all()


def test_sequence_logps_hand_values_and_shape_error():
    s, n = sequence_logps(torch.tensor([[-1.0, -2.0, -4.0], [-0.5, 7.0, 7.0]]), torch.tensor([[0, 1, 1], [1, 0, 0]]))
    assert s.tolist() == [-6.0, -0.5] and n.tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="sequence_logps"):
        sequence_logps(torch.zeros(2, 3), torch.ones(2, 4))


@pytest.mark.parametrize("beta,eps,gamma,lam", [(0.1, 0.1, 0.5, 0.1), (0.7, 0.3, 1.2, 2.0)])
def test_pair_losses_match_independent_loop(batch, beta, eps, gamma, lam):
    _, _, mask, pol_garbage, ref_garbage, _ = batch
    S, n = sequence_logps(pol_garbage, mask)
    R, _ = sequence_logps(ref_garbage, mask)
    cw, cl = S.chunk(2)
    rw, rl = R.chunk(2)
    nw, nl = n.chunk(2)
    got = {
        "sigmoid": dpo_sigmoid_loss(cw, cl, rw, rl, beta)[0],
        "hinge": hinge_loss(cw, cl, rw, rl, beta)[0],
        "ipo": ipo_loss(cw, cl, rw, rl, nw, nl, beta)[0],
        "robust": robust_loss(cw, cl, rw, rl, beta, eps)[0],
        "simpo": simpo_loss(cw, cl, nw, nl, beta, gamma, eps)[0],
        "orpo": orpo_loss(cw, cl, nw, nl, lam)[0],
    }
    for i in range(cw.numel()):
        ref = _loop_pair_losses(
            cw[i].item(), cl[i].item(), rw[i].item(), rl[i].item(), nw[i].item(), nl[i].item(), beta, eps, gamma, lam
        )
        for name, value in ref.items():
            assert got[name][i].item() == pytest.approx(value, rel=1e-5, abs=1e-6), (name, i)


def test_pair_losses_hand_values():
    # S_w = -1, S_l = -3, refs -2 / -2, n_w = 1, n_l = 2, β = 0.5: h = 0.5·(1 − (−1)) = 1
    args = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
    nw, nl = torch.tensor([1.0]), torch.tensor([2.0])
    loss, r_w, r_l = dpo_sigmoid_loss(*args, beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))  # −log σ(1) = 0.31326
    assert (r_w.item(), r_l.item()) == (0.5, -0.5)
    assert hinge_loss(*args, beta=0.5)[0].item() == pytest.approx(0.0)  # max(0, 1 − 1)
    assert hinge_loss(*args, beta=0.25)[0].item() == pytest.approx(0.5)  # max(0, 1 − 0.5)
    # IPO: Δ = 1/1 − (−1)/2 = 1.5; (1.5 − 1/(2·0.5))² = 0.25
    assert ipo_loss(*args, nw, nl, beta=0.5)[0].item() == pytest.approx(0.25)
    # robust, ε = 0.25: [−0.75·log σ(1) + 0.25·log σ(−1)] / 0.5
    expected = (0.75 * math.log1p(math.exp(-1.0)) - 0.25 * math.log1p(math.exp(1.0))) / 0.5
    assert robust_loss(*args, beta=0.5, label_smoothing=0.25)[0].item() == pytest.approx(expected)
    # SimPO: z = 2·(−1/1) − 2·(−3/2) − 0.5 = 0.5
    loss, r_w, r_l = simpo_loss(args[0], args[1], nw, nl, beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5)))
    assert (r_w.item(), r_l.item()) == (-2.0, -3.0)
    # ORPO: a_w = −1, a_l = −1.5; log odds = −1 − log(1 − e^−1) − (−1.5 − log(1 − e^−1.5))
    lo = (-1 - math.log(1 - math.exp(-1))) - (-1.5 - math.log(1 - math.exp(-1.5)))
    loss, r_w, r_l = orpo_loss(args[0], args[1], nw, nl, lam=0.2)
    assert loss.item() == pytest.approx(1.0 + 0.2 * math.log1p(math.exp(-lo)))
    assert (r_w.item(), r_l.item()) == pytest.approx((-0.2, -0.3))


def test_equal_chosen_and_rejected():
    S = torch.tensor([-2.0, -7.0])
    ref = torch.tensor([-1.0, -3.0])
    n = torch.tensor([3.0, 1.0])
    beta = 0.2
    assert torch.allclose(dpo_sigmoid_loss(S, S, ref, ref, beta)[0], torch.full((2,), math.log(2.0)))
    assert torch.allclose(hinge_loss(S, S, ref, ref, beta)[0], torch.ones(2))
    assert torch.allclose(ipo_loss(S, S, ref, ref, n, n, beta)[0], torch.full((2,), (1 / (2 * beta)) ** 2))
    assert torch.allclose(robust_loss(S, S, ref, ref, beta, 0.1)[0], torch.full((2,), math.log(2.0)))
    assert torch.allclose(simpo_loss(S, S, n, n, 2.0, 0.0)[0], torch.full((2,), math.log(2.0)))
    # the gradient of the DPO loss w.r.t. S_w is −β·σ(−h) = −β/2 at h = 0
    Sw = S.clone().requires_grad_(True)
    dpo_sigmoid_loss(Sw, S, ref, ref, beta)[0].sum().backward()
    assert torch.allclose(Sw.grad, torch.full((2,), -beta / 2))


def test_pair_loss_gradients_match_autograd_of_loop():
    """Gradients of every pair loss equal finite differences of the independent loop."""
    cw, cl, rw, rl, nw, nl = -2.3, -4.1, -2.9, -3.0, 3.0, 5.0
    beta, eps, gamma, lam = 0.3, 0.2, 0.4, 0.5
    h = 1e-4
    t = lambda v: torch.tensor([v], dtype=torch.float64, requires_grad=True)  # noqa: E731
    for name in ("sigmoid", "hinge", "ipo", "robust", "simpo", "orpo"):
        Sw, Sl = t(cw), t(cl)
        Rw, Rl = torch.tensor([rw], dtype=torch.float64), torch.tensor([rl], dtype=torch.float64)
        Nw, Nl = torch.tensor([nw], dtype=torch.float64), torch.tensor([nl], dtype=torch.float64)
        fn = {
            "sigmoid": lambda: dpo_sigmoid_loss(Sw, Sl, Rw, Rl, beta),
            "hinge": lambda: hinge_loss(Sw, Sl, Rw, Rl, beta),
            "ipo": lambda: ipo_loss(Sw, Sl, Rw, Rl, Nw, Nl, beta),
            "robust": lambda: robust_loss(Sw, Sl, Rw, Rl, beta, eps),
            "simpo": lambda: simpo_loss(Sw, Sl, Nw, Nl, beta, gamma, eps),
            "orpo": lambda: orpo_loss(Sw, Sl, Nw, Nl, lam),
        }[name]
        fn()[0].sum().backward()
        f = lambda a, b: _loop_pair_losses(a, b, rw, rl, nw, nl, beta, eps, gamma, lam)[name]  # noqa: E731
        gw = (f(cw + h, cl) - f(cw - h, cl)) / (2 * h)
        gl = (f(cw, cl + h) - f(cw, cl - h)) / (2 * h)
        assert Sw.grad.item() == pytest.approx(gw, rel=1e-4, abs=1e-7), name
        assert Sl.grad.item() == pytest.approx(gl, rel=1e-4, abs=1e-7), name


def test_sft_token_vs_sequence_normalisation(batch):
    pol, _, mask, pol_garbage, _, _ = batch
    S, n = sequence_logps(pol_garbage, mask)
    # token mean: −Σ over all valid tokens / number of valid tokens (SFTTrainer's completion-only loss)
    flat = [lp for row, mrow in zip(pol.tolist(), mask.tolist()) for lp, m in zip(row, mrow) if m]
    tok = reduce_loss(*sft_loss(S, n, "token"))
    assert tok.item() == pytest.approx(-sum(flat) / len(flat), rel=1e-6)
    # sequence mean: mean over rows of each row's token mean
    per_row = [-_seq(r, m)[0] / _seq(r, m)[1] for r, m in zip(pol.tolist(), mask.tolist())]
    seq = reduce_loss(*sft_loss(S, n, "sequence"))
    assert seq.item() == pytest.approx(sum(per_row) / len(per_row), rel=1e-6)
    assert abs(tok.item() - seq.item()) > 1e-3  # different lengths → the two normalisations differ
    with pytest.raises(ValueError, match="sft_loss: normalization"):
        sft_loss(S, n, "tokens")


def test_sft_one_token_completion():
    losses, den = sft_loss(torch.tensor([-0.7]), torch.tensor([1.0]), "token")
    assert reduce_loss(losses, den).item() == pytest.approx(0.7)
    losses, den = sft_loss(torch.tensor([-0.7]), torch.tensor([1.0]), "sequence")
    assert reduce_loss(losses, den).item() == pytest.approx(0.7)


def test_reduce_loss_over_micro_batches_equals_full_batch():
    """Gradient accumulation: Σ over micro-batches of Σℓ/D_total equals the full-batch token mean."""
    S = torch.tensor([-3.0, -1.0, -8.0, -2.0])
    n = torch.tensor([3.0, 1.0, 4.0, 2.0])
    full = reduce_loss(*sft_loss(S, n))
    total = n.sum()
    parts = sum(reduce_loss(*sft_loss(S[i : i + 2], n[i : i + 2]), total_denominator=total) for i in (0, 2))
    assert parts.item() == pytest.approx(full.item()) == pytest.approx(14.0 / 10.0)
    # the naive mean of micro-batch means differs (that is the GA bug this guards against)
    naive = (reduce_loss(*sft_loss(S[:2], n[:2])) + reduce_loss(*sft_loss(S[2:], n[2:]))) / 2
    assert naive.item() != pytest.approx(full.item())
    # empty denominator → 0, still differentiable
    x = torch.tensor([0.0], requires_grad=True)
    out = reduce_loss(x * 1.0, torch.zeros(1))
    out.backward()
    assert out.item() == 0.0 and x.grad is not None


def test_rwr_weights_and_loss():
    S, n = torch.tensor([-2.0, -6.0]), torch.tensor([2.0, 3.0])
    R = torch.tensor([1.0, -1.0])
    w = rwr_weights(R, temperature=0.5)
    assert torch.allclose(w, torch.tensor([math.exp(2.0), math.exp(-2.0)]))
    losses, den = rwr_loss(S, n, rewards=R, temperature=0.5, normalization="token")
    assert reduce_loss(losses, den).item() == pytest.approx((math.exp(2) * 2 + math.exp(-2) * 6) / 5)
    losses, den = rwr_loss(S, n, rewards=R, temperature=0.5, normalization="sequence")
    assert reduce_loss(losses, den).item() == pytest.approx((math.exp(2) * 1 + math.exp(-2) * 2) / 2)
    losses, _ = rwr_loss(S, n, weights=torch.tensor([0.0, 1.0]), normalization="sequence")
    assert losses.tolist() == [0.0, 2.0]
    # weights are constants: no gradient flows into the rewards
    Rg = R.clone().requires_grad_(True)
    Sg = S.clone().requires_grad_(True)
    rwr_loss(Sg, n, rewards=Rg)[0].sum().backward()
    assert Rg.grad is None and torch.allclose(Sg.grad, -torch.exp(R))
    with pytest.raises(ValueError, match="exactly one"):
        rwr_loss(S, n)
    with pytest.raises(ValueError, match="temperature"):
        rwr_weights(R, temperature=0.0)


def test_rft_ignores_rejected_samples_in_loss_and_normaliser():
    S, n = torch.tensor([-2.0, -9.0, -3.0]), torch.tensor([2.0, 3.0, 1.0])
    labels = torch.tensor([True, False, True])
    losses, den = rft_loss(S, n, labels, "token")
    assert reduce_loss(losses, den).item() == pytest.approx(5.0 / 3.0)  # only rows 0 and 2
    losses, den = rft_loss(S, n, labels, "sequence")
    assert reduce_loss(losses, den).item() == pytest.approx((1.0 + 3.0) / 2)
    # all rejected → 0 loss (no division by zero)
    losses, den = rft_loss(S, n, torch.zeros(3, dtype=torch.bool))
    assert reduce_loss(losses, den).item() == 0.0
    # rft on all-accepted rows is exactly sft
    ones = torch.ones(3, dtype=torch.bool)
    assert reduce_loss(*rft_loss(S, n, ones)).item() == pytest.approx(reduce_loss(*sft_loss(S, n)).item())


def test_robust_rejects_bad_label_smoothing():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="robust_loss: label_smoothing"):
        robust_loss(x, x, x, x, 0.1, 0.5)


def test_log1mexp_stable_on_both_branches():
    x = torch.tensor([-1e-8, -0.1, -0.6931, -0.7, -5.0, -50.0], dtype=torch.float64)
    expected = torch.log(-torch.expm1(x))  # exact in float64
    assert torch.allclose(log1mexp(x), expected, rtol=1e-10)
    x32 = torch.tensor([-1e-7, -30.0])
    assert torch.isfinite(log1mexp(x32)).all()
    # ORPO stays finite when a completion has probability ≈ 1
    loss = orpo_loss(torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([2.0]), torch.tensor([2.0]), lam=0.1)[0]
    assert torch.isfinite(loss).all()


# ---- DPOTrainer's variants, f-divergences, LD-DPO, WPO, the registry ------------------------------------------------

from trl_ext.core.likelihood import (  # noqa: E402
    LOSSES,
    LossBatch,
    LossParams,
    RowKind,
    aot_loss,
    aot_unpaired_loss,
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    discopop_loss,
    exo_pair_loss,
    f_divergence_scores,
    ld_sequence_logps,
    nca_pair_loss,
    sigmoid_norm_loss,
    sppo_hard_loss,
    wpo_sequence_weights,
)


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _loop_variant_losses(rw, rl, beta, eps, tau):
    """Independent scalar formulas of one pair, from the papers (ρ_w, ρ_l: log-ratios; reverse KL)."""
    d = rw - rl
    x = beta * d
    m = _sig(x / tau)
    return {
        "exo_pair": _sig(x) * (_logsig(x) - math.log(1 - eps)) + _sig(-x) * (_logsig(-x) - math.log(eps)),
        "nca_pair": -_logsig(beta * rw) - 0.5 * _logsig(-beta * rw) - 0.5 * _logsig(-beta * rl),
        "bco_pair": -_logsig(beta * rw) - _logsig(-beta * rl),
        "sppo_hard": (rw - 1 / (2 * beta)) ** 2 + (rl + 1 / (2 * beta)) ** 2,
        "apo_zero": (1 - _sig(beta * rw)) + _sig(beta * rl),
        "apo_down": _sig(beta * rw) + (1 - _sig(beta * d)),
        "discopop": (1 - m) * -_logsig(x) + m * math.exp(-x),
    }


@pytest.mark.parametrize("beta,eps,tau", [(0.1, 1e-3, 0.05), (0.8, 0.2, 0.5)])
def test_dpo_variants_match_independent_loop(batch, beta, eps, tau):
    _, _, mask, pol_garbage, ref_garbage, _ = batch
    S, _ = sequence_logps(pol_garbage, mask)
    R, _ = sequence_logps(ref_garbage, mask)
    cw, cl = S.chunk(2)
    rw, rl = R.chunk(2)
    lw, ll = cw - rw, cl - rl
    got = {
        "exo_pair": exo_pair_loss(lw - ll, beta, eps), "nca_pair": nca_pair_loss(lw, ll, beta),
        "bco_pair": bco_pair_loss(lw, ll, beta), "sppo_hard": sppo_hard_loss(lw, ll, beta),
        "apo_zero": apo_zero_loss(lw, ll, beta), "apo_down": apo_down_loss(lw, ll, beta),
        "discopop": discopop_loss(lw - ll, beta, tau),
    }
    for i in range(cw.numel()):
        expected = _loop_variant_losses(lw[i].item(), ll[i].item(), beta, eps, tau)
        for name, value in expected.items():
            assert got[name][i].item() == pytest.approx(value, rel=1e-5, abs=1e-6), (name, i)


def test_aot_sorts_over_the_batch():
    # S_w − S_l = [1, −2], S_ref_w − S_ref_l = [0, 3] → sorted [−2, 1] − [0, 3] = [−2, −2]
    losses = aot_loss(torch.tensor([0.0, -2.0]), torch.tensor([-1.0, 0.0]), torch.tensor([0.0, 3.0]),
                      torch.tensor([0.0, 0.0]), beta=0.5, label_smoothing=0.25)
    expected = -0.75 * _logsig(-1.0) - 0.25 * _logsig(1.0)
    assert losses.tolist() == pytest.approx([expected, expected])
    # unpaired: sort(ρ_w) = [−1, 2], sort(ρ_l) = [0, 4] → [−1, −2]
    un = aot_unpaired_loss(torch.tensor([2.0, -1.0]), torch.tensor([0.0, 4.0]), beta=1.0)
    assert un.tolist() == pytest.approx([-_logsig(-1.0), -_logsig(-2.0)])


def test_sigmoid_norm_hand_value():
    # s_w / n_w − s_l / n_l = 3/3 − (−2)/2 = 2, β = 0.5 → −log σ(1)
    got = sigmoid_norm_loss(torch.tensor([3.0]), torch.tensor([-2.0]), torch.tensor([3.0]), torch.tensor([2.0]), 0.5)
    assert got.item() == pytest.approx(-_logsig(1.0))


def test_f_divergence_scores_hand_values():
    r = torch.tensor([0.5, -1.0])
    assert f_divergence_scores(r, "reverse_kl").tolist() == r.tolist()
    assert f_divergence_scores(r, "forward_kl").tolist() == pytest.approx([1 - math.exp(-0.5), 1 - math.exp(1.0)])
    assert f_divergence_scores(r, "js_divergence").tolist() == pytest.approx(
        [math.log(2) + _logsig(0.5), math.log(2) + _logsig(-1.0)])
    # α = 0.3: (t^(α−1) − 1)/(α − 1) with t = e^ρ
    assert f_divergence_scores(r, "alpha_divergence", 0.3).tolist() == pytest.approx(
        [(math.exp(-0.7 * 0.5) - 1) / -0.7, (math.exp(0.7) - 1) / -0.7])
    assert f_divergence_scores(r, "alpha_divergence", 1.0).tolist() == r.tolist()
    with pytest.raises(ValueError, match="f_divergence_type must be one of"):
        f_divergence_scores(r, "kl")


def test_ld_sequence_logps_matches_loop(batch):
    pol, _, mask, pol_garbage, _, _ = batch
    alpha = 0.3
    got = ld_sequence_logps(pol_garbage, mask, alpha)
    P = pol.size(0) // 2
    for i in range(pol.size(0)):
        partner = i + P if i < P else i - P
        shared = min(int(mask[i].sum()), int(mask[partner].sum()))
        values = [lp for lp, m in zip(pol[i].tolist(), mask[i].tolist()) if m]
        expected = sum(values[:shared]) + alpha * sum(values[shared:])
        assert got[i].item() == pytest.approx(expected, abs=1e-5), i
    torch.testing.assert_close(ld_sequence_logps(pol_garbage, mask, 1.0), sequence_logps(pol_garbage, mask)[0])


def test_wpo_weights_match_loop_and_are_detached():
    lp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    lss = torch.tensor([[-0.5, -1.0, 9.0], [-0.25, -0.25, -0.25]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    w = wpo_sequence_weights(lp, lss, mask)
    assert not w.requires_grad
    assert w.tolist() == pytest.approx([math.exp(((-1 + 0.5) + (-2 + 1)) / 2), math.exp(-0.25)])


def _loss_batch(P=2, D=1, G=2, **kw):
    g = torch.Generator().manual_seed(0)
    r = lambda n: -torch.rand(n, generator=g) * 5  # noqa: E731
    base = dict(params=LossParams(beta=0.5, label_smoothing=0.1), chosen_logps=r(P), rejected_logps=r(P),
                chosen_nll_logps=r(P), chosen_tokens=torch.tensor([3.0, 1.0])[:P],
                rejected_tokens=torch.tensor([2.0, 4.0])[:P],
                demo_logps=r(D), demo_tokens=torch.full((D,), 5.0), graded_logps=r(G),
                graded_tokens=torch.tensor([2.0, 3.0])[:G], graded_rewards=torch.tensor([1.0, 0.0])[:G],
                graded_accepted=torch.tensor([True, False])[:G], ref_chosen_logps=r(P), ref_rejected_logps=r(P))
    base.update(kw)
    return LossBatch(**base)


def test_registry_entries_are_complete_and_consistent():
    assert set(LOSSES) >= {"sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                           "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm", "simpo", "orpo",
                           "rwr", "rft"}
    b = _loss_batch()
    n_rows = {RowKind.PREFERENCE: 2, RowKind.DEMONSTRATION: 1, RowKind.GRADED: 2}
    for name, spec in LOSSES.items():
        assert spec.name == name and spec.kinds and spec.reference
        losses, dens = spec.loss(b), spec.denominator(b)
        assert losses.shape == dens.shape == (sum(n_rows[k] for k in spec.kinds),), name
        assert torch.isfinite(losses).all(), name
        # the denominator reads only counts: the same with all log-probs zeroed
        zeroed = _loss_batch(chosen_logps=torch.zeros(2), rejected_logps=torch.zeros(2), demo_logps=torch.zeros(1))
        torch.testing.assert_close(spec.denominator(zeroed), dens)
        if not spec.needs_reference:  # reference-free losses never read it
            spec.loss(_loss_batch(ref_chosen_logps=None, ref_rejected_logps=None))


def test_registry_sft_is_one_token_mean_over_demonstrations_and_chosen():
    b = _loss_batch()
    spec = LOSSES["sft"]
    expected = -(b.demo_logps.sum() + b.chosen_nll_logps.sum()) / (5.0 + 3.0 + 1.0)
    assert reduce_loss(spec.loss(b), spec.denominator(b)).item() == pytest.approx(expected.item(), rel=1e-6)
    # WPO scales the chosen part by the mean pair weight (DPOTrainer multiplies its `sft` term by the weights)
    w = torch.tensor([0.5, 0.1])
    weighted = _loss_batch(pair_weights=w)
    expected_w = -(b.demo_logps.sum() + 0.3 * b.chosen_nll_logps.sum()) / 9.0
    assert reduce_loss(spec.loss(weighted), spec.denominator(weighted)).item() == pytest.approx(expected_w.item(),
                                                                                               rel=1e-6)
    # pair losses: per-pair weights
    sig = LOSSES["sigmoid"]
    torch.testing.assert_close(sig.loss(weighted), sig.loss(b) * w)


def test_registry_f_divergence_replaces_the_log_ratios():
    b = _loss_batch(params=LossParams(beta=0.5, f_divergence_type="forward_kl"))
    sw = 1 - torch.exp(-(b.chosen_logps - b.ref_chosen_logps))
    sl = 1 - torch.exp(-(b.rejected_logps - b.ref_rejected_logps))
    torch.testing.assert_close(LOSSES["sigmoid"].loss(b), -torch.nn.functional.logsigmoid(0.5 * (sw - sl)))
    # IPO: length-normalised scores
    ipo = ((sw / b.chosen_tokens - sl / b.rejected_tokens) - 1 / (2 * 0.5)) ** 2
    torch.testing.assert_close(LOSSES["ipo"].loss(b), ipo)
    assert not LOSSES["bco_pair"].f_divergence and LOSSES["sft"].f_divergence
