"""Finite-difference checks of every hand-derived gradient the agents learn from (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from actors.rl.agents import losses
from actors.rl.agents.actor_critic import ActorCritic
from actors.rl.agents.dqn import Args as DQNArgs
from actors.rl.agents.dqn import QLearner

EPS = 1e-6


def numeric_grad(f, x: np.ndarray, indices=None) -> np.ndarray:
    """Central differences of scalar ``f()`` with respect to entries of ``x`` (perturbed in place)."""
    indices = range(x.size) if indices is None else indices
    out = []
    for i in indices:
        old = x.flat[i]
        x.flat[i] = old + EPS
        up = f()
        x.flat[i] = old - EPS
        down = f()
        x.flat[i] = old
        out.append((up - down) / (2 * EPS))
    return np.asarray(out)


def assert_close(analytic, numeric, rtol=1e-5, atol=1e-7):
    np.testing.assert_allclose(np.asarray(analytic).ravel(), numeric.ravel(), rtol=rtol, atol=atol)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_categorical_logp_and_entropy(rng):
    logits = rng.standard_normal((7, 4))
    actions = rng.integers(0, 4, size=7)
    w = rng.standard_normal(7)  # a random linear functional checks every row at once
    _, _, dlogp, dent = losses.categorical_logp_entropy(logits, actions)
    assert_close(w[:, None] * dlogp,
                 numeric_grad(lambda: (w * losses.categorical_logp_entropy(logits, actions)[0]).sum(), logits))
    assert_close(w[:, None] * dent,
                 numeric_grad(lambda: (w * losses.categorical_logp_entropy(logits, actions)[1]).sum(), logits))


def test_categorical_logp_matches_definition(rng):
    logits = rng.standard_normal((5, 3)) * 3
    actions = rng.integers(0, 3, size=5)
    logp, ent, _, _ = losses.categorical_logp_entropy(logits, actions)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(logp, np.log(p[np.arange(5), actions]))
    np.testing.assert_allclose(ent, -(p * np.log(p)).sum(axis=1))


def test_gaussian_logp_and_entropy(rng):
    mean = rng.standard_normal((6, 3))
    log_std = rng.standard_normal(3) * 0.3
    actions = mean + rng.standard_normal((6, 3))
    w = rng.standard_normal(6)
    logp, ent, dmean, dls, dent = losses.gaussian_logp_entropy(mean, log_std, actions)
    f_logp = lambda: (w * losses.gaussian_logp_entropy(mean, log_std, actions)[0]).sum()  # noqa: E731
    assert_close(w[:, None] * dmean, numeric_grad(f_logp, mean))
    assert_close((w[:, None] * dls).sum(axis=0), numeric_grad(f_logp, log_std))
    assert_close(dent, numeric_grad(lambda: losses.gaussian_logp_entropy(mean, log_std, actions)[1][0], log_std))
    # Against the textbook density.
    std = np.exp(log_std)
    ref = (-0.5 * ((actions - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi))).sum(axis=1)
    np.testing.assert_allclose(logp, ref)
    np.testing.assert_allclose(ent, np.full(6, (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum()))


def test_ppo_clip_loss_both_branches(rng):
    n, clip = 40, 0.2
    old = rng.standard_normal(n)
    # Ratios spread from 0.5 to 1.5 so both clipped and unclipped rows occur, kept away from
    # the kinks at 1 +- clip where the loss is not differentiable.
    ratio = np.linspace(0.5, 1.5, n)
    ratio = ratio[np.abs(np.abs(ratio - 1.0) - clip) > 0.02]
    old = old[: ratio.size]
    logp = old + np.log(ratio)
    adv = rng.standard_normal(ratio.size)
    loss, grad, clip_frac = losses.ppo_clip_loss(logp, old, adv, clip)
    assert 0.0 < clip_frac < 1.0
    assert_close(grad, numeric_grad(lambda: losses.ppo_clip_loss(logp, old, adv, clip)[0], logp))


def test_policy_gradient_value_and_huber_losses(rng):
    logp, adv = rng.standard_normal(9), rng.standard_normal(9)
    assert_close(losses.policy_gradient_loss(logp, adv)[1],
                 numeric_grad(lambda: losses.policy_gradient_loss(logp, adv)[0], logp))
    v, t = rng.standard_normal(9), rng.standard_normal(9)
    assert_close(losses.value_loss(v, t)[1], numeric_grad(lambda: losses.value_loss(v, t)[0], v))
    pred = np.array([-3.0, -1.5, -0.4, 0.0, 0.3, 0.9, 2.5, 7.0])
    target = np.zeros_like(pred)
    loss, grad = losses.huber_loss(pred, target, 1.0)
    assert_close(grad, numeric_grad(lambda: losses.huber_loss(pred, target, 1.0)[0], pred))
    np.testing.assert_allclose(loss, np.mean([2.5, 1.0, 0.08, 0.0, 0.045, 0.405, 2.0, 6.5]))


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-2.0, 2.0, (2,))],
                         ids=["discrete", "box"])
@pytest.mark.parametrize("clip", [0.2, None], ids=["ppo", "a2c"])
def test_actor_critic_chain_rule(rng, action_space, clip):
    """The full loss (policy + entropy + value) through both MLPs and log_std, w.r.t. every kind
    of parameter in the flat vector."""
    model = ActorCritic(5, action_space, (8, 6), "tanh", rng, log_std_init=-0.3, dtype=np.float64)
    model.flat += rng.standard_normal(model.flat.size) * 0.3  # leave the near-uniform init
    n = 12
    obs = rng.standard_normal((n, 5))
    if isinstance(action_space, spaces.Discrete):
        actions = rng.integers(0, 3, size=n)
    else:
        actions = rng.standard_normal((n, 2))
    # Old log-probs close to the current ones keep ratios inside the smooth region.
    old = _logp(model, obs, actions) + rng.uniform(-0.1, 0.1, size=n)
    adv, ret = rng.standard_normal(n), rng.standard_normal(n)

    def loss():
        return model.loss_and_grads(obs, actions, old, adv, ret, clip=clip, ent_coef=0.05, vf_coef=0.7)[0]

    _, grads, _ = model.loss_and_grads(obs, actions, old, adv, ret, clip=clip, ent_coef=0.05, vf_coef=0.7)
    (g,) = grads
    idx = np.unique(np.concatenate([rng.choice(model.flat.size, 60, replace=False),
                                    np.arange(model.flat.size - 4, model.flat.size)]))
    assert_close(g[idx], numeric_grad(loss, model.flat, idx))


def _logp(model, obs, actions):
    out = model.actor.forward(obs)
    if model.discrete:
        return losses.categorical_logp_entropy(out, actions)[0]
    return losses.gaussian_logp_entropy(out, model.log_std, actions)[0]


@pytest.mark.parametrize("double_q", [False, True])
def test_dqn_td_loss_gradient(rng, double_q):
    args = DQNArgs(hidden_sizes=(8, 8), double_q=double_q, huber_delta=0.5)
    learner = QLearner(4, 3, args, rng, dtype=np.float64)
    learner.flat += rng.standard_normal(learner.flat.size) * 0.1
    batch = (rng.standard_normal((16, 4)), rng.integers(0, 3, size=16), rng.standard_normal(16) * 3,
             rng.standard_normal((16, 4)), (rng.random(16) < 0.3).astype(np.float64))
    (g,) = learner.loss_and_grads(*batch)[1]
    # The target network is held fixed, so only online parameters are differentiated.
    assert_close(g, numeric_grad(lambda: learner.loss_and_grads(*batch)[0], learner.flat))


# -- SAC ------------------------------------------------------------------------------------------
def test_mlp_input_gradient(rng):
    from actors.rl.nn import MLP

    for activation in ("relu", "tanh"):
        net = MLP([5, 7, 6, 2], activation, rng, dtype=np.float64)
        x = rng.standard_normal((4, 5))
        w = rng.standard_normal((4, 2))
        _, cache = net.forward_cache(x)

        def f(net=net, x=x, w=w):
            return float((net.forward(x) * w).sum())

        assert_close(net.input_grad(cache, w), numeric_grad(f, x))


@pytest.mark.parametrize("log_std_offset", [0.0, -25.0, 5.0])  # inside the bounds, clipped below, above
def test_squashed_gaussian_sample_and_log_density(rng, log_std_offset):
    mean = rng.standard_normal((6, 3))
    log_std = rng.standard_normal((6, 3)) * 0.5 + log_std_offset
    # Small noise where the std is clipped at e^2: deep in tanh's saturation 1 - a^2 loses the
    # digits central differences need (the analytic form is SB3's; the numeric one would be wrong).
    noise = rng.standard_normal((6, 3)) * (0.1 if log_std_offset > 0 else 1.0)
    w_a, w_l = rng.standard_normal((6, 3)), rng.standard_normal(6)

    def f():
        a, logp, _ = losses.squashed_gaussian(mean, log_std, noise)
        return float((w_a * a).sum() + (w_l * logp).sum())

    _, _, cache = losses.squashed_gaussian(mean, log_std, noise)
    g_mean, g_log_std = losses.squashed_gaussian_backward(cache, w_a, w_l)
    assert_close(g_mean, numeric_grad(f, mean), rtol=1e-4)
    assert_close(g_log_std, numeric_grad(f, log_std), rtol=1e-4)


def _sac(rng):
    from actors.rl.agents.sac import Args as SACArgs
    from actors.rl.agents.sac import SoftActorCritic

    learner = SoftActorCritic(3, 2, SACArgs(hidden_sizes=(8, 8)), rng, dtype=np.float64)
    learner.critics.target_flat += rng.standard_normal(learner.critics.target_flat.size) * 0.1
    batch = (rng.standard_normal((12, 3)), np.tanh(rng.standard_normal((12, 2))), rng.standard_normal(12),
             rng.standard_normal((12, 3)), (rng.random(12) < 0.3).astype(np.float64))
    return learner, batch


def test_sac_critic_loss_gradient(rng):
    learner, batch = _sac(rng)
    noise = rng.standard_normal((12, 2))
    (g,) = learner.critic_loss_and_grads(batch, noise, 0.3)[1]
    # The targets (target critics and the next action's log-density) are held fixed.
    numeric = numeric_grad(lambda: learner.critic_loss_and_grads(batch, noise, 0.3)[0], learner.critics.flat)
    assert_close(g, numeric, rtol=1e-4, atol=1e-7)


def test_sac_actor_loss_gradient_through_the_critics(rng):
    learner, batch = _sac(rng)
    obs, noise = batch[0], rng.standard_normal((12, 2))
    (g,) = learner.actor_loss_and_grads(obs, noise, 0.2)[1]
    numeric = numeric_grad(lambda: learner.actor_loss_and_grads(obs, noise, 0.2)[0], learner.actor_flat)
    assert_close(g, numeric, rtol=1e-4, atol=1e-7)


def _td3(rng):
    from actors.rl.agents.td3 import Args as TD3Args
    from actors.rl.agents.td3 import TwinDelayed

    learner = TwinDelayed(3, 2, TD3Args(hidden_sizes=(8, 8)), rng, dtype=np.float64)
    learner.critics.target_flat += rng.standard_normal(learner.critics.target_flat.size) * 0.1
    batch = (rng.standard_normal((12, 3)), np.tanh(rng.standard_normal((12, 2))), rng.standard_normal(12),
             rng.standard_normal((12, 3)), (rng.random(12) < 0.3).astype(np.float64))
    return learner, batch


def test_td3_critic_loss_gradient(rng):
    learner, batch = _td3(rng)
    smoothing = rng.standard_normal((12, 2)) * 0.2
    (g,) = learner.critic_loss_and_grads(batch, smoothing)[1]
    numeric = numeric_grad(lambda: learner.critic_loss_and_grads(batch, smoothing)[0], learner.critics.flat)
    assert_close(g, numeric, rtol=1e-4, atol=1e-7)


def test_td3_actor_loss_gradient_through_the_critic(rng):
    learner, batch = _td3(rng)
    (g,) = learner.actor_loss_and_grads(batch[0])[1]
    numeric = numeric_grad(lambda: learner.actor_loss_and_grads(batch[0])[0], learner.actor_flat)
    assert_close(g, numeric, rtol=1e-4, atol=1e-7)
