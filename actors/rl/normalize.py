"""Running observation and reward normalisation while training, as Stable-Baselines3's
``VecNormalize`` does it, and the frozen statistics a trained policy keeps.

Observations: a running mean and variance over every observation the environments returned;
the learner sees ``clip((obs - mean) / sqrt(var + epsilon), ±clip_obs)``. Rewards: each reward is
divided by the running standard deviation of the discounted return (``ret = ret * gamma + r``, reset
at an episode's end) and clipped to ``±clip_reward``; it is never centred, so the sign of a reward is
kept. Episode returns reported, curves and evaluations always use the environment's own rewards.

At the end of training the observation statistics are frozen into the policy
(:class:`actors.rl.policy.NormalizedPolicy`), saved with it, and applied by every evaluation, so a
policy scores the same wherever it is evaluated. Reward statistics only shape learning and are not
part of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl.errors import RLError
from actors.rl.policy import NormalizedPolicy

EPSILON = 1e-8


class RunningMeanStd:
    """Mean and (population) variance of everything seen, merged batch by batch (Chan et al.'s
    parallel update), in float64; starts from one pseudo-observation of mean 0 and variance 1 as
    VecNormalize's does, so the first batches are not divided by a variance of zero."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64).reshape(-1, *self.mean.shape)
        n = batch.shape[0]
        if n == 0:
            return
        b_mean, b_var = batch.mean(axis=0), batch.var(axis=0)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total


@dataclass(frozen=True)
class Settings:
    """What an agent's hyperparameters ask for (each agent's ``Args`` carries these fields)."""

    obs: bool
    reward: bool
    clip_obs: float
    clip_reward: float
    gamma: float

    @classmethod
    def of(cls, args) -> Settings:
        return cls(bool(getattr(args, "normalize_obs", False)), bool(getattr(args, "normalize_reward", False)),
                   float(getattr(args, "clip_obs", 10.0)), float(getattr(args, "clip_reward", 10.0)),
                   float(getattr(args, "gamma", 0.99)))


@dataclass
class ObservationArgs:
    """The observation-normalisation hyperparameters every network agent takes."""

    normalize_obs: bool = False
    """normalise observations by their running mean and variance (SB3's VecNormalize); the statistics are saved in the
    model and applied by every evaluation"""
    clip_obs: float = 10.0
    """normalised observations are clipped to +-clip_obs (VecNormalize's default)"""


@dataclass
class Args(ObservationArgs):
    """Observation and reward normalisation, for the agents that learn from rewards step by step."""

    normalize_reward: bool = False
    """divide rewards by the running std of the discounted return while learning (never centred; reported returns
    stay the environment's)"""
    clip_reward: float = 10.0
    """scaled rewards are clipped to +-clip_reward (VecNormalize's default)"""


def check(args) -> None:
    """Refuse clip bounds that would silently disable or distort the normalisation."""
    for name in ("clip_obs", "clip_reward"):
        value = getattr(args, name, None)
        if value is None and not hasattr(args, name):
            continue
        if isinstance(value, bool) or not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
            raise RLError(f"{name} must be a finite number > 0, got {value!r}")


class Normalizer:
    """The running statistics of one training run over ``num_envs`` environment copies; with both
    options off every method hands its input back unchanged."""

    def __init__(self, settings: Settings, obs_shape: tuple[int, ...], num_envs: int) -> None:
        self.settings = settings
        self.obs_rms = RunningMeanStd(obs_shape)
        self.ret_rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, dtype=np.float64)

    @property
    def enabled(self) -> bool:
        return self.settings.obs or self.settings.reward

    def observe(self, obs: np.ndarray, *, dtype=np.float32) -> np.ndarray:
        """Update the observation statistics with ``obs`` (a batch) and answer it normalised."""
        if not self.settings.obs:
            return obs
        self.obs_rms.update(obs)
        return self.normalize(obs, dtype=dtype)

    def update_obs(self, obs: np.ndarray) -> None:
        """Update the observation statistics only (off-policy agents store raw observations)."""
        if self.settings.obs:
            self.obs_rms.update(obs)

    def normalize(self, obs: np.ndarray, *, dtype=np.float32) -> np.ndarray:
        """``obs`` normalised with the current statistics, without updating them."""
        if not self.settings.obs:
            return obs
        z = (np.asarray(obs, dtype=np.float64) - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + EPSILON)
        return np.clip(z, -self.settings.clip_obs, self.settings.clip_obs).astype(dtype, copy=False)

    def reward(self, reward: np.ndarray, done: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Scale one step's rewards (one per copy) by the running std of the discounted return;
        ``valid`` marks the copies whose step was a real transition (not an autoreset step)."""
        if not self.settings.reward:
            return reward
        r = np.asarray(reward, dtype=np.float64)
        keep = np.ones(r.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        self.returns = np.where(keep, self.returns * self.settings.gamma + r, self.returns)
        self.ret_rms.update(self.returns[keep])
        scaled = self.scale(r)
        self.returns[np.asarray(done, dtype=bool) | ~keep] = 0.0
        return scaled.astype(np.asarray(reward).dtype if np.asarray(reward).dtype.kind == "f" else np.float32)

    def scale(self, reward: np.ndarray) -> np.ndarray:
        """Rewards divided by the current return std (for transitions replayed later)."""
        if not self.settings.reward:
            return reward
        out = np.asarray(reward, dtype=np.float64) / np.sqrt(self.ret_rms.var + EPSILON)
        return np.clip(out, -self.settings.clip_reward, self.settings.clip_reward)

    def replayed(self, batch: tuple) -> tuple:
        """A replay sample ``(obs, actions, rewards, next_obs, terminated)`` of raw transitions,
        normalised with the current statistics (as SB3 samples a buffer behind VecNormalize)."""
        if not self.enabled:
            return batch
        obs, actions, rewards, next_obs, terminated = batch
        return (self.normalize(obs, dtype=obs.dtype), actions, self.scale(rewards).astype(rewards.dtype, copy=False),
                self.normalize(next_obs, dtype=next_obs.dtype), terminated)

    def wrap(self, policy):
        """``policy`` behind the frozen observation statistics (unchanged without them)."""
        if not self.settings.obs:
            return policy
        return NormalizedPolicy(policy, self.obs_rms.mean.copy(), self.obs_rms.var.copy(), EPSILON,
                                self.settings.clip_obs, source="training")

    # -- checkpoints ------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        if not self.enabled:
            return {}
        return {"norm_obs_mean": self.obs_rms.mean, "norm_obs_var": self.obs_rms.var,
                "norm_obs_count": np.array(self.obs_rms.count), "norm_ret_mean": self.ret_rms.mean,
                "norm_ret_var": self.ret_rms.var, "norm_ret_count": np.array(self.ret_rms.count),
                "norm_returns": self.returns}

    def restore(self, saved: dict[str, np.ndarray], path: str) -> None:
        if not self.enabled:
            return
        try:
            self.obs_rms.mean = np.asarray(saved["norm_obs_mean"], dtype=np.float64).reshape(self.obs_rms.mean.shape)
            self.obs_rms.var = np.asarray(saved["norm_obs_var"], dtype=np.float64).reshape(self.obs_rms.var.shape)
            self.obs_rms.count = float(saved["norm_obs_count"])
            self.ret_rms.mean = np.asarray(saved["norm_ret_mean"], dtype=np.float64).reshape(())
            self.ret_rms.var = np.asarray(saved["norm_ret_var"], dtype=np.float64).reshape(())
            self.ret_rms.count = float(saved["norm_ret_count"])
            self.returns = np.asarray(saved["norm_returns"], dtype=np.float64).reshape(self.returns.shape)
        except (KeyError, ValueError) as exc:
            raise RLError(f"checkpoint {path} has no usable normalisation statistics ({exc}); "
                          "it was written by a run with other settings") from None


def for_run(args, obs_shape: tuple[int, ...], num_envs: int) -> Normalizer:
    return Normalizer(Settings.of(args), obs_shape, num_envs)


def refuse_one_hot(norm: Normalizer, one_hot: int | None, agent: str, env_id: str) -> None:
    """Observation normalisation is for vector observations: a Discrete state reaches the network
    one-hot encoded (``one_hot`` states), which has nothing to normalise."""
    if norm.settings.obs and one_hot is not None:
        raise RLError(f"{agent} cannot normalise the observations of {env_id}: they are Discrete states, "
                      "one-hot encoded for the network; leave normalize_obs off")

