"""GAE, whitening, group and process advantages: hand-computed values, an independent loop, edge cases."""

import math
import random

import pytest
import torch

from trl_ext.core import gae, group_advantages, masked_mean, masked_var, process_advantages, whiten
from trl_ext.core.masked import explained_variance, masked_moments, moments_mean_var, whiten_with_stats


def _gae_reference(rewards, values, mask, gamma, lam):
    """Slow, independent GAE: per row, over the list of valid positions only, in plain Python floats."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        idx = [t for t in range(T) if mask[b][t]]
        running = 0.0
        for k in range(len(idx) - 1, -1, -1):
            t = idx[k]
            v_next = values[b][idx[k + 1]] if k + 1 < len(idx) else 0.0
            delta = rewards[b][t] + gamma * v_next - values[b][t]
            running = delta + gamma * lam * running
            adv[b][t] = running
    ret = [[adv[b][t] + values[b][t] if mask[b][t] else 0.0 for t in range(T)] for b in range(B)]
    return adv, ret


def test_gae_hand_computed():
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.1, 0.2, 0.3]]), torch.ones(1, 3), 1.0, 0.95)
    # δ2 = 1 - 0.3 = 0.7; δ1 = 0.3 - 0.2 = 0.1; δ0 = 0.2 - 0.1 = 0.1
    torch.testing.assert_close(adv, torch.tensor([[0.1 + 0.95 * 0.765, 0.1 + 0.95 * 0.7, 0.7]]))
    torch.testing.assert_close(ret, torch.tensor([[0.92675, 0.965, 1.0]]))


def test_gae_discount_applies_to_next_value():
    adv, _ = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]]), torch.ones(1, 2), gamma=0.5, lam=1.0)
    # δ1 = 1 - 2 = -1; δ0 = 0 + 0.5*2 - 0 = 1; A0 = 1 + 0.5*1*(-1) = 0.5
    torch.testing.assert_close(adv, torch.tensor([[0.5, -1.0]]))


def test_gae_padding_and_one_token_completion():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0], [1.0, 7.0, 7.0, 7.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 5.0], [0.4, 3.0, 3.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, 1.0, 0.95)
    torch.testing.assert_close(adv[0, :3], torch.tensor([0.82675, 0.765, 0.7]))
    torch.testing.assert_close(adv[1], torch.tensor([0.6, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(ret[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert adv[0, 3] == 0 and ret[0, 3] == 0


def test_gae_matches_independent_loop_with_holes():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 9, generator=g), torch.randn(5, 9, generator=g)
    mask = (torch.rand(5, 9, generator=g) > 0.3).long()
    mask[0] = 0  # an all-padding row
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    ref_adv, ref_ret = _gae_reference(rewards.tolist(), values.tolist(), mask.tolist(), 0.9, 0.8)
    torch.testing.assert_close(adv, torch.tensor(ref_adv))
    torch.testing.assert_close(ret, torch.tensor(ref_ret))


def test_gae_shape_error():
    with pytest.raises(ValueError, match="same"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))


def test_whiten_mean_zero_unit_var_over_valid_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    w = whiten(x, mask)
    valid = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    expected = (valid - valid.mean()) / valid.std(unbiased=True)
    torch.testing.assert_close(w[mask.bool()], expected, atol=1e-6, rtol=1e-6)
    assert (w[~mask.bool()] == 0).all()
    kept = whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept[mask.bool()], expected + valid.mean(), atol=1e-6, rtol=1e-6)


def test_masked_reductions_empty_and_nan_padding():
    x = torch.tensor([1.0, float("nan"), 3.0])
    mask = torch.tensor([1, 0, 1])
    assert masked_mean(x, mask) == 2.0
    assert masked_var(x, mask) == 2.0
    assert masked_mean(x, torch.zeros(3)) == 0.0
    assert masked_var(torch.tensor([5.0]), torch.tensor([1])) == 0.0


def test_masked_var_per_row_hand_values():
    x = torch.tensor([[1.0, 3.0, 5.0], [2.0, float("nan"), 8.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 0, 0]])
    # row 0: mean 3, Σ(x−μ)² = 4+0+4 = 8, /2 = 4; row 1: mean 5, 9+9 = 18, /1 = 18; row 2: one element → 0
    assert masked_var(x, mask, dim=1).tolist() == [4.0, 18.0, 0.0]
    assert masked_var(x, mask, unbiased=False, dim=1).tolist() == pytest.approx([8 / 3, 9.0, 0.0])
    # columns: 1,2,4 → mean 7/3, (16+1+25)/9 / 2 = 7/3; one element → 0; 5,8 → (2.25+2.25) / 1
    assert masked_var(x, mask, dim=0).tolist() == pytest.approx([7 / 3, 0.0, 4.5])


def test_explained_variance_hand_values():
    # R = [1, 3, 5], V = [1, 2, 6]: Var(R) = 4, R − V = [0, 1, −1] → Var = 1, EV = 1 − 1/4
    returns, values = torch.tensor([[1.0, 3.0, 5.0, 99.0]]), torch.tensor([[1.0, 2.0, 6.0, -7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(values, returns, mask).item() == pytest.approx(0.75)
    assert explained_variance(returns, returns, mask).item() == 1.0  # a perfect critic
    assert explained_variance(torch.full((1, 4), 3.0), returns, mask).item() == pytest.approx(0.0)  # a constant
    assert math.isnan(explained_variance(values, torch.full((1, 4), 2.0), mask).item())  # Var(R) = 0


# ---------------------------------------------------------------- whitening over a batch split across processes


def test_masked_moments_hand_values_and_padding_ignored():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    moments = masked_moments(x, mask)
    assert moments.dtype == torch.float64
    assert moments.tolist() == [3.0, 7.0, 21.0]  # n = 3, Σx = 1 + 2 + 4, Σx² = 1 + 4 + 16
    mean, var = moments_mean_var(moments)
    assert mean.item() == pytest.approx(7 / 3) and var.item() == pytest.approx((21 - 3 * (7 / 3) ** 2) / 2)
    assert moments_mean_var(moments, unbiased=False)[1].item() == pytest.approx((21 - 3 * (7 / 3) ** 2) / 3)


def test_moments_mean_var_edge_cases_match_masked_mean_and_var():
    empty = masked_moments(torch.tensor([5.0]), torch.tensor([0]))
    assert [t.item() for t in moments_mean_var(empty)] == [0.0, 0.0]  # as masked_mean / masked_var: 0, not NaN
    one = masked_moments(torch.tensor([5.0]), torch.tensor([1]))
    assert [t.item() for t in moments_mean_var(one)] == [5.0, 0.0]
    assert moments_mean_var(one, unbiased=False)[1].item() == 0.0
    constant = masked_moments(torch.full((7, 9), 0.1), torch.ones(7, 9))  # one-pass rounding error → exactly 0
    assert moments_mean_var(constant)[1].item() == 0.0
    # a batch of moments (one row per quantity) reduces row-wise
    stacked = torch.stack([one, masked_moments(torch.tensor([1.0, 3.0]), torch.ones(2))])
    means, variances = moments_mean_var(stacked)
    assert means.tolist() == [5.0, 2.0] and variances.tolist() == [0.0, 2.0]


def test_whiten_with_stats_hand_values_and_equals_whiten():
    x = torch.tensor([[1.0, 3.0, 7.0]])
    mask = torch.tensor([[1, 1, 0]])
    out = whiten_with_stats(x, mask, mean=2.0, var=4.0, eps=0.0)
    assert out.tolist() == [[-0.5, 0.5, 0.0]]
    assert whiten_with_stats(x, mask, 2.0, 4.0, shift_mean=False, eps=0.0).tolist() == [[1.5, 2.5, 0.0]]
    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(6, 11, generator=g) * 3 + 1, torch.rand(6, 11, generator=g) > 0.3
    # whiten is whiten_with_stats with the batch's own masked mean and unbiased variance, bit for bit
    assert torch.equal(whiten(x, mask), whiten_with_stats(x, mask, masked_mean(x, mask), masked_var(x, mask)))
    mean, var = moments_mean_var(masked_moments(x, mask))
    torch.testing.assert_close(whiten_with_stats(x, mask, mean, var), whiten(x, mask), atol=1e-6, rtol=1e-6)


def test_whitening_a_split_batch_with_summed_moments_equals_whitening_the_whole():
    """Two "ranks" holding rows of different lengths (7 valid tokens vs 2): summing their moments (the all-reduce)
    and whitening each part with the result gives the whole batch's whitening; whitening each part alone does not."""
    x = torch.tensor([[0.5, 1.5, 2.0, -1.0], [3.0, 2.5, 1.0, 9.0], [-2.0, 9.0, 9.0, 9.0], [0.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    whole = whiten(x, mask)
    parts = [(x[:2], mask[:2]), (x[2:], mask[2:])]
    mean, var = moments_mean_var(masked_moments(*parts[0]) + masked_moments(*parts[1]))
    valid = x[mask.bool()].double()
    assert mean.item() == pytest.approx(valid.mean().item()) and var.item() == pytest.approx(valid.var().item())
    split = torch.cat([whiten_with_stats(xp, mp, mean, var) for xp, mp in parts])
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-6)
    per_part = torch.cat([whiten(xp, mp) for xp, mp in parts])
    assert (per_part - whole).abs().max() > 0.5


# ---------------------------------------------------------------- group advantages (GRPO)


def _trl_group_advantages(rewards, G, scale):
    """TRL 1.16's GRPOTrainer formula, written out independently: nanmean/nanstd per group, eps 1e-4."""
    from trl.trainer.utils import nanstd

    grouped = rewards.view(-1, G)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(G)
    if scale == "group":
        std = nanstd(grouped, dim=1).repeat_interleave(G)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


def test_group_advantages_hand_computed():
    adv = group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), num_generations=2)
    s = math.sqrt(0.5)
    torch.testing.assert_close(adv, torch.tensor([0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.0, 0.0]))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_trl(scale):
    rewards = torch.randn(12, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(group_advantages(rewards, 4, scale=scale), _trl_group_advantages(rewards, 4, scale))


def test_group_advantages_edge_cases():
    assert torch.equal(group_advantages(torch.tensor([2.0, 5.0]), 1), torch.zeros(2))  # one-element groups
    assert torch.equal(group_advantages(torch.tensor([3.0, 3.0, 3.0]), 3), torch.zeros(3))  # equal rewards
    adv = group_advantages(torch.tensor([1.0, float("nan"), 0.0]), 3, scale="none")
    torch.testing.assert_close(adv, torch.tensor([0.5, 0.0, -0.5]))
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 2, scale="bogus")


# ---------------------------------------------------------------- process advantages


def _process_reference(step_rewards, step_ends, step_mask, G, T, scale, eps=1e-4):
    """Slow loop: pool per group, normalise, then for every token sum the steps that end at or after it."""
    B = len(step_rewards)
    out = [[0.0] * T for _ in range(B)]
    all_valid = [r for b in range(B) for r, m in zip(step_rewards[b], step_mask[b]) if m]
    for g0 in range(0, B, G):
        pool = [r for b in range(g0, g0 + G) for r, m in zip(step_rewards[b], step_mask[b]) if m]
        if not pool:
            continue
        mean = sum(pool) / len(pool)
        src = pool if scale == "group" else all_valid
        mu = sum(src) / len(src)
        std = math.sqrt(sum((r - mu) ** 2 for r in src) / (len(src) - 1)) if len(src) > 1 else 0.0
        for b in range(g0, g0 + G):
            for r, e, m in zip(step_rewards[b], step_ends[b], step_mask[b]):
                if not m:
                    continue
                normed = (r - mean) / (std + eps) if scale != "none" else r - mean
                for t in range(T):
                    if e >= t:
                        out[b][t] += normed
    return out


def test_process_advantages_hand_computed_three_and_one_steps():
    # completion 0: 3 steps (rewards 1, 0, 1; ending at tokens 1, 3, 5); completion 1: one step ending at token 2
    step_rewards = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    step_ends = torch.tensor([[1, 3, 5], [2, 0, 0]])
    step_mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    raw = process_advantages(step_rewards, step_ends, step_mask, 2, 7, scale="none")
    # pooled mean 0.5 → normalised steps [0.5, -0.5, 0.5] and [-0.5]; each token sums the steps ending at/after it
    expected = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0], [-0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(raw, expected)
    std = math.sqrt(1.0 / 3.0)  # unbiased std of the pool {1, 0, 1, 0}
    scaled = process_advantages(step_rewards, step_ends, step_mask, 2, 7, scale="group")
    torch.testing.assert_close(scaled, expected / (std + 1e-4))


def test_process_advantages_future_not_past_sum():
    # one completion, two steps: a bad first step then a good final step, plus a neutral peer
    adv = process_advantages(torch.tensor([[0.0, 1.0], [0.5, 0.5]]), torch.tensor([[0, 1], [0, 1]]),
                             torch.ones(2, 2), 2, 2, scale="none")
    # mean 0.5: row 0 normalised [-0.5, 0.5]: token 0 gets both (0), token 1 only the last (0.5)
    torch.testing.assert_close(adv[0], torch.tensor([0.0, 0.5]))


def test_process_advantages_equal_rewards_and_single_step_pool_are_zero():
    ones = torch.ones(4, 3)
    adv = process_advantages(ones * 0.7, torch.tensor([[0, 1, 2]] * 4), ones, 2, 5)
    assert torch.equal(adv, torch.zeros(4, 5)) and not torch.isnan(adv).any()
    single = process_advantages(torch.tensor([[2.0]]), torch.tensor([[3]]), torch.ones(1, 1), 1, 4)
    assert torch.equal(single, torch.zeros(1, 4))


def test_process_advantages_padding_steps_and_zero_step_completion():
    base = process_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0, 2], [1, 0]]),
                              torch.tensor([[1, 1], [1, 0]]), 2, 4)
    padded = process_advantages(torch.tensor([[1.0, 0.0, 99.0], [0.0, float("nan"), -7.0]]),
                                torch.tensor([[0, 2, 3], [1, 3, 3]]), torch.tensor([[1, 1, 0], [1, 0, 0]]), 2, 4)
    torch.testing.assert_close(base, padded)
    none = process_advantages(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2), 2, 3)
    assert torch.equal(none, torch.zeros(2, 3))


def test_process_advantages_single_step_equals_grpo_broadcast():
    rewards = torch.randn(8, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([5, 3, 6, 1, 2, 6, 4, 6])
    adv = process_advantages(rewards[:, None], (lengths - 1)[:, None], torch.ones(8, 1), 4, 6)
    grpo = group_advantages(rewards, 4)
    mask = torch.arange(6)[None, :] < lengths[:, None]
    torch.testing.assert_close(adv, torch.where(mask, grpo[:, None].expand(8, 6), torch.zeros(8, 6)))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_process_advantages_match_independent_loop(scale):
    rng = random.Random(4)
    B, S, T, G = 6, 4, 10, 3
    rewards = [[rng.uniform(-1, 1) for _ in range(S)] for _ in range(B)]
    ends = [sorted(rng.randrange(T) for _ in range(S)) for _ in range(B)]
    mask = [[int(rng.random() > 0.25) for _ in range(S)] for _ in range(B)]
    adv = process_advantages(torch.tensor(rewards), torch.tensor(ends), torch.tensor(mask), G, T, scale=scale)
    torch.testing.assert_close(adv, torch.tensor(_process_reference(rewards, ends, mask, G, T, scale)))


def test_process_advantages_bad_input():
    with pytest.raises(ValueError, match="step_ends"):
        process_advantages(torch.ones(2, 1), torch.tensor([[5], [0]]), torch.ones(2, 1), 2, 5)
    with pytest.raises(ValueError, match="shape"):
        process_advantages(torch.ones(2, 1), torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 1), 2, 5)
    with pytest.raises(ValueError, match="global"):
        process_advantages(torch.ones(3, 1), torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1), 2, 5)
