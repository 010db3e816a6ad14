"""Action distributions and losses with hand-derived gradients.

Every function returns the value together with its gradient with respect to the network-facing
inputs (logits, means, log-std, predictions), so an agent chains them straight into
:meth:`actors.rl.nn.MLP.backward`. ``tests/actors/rl/test_gradcheck.py`` checks each derivation
against central finite differences in float64.
"""

from __future__ import annotations

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


# -- categorical --------------------------------------------------------------------------------
def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def categorical_sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling: one uniform per row, so the RNG stream does not depend on the
    number of actions."""
    logp = log_softmax(logits)
    cdf = np.cumsum(np.exp(logp), axis=-1)
    u = rng.random(logits.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=-1), logits.shape[-1] - 1)


def categorical_logp_entropy(logits: np.ndarray, actions: np.ndarray):
    """``log pi(a|s)`` and entropy per row, plus ``d logp/d logits`` and ``d H/d logits``."""
    logp_all = log_softmax(logits)
    probs = np.exp(logp_all)
    rows = np.arange(logits.shape[0])
    logp = logp_all[rows, actions]
    entropy = -(probs * logp_all).sum(axis=-1)
    dlogp = -probs
    dlogp[rows, actions] += 1.0
    # dH/dz_j = -p_j (log p_j + H)
    dentropy = -probs * (logp_all + entropy[:, None])
    return logp, entropy, dlogp, dentropy


# -- diagonal Gaussian --------------------------------------------------------------------------
def gaussian_sample(mean: np.ndarray, log_std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return mean + np.exp(log_std) * rng.standard_normal(mean.shape).astype(mean.dtype)


def gaussian_logp_entropy(mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray):
    """Log-density summed over action dimensions and entropy per row, with
    ``d logp/d mean`` (per row), ``d logp/d log_std`` (per row) and ``d H/d log_std``."""
    inv_var = np.exp(-2.0 * log_std)
    diff = actions - mean
    z2 = diff * diff * inv_var
    logp = (-0.5 * z2 - log_std - 0.5 * LOG_2PI).sum(axis=-1)
    entropy = np.full(mean.shape[0], (log_std + 0.5 * (1.0 + LOG_2PI)).sum(), dtype=mean.dtype)
    dlogp_dmean = diff * inv_var
    dlogp_dlogstd = z2 - 1.0
    dentropy_dlogstd = np.ones_like(log_std)
    return logp, entropy, dlogp_dmean, dlogp_dlogstd, dentropy_dlogstd


# -- losses -------------------------------------------------------------------------------------
def ppo_clip_loss(logp: np.ndarray, old_logp: np.ndarray, adv: np.ndarray, clip: float):
    """PPO's clipped surrogate ``-mean(min(r A, clip(r, 1-e, 1+e) A))`` and its gradient w.r.t.
    ``logp``; also the fraction of rows where clipping took the gradient away (a diagnostic)."""
    ratio = np.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = np.clip(ratio, 1.0 - clip, 1.0 + clip) * adv
    loss = -np.minimum(unclipped, clipped).mean()
    # The min picks the unclipped term (gradient r*A) unless the clipped one is strictly smaller,
    # in which case the clipped term is constant in logp.
    active = unclipped <= clipped
    grad = -(active * unclipped) / logp.shape[0]
    return float(loss), grad, float(1.0 - active.mean())


def policy_gradient_loss(logp: np.ndarray, adv: np.ndarray):
    """Vanilla actor loss ``-mean(logp * A)`` (A2C) and its gradient w.r.t. ``logp``."""
    n = logp.shape[0]
    return float(-(logp * adv).mean()), -adv / n


def value_loss(values: np.ndarray, targets: np.ndarray):
    """``0.5 * mean((v - target)^2)`` and its gradient w.r.t. ``values``."""
    diff = values - targets
    return float(0.5 * (diff * diff).mean()), diff / values.shape[0]


def huber_loss(pred: np.ndarray, target: np.ndarray, delta: float = 1.0):
    """Mean Huber (smooth-L1) loss and its gradient w.r.t. ``pred``: quadratic within ``delta``,
    linear outside, so single huge TD errors cannot blow up a DQN update."""
    diff = pred - target
    absd = np.abs(diff)
    quad = np.minimum(absd, delta)
    loss = (0.5 * quad * quad + delta * (absd - quad)).mean()
    return float(loss), np.clip(diff, -delta, delta) / pred.shape[0]


# -- tanh-squashed Gaussian (SAC) -----------------------------------------------------------------
#: SAC's bounds on the actor's log-std (Stable-Baselines3's LOG_STD_MIN / LOG_STD_MAX).
LOG_STD_BOUNDS = (-20.0, 2.0)
#: Keeps ``log(1 - tanh(u)^2)`` finite where tanh saturates (SB3's epsilon).
SQUASH_EPS = 1e-6


def squashed_gaussian(mean: np.ndarray, log_std_raw: np.ndarray, noise: np.ndarray):
    """Reparameterised sample ``a = tanh(mean + exp(log_std) * noise)`` with ``log_std`` the raw
    output clipped to :data:`LOG_STD_BOUNDS`, and ``log pi(a)`` summed over action dimensions,
    corrected for the tanh. Returns ``(a, logp, cache)``; :func:`squashed_gaussian_backward` turns
    gradients with respect to ``a`` and ``logp`` into gradients with respect to the raw outputs."""
    log_std = np.clip(log_std_raw, *LOG_STD_BOUNDS)
    std = np.exp(log_std)
    a = np.tanh(mean + std * noise)
    one_minus = 1.0 - a * a
    logp = (-0.5 * noise * noise - log_std - 0.5 * LOG_2PI).sum(axis=-1) \
        - np.log(one_minus + SQUASH_EPS).sum(axis=-1)
    inside = (log_std_raw > LOG_STD_BOUNDS[0]) & (log_std_raw < LOG_STD_BOUNDS[1])
    return a, logp, (a, one_minus, std, noise, inside)


def squashed_gaussian_backward(cache, g_a: np.ndarray, g_logp: np.ndarray):
    """``(d/d mean, d/d log_std_raw)`` of ``sum(g_a * a) + sum(g_logp * logp)``, the noise held
    fixed (the reparameterisation trick). With ``u = mean + std * noise``:
    ``d logp / d u = 2 a (1 - a^2) / (1 - a^2 + eps)`` (the tanh correction), ``d a / d u = 1 - a^2``,
    ``d u / d mean = 1``, ``d u / d log_std = std * noise``, and ``d logp / d log_std`` has an
    extra ``-1`` from the Gaussian's normaliser."""
    a, one_minus, std, noise, inside = cache
    g_u = g_logp[:, None] * (2.0 * a * one_minus / (one_minus + SQUASH_EPS)) + g_a * one_minus
    g_mean = g_u
    g_log_std = (g_u * std * noise - g_logp[:, None]) * inside
    return g_mean, g_log_std
