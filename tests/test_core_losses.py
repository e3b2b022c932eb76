"""PPO policy loss, clipped value loss, KL estimators, RLHF token rewards, adaptive KL."""

import math

import pytest
import torch

from trl_ext.core import (
    AdaptiveKLController,
    clipped_value_loss,
    kl_k1,
    kl_k3,
    ppo_policy_loss,
    rlhf_token_rewards,
)


def _value_loss_reference(v, v_old, r, m, eps):
    """Independent loop: per element max of squared errors, then the mean over valid elements."""
    losses, clipped = [], []
    for vi, oi, ri, mi in zip(v.flatten().tolist(), v_old.flatten().tolist(), r.flatten().tolist(), m.flatten().tolist()):
        if not mi:
            continue
        v_clip = oi + min(max(vi - oi, -eps), eps)
        e_un, e_cl = (vi - ri) ** 2, (v_clip - ri) ** 2
        losses.append(max(e_un, e_cl))
        clipped.append(1.0 if e_cl > e_un else 0.0)
    return 0.5 * sum(losses) / len(losses), sum(clipped) / len(clipped)


def test_value_loss_takes_elementwise_max_not_min():
    # V=1.9 moved far from V_old=0: the clipped prediction 0.5 is worse (err 2.25) than the raw one (0.01)
    loss, clipfrac = clipped_value_loss(torch.tensor([[1.9]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]),
                                        torch.ones(1, 1), cliprange_value=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.5 * 2.25))
    assert clipfrac == 1.0


def test_inactive_value_clip_is_exact_and_counts_nothing():
    """Inside the clip range the clamped prediction is V itself, bit for bit: vf_clipfrac is exactly 0 and the loss
    is the unclipped one (``V_old + clamp(V − V_old, ·)`` would differ from V by rounding and count ~6% of tokens)."""
    g = torch.Generator().manual_seed(0)
    values = torch.randn(64, 32, generator=g) * 3
    old_values = values + torch.randn(64, 32, generator=g)
    returns = torch.randn(64, 32, generator=g)
    mask = torch.ones(64, 32)
    loss, clipfrac = clipped_value_loss(values, old_values, returns, mask, cliprange_value=1e6)
    assert clipfrac.item() == 0.0
    assert torch.equal(loss, 0.5 * ((values - returns) ** 2).mean())
    rounding = old_values + torch.clamp(values - old_values, -1e6, 1e6)
    assert not torch.equal(rounding, values)  # the old formula's V_clip is not V: this test can tell them apart
    _, tight = clipped_value_loss(values + 1.0, values, returns, mask, cliprange_value=1e-6)
    hand = (((values + 1e-6 - returns) ** 2) > ((values + 1.0 - returns) ** 2)).float().mean()
    assert tight.item() == pytest.approx(hand.item()) and 0.3 < tight.item() < 0.9


def test_vf_clipfrac_measured_before_clamping():
    # the clamp is active (|V - V_old| = 2 > 0.5) but the clipped error (0.25) is not larger than the raw (1.0):
    # a clipfrac computed from the clamp alone would say 1
    loss, clipfrac = clipped_value_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]),
                                        torch.ones(1, 1), cliprange_value=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.5))
    assert clipfrac == 0.0


def test_value_loss_mean_of_max_matches_loop_with_padding():
    g = torch.Generator().manual_seed(0)
    v, v_old, r = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    mask = (torch.rand(4, 7, generator=g) > 0.3).long()
    v_pad = torch.where(mask.bool(), v, torch.full_like(v, 1e6))  # garbage in padding must not matter
    loss, clipfrac = clipped_value_loss(v_pad, v_old, r, mask, cliprange_value=0.2)
    ref_loss, ref_frac = _value_loss_reference(v, v_old, r, mask, 0.2)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert clipfrac.item() == pytest.approx(ref_frac)
    assert 0 < ref_frac < 1


def test_value_loss_without_clipping_and_bad_range():
    v, r = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    loss, frac = clipped_value_loss(v, torch.zeros(1, 2), r, torch.ones(1, 2), cliprange_value=None)
    torch.testing.assert_close(loss, torch.tensor(1.0))  # ½ · mean(4, 0)
    assert frac == 0.0
    with pytest.raises(ValueError, match="cliprange_value"):
        clipped_value_loss(v, v, r, torch.ones(1, 2), cliprange_value=0.0)


def test_value_loss_gradient_flows_only_through_values():
    v = torch.tensor([[0.3, -0.2]], requires_grad=True)
    loss, _ = clipped_value_loss(v, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), 0.2)
    loss.backward()
    assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_policy_loss_is_pessimistic_max():
    # negative advantage, ratio above 1+ε: the unclipped term (1.5) is the max and is kept
    logp, old = torch.tensor([[math.log(1.5)]]), torch.zeros(1, 1)
    loss, stats = ppo_policy_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 1), 0.2)
    torch.testing.assert_close(loss, torch.tensor(1.5))
    assert stats["pg_clipfrac"] == 0.0
    # positive advantage, ratio above 1+ε: the clipped term −1.2 is the max
    loss, stats = ppo_policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 1), 0.2)
    torch.testing.assert_close(loss, torch.tensor(-1.2))
    assert stats["pg_clipfrac"] == 1.0


def test_policy_loss_asymmetric_clip_and_token_advantages():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, _ = ppo_policy_loss(logp, torch.zeros(1, 3), adv, torch.tensor([[1, 1, 0]]), epsilon_low=0.2, epsilon_high=0.28)
    # token 0: −min(1.5, 1.28) = −1.28; token 1: max(0.5, clip(0.5)=0.8) = 0.8; token 2 masked
    torch.testing.assert_close(loss, torch.tensor((-1.28 + 0.8) / 2))


def test_policy_loss_approx_kl_and_gradient():
    logp = torch.tensor([[-0.5, -1.0]], requires_grad=True)
    old = torch.tensor([[-0.7, -1.0]])
    loss, stats = ppo_policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), 0.2)
    r = math.exp(0.2)
    assert stats["approx_kl"].item() == pytest.approx(((r - 1) - 0.2) / 2, rel=1e-5)
    loss.backward()
    assert logp.grad[0, 1] != 0  # unclipped token gets a gradient
    assert logp.grad[0, 0] == 0  # token clipped at 1+ε with positive advantage gets none (ratio 1.22 > 1.2)


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.1])
    ref = torch.tensor([-1.5, -1.0, -0.1])
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([0.5, -1.0, 0.0]))
    ratio = torch.exp(ref - logp)
    torch.testing.assert_close(kl_k3(logp, ref), ratio - 1 - torch.log(ratio))
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_rlhf_token_rewards_score_on_last_valid_token():
    logp_old = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    logp_ref = torch.tensor([[-1.5, -2.0, -1.0], [-0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    rewards, kl = rlhf_token_rewards(torch.tensor([1.0, 2.0, 3.0]), logp_old, logp_ref, mask, beta=0.1)
    expected_kl = torch.tensor([[-0.05, 0.0, 0.2], [0.05, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(rewards, expected_kl + torch.tensor([[0, 0, 1.0], [2.0, 0, 0], [0, 0, 0]]))


def test_adaptive_kl_controller_moves_towards_target():
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    assert ctl.update(current_kl=5.0, n_steps=10) > 0.1  # KL too high → β up (error clipped at 0.2)
    torch.testing.assert_close(torch.tensor(ctl.value), torch.tensor(0.1 * 1.02))
    low = AdaptiveKLController(0.1, target=1.0, horizon=100)
    assert low.update(current_kl=0.5, n_steps=10) < 0.1
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0)
