"""Which layers of a state dict act: recognising known layouts and picking the network by role.

A state dict is a flat mapping ``<module path>.weight`` → array. Training code keeps several
networks in one (actor and critic, online and target Q-networks), and picking the wrong one gives
a wrong score that nothing flags. So the acting network is chosen by what each network *is* in
the framework that wrote the file:

* Stable-Baselines3 ``policy.state_dict()``: PPO/A2C ``mlp_extractor.policy_net`` → ``action_net``;
  DQN ``q_net.q_net`` (the online network; ``q_net_target`` never acts); SAC ``actor.latent_pi`` →
  ``actor.mu`` (tanh, rescaled to the bounds); TD3 ``actor.mu`` (tanh, rescaled);
* CleanRL: the PPO ``Agent``'s ``actor`` (discrete) or ``actor_mean`` (+ ``actor_logstd``,
  continuous), never its ``critic``; a DQN ``q_network`` beside its ``target_network``; the SAC
  and TD3 ``Actor`` (``fc1``, ``fc2``, ``fc_mean`` / ``fc_mu``; tanh, rescaled to the bounds);
* a plain ``nn.Sequential`` (one stack: ``0.weight``, ``2.weight``, …).

Otherwise target networks and critics are set aside by name; if more than one stack is left the
file is refused (code ``ambiguous_layers``) with the candidates listed, and the uploader names one
with ``prefix``. Features extractors with parameters (SB3's NatureCNN, custom extractors) are
refused (``unsupported_policy``): only Linear layers with an elementwise activation are evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from actors.rl.errors import ModelFileError

#: Where a default activation comes from when the file does not record one.
SB3_ACTOR_CRITIC_DEFAULT = ("tanh", "Stable-Baselines3's ActorCriticPolicy (PPO, A2C) defaults to "
                            "activation_fn=nn.Tanh")
SB3_RELU_DEFAULTS = {
    "sb3-dqn": "Stable-Baselines3's DQNPolicy defaults to activation_fn=nn.ReLU",
    "sb3-sac": "Stable-Baselines3's SACPolicy defaults to activation_fn=nn.ReLU",
    "sb3-td3": "Stable-Baselines3's TD3Policy defaults to activation_fn=nn.ReLU",
}
CLEANRL_PPO_DEFAULT = ("tanh", "CleanRL's PPO Agent (ppo.py, ppo_continuous_action.py) puts nn.Tanh "
                       "between its Linear layers")
HUB_DEFAULT = ("relu", "the hub's default for state dicts that record no activation: ReLU, as in "
               "DQN-style Q-networks (e.g. CleanRL's dqn.py QNetwork)")

_TARGET_RE = re.compile(r"(^|\.)[^.]*target[^.]*(\.|$)")
_CRITIC_RE = re.compile(r"(^|\.)(critic|value_net|vf|qf\d*|value)(\.|$)")
_EXTRACTOR_PREFIXES = ("features_extractor.", "pi_features_extractor.", "vf_features_extractor.",
                       "q_net.features_extractor.", "actor.features_extractor.")


@dataclass
class Acting:
    """The network that acts, as layer paths in forward order, and how its output becomes an action.

    ``head`` is ``None`` when the layout does not say (the environment decides). ``squash`` means
    tanh, then rescaling from [-1, 1] to the action bounds (SB3's SAC and TD3). ``activation`` is the
    layout's framework default, used only when neither the file nor the uploader states one.
    """

    layout: str
    paths: list[str]
    reason: str
    head: str | None = None
    squash: bool = False
    activation: tuple[str, str] = HUB_DEFAULT
    ignored: list[str] = field(default_factory=list)
    log_std_key: str | None = None
    normalization_hint: str | None = None
    scale_keys: tuple[str, str] | None = None  # (scale, bias) buffers: action = tanh(out) * scale + bias

    def to_dict(self) -> dict:
        return {"layout": self.layout, "layers": list(self.paths), "reason": self.reason,
                "ignored": sorted(self.ignored)}


def natural_key(path: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", path))


def stack_name(path: str) -> str:
    # "net.0" and "net.2" -> "net"; "fc1" and "fc2" -> "fc"; "action_net" -> "action_net"
    return re.sub(r"\.?\d+$", "", path)


def find_stacks(arrays: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
    """Stack name → its Linear layer paths (those with a 2-D ``.weight``), in index order."""
    stacks: dict[str, list[str]] = {}
    for k, v in arrays.items():
        if k.endswith(".weight") and np.ndim(v) == 2:
            path = k[: -len(".weight")]
            stacks.setdefault(stack_name(path), []).append(path)
    for paths in stacks.values():
        paths.sort(key=natural_key)
    return stacks


def _refuse_extractors(arrays: Mapping[str, np.ndarray]) -> None:
    keys = sorted(k for k in arrays if k.startswith(_EXTRACTOR_PREFIXES))
    if not keys:
        return
    conv = any(np.ndim(arrays[k]) == 4 for k in keys)
    what = ("a convolutional features extractor (SB3's CnnPolicy / NatureCNN)" if conv
            else "a features extractor with parameters (a custom features_extractor_class)")
    raise ModelFileError(
        "unsupported_policy",
        f"the policy has {what}: {', '.join(keys[:6])}. The hub evaluates MLP policies only; it has "
        "no convolution layers and does not reproduce SB3's image preprocessing (uint8 / 255, HWC → CHW). "
        "Export the policy to ONNX instead.",
        details={"keys": keys[:20]})


def _sb3_layout(arrays: Mapping[str, np.ndarray], stacks: dict[str, list[str]]) -> Acting | None:
    names = set(stacks)
    others = lambda used: sorted(s for s in names if s not in used)  # noqa: E731
    if "action_net" in names and any(s.startswith("mlp_extractor.") for s in names):
        log_std = arrays.get("log_std")
        if log_std is not None and np.ndim(log_std) != 1:
            raise ModelFileError("unsupported_policy", "the policy uses gSDE (use_sde=True, a 2-D log_std), "
                                 "which the hub does not evaluate")
        used = ("mlp_extractor.shared_net", "mlp_extractor.policy_net", "action_net")
        paths = [p for s in used for p in stacks.get(s, [])]
        return Acting("sb3-actor-critic", paths,
                      "Stable-Baselines3 ActorCriticPolicy (PPO, A2C): predict(deterministic=True) runs "
                      "mlp_extractor.policy_net then action_net; value_net is the critic",
                      head="box" if log_std is not None else None, activation=SB3_ACTOR_CRITIC_DEFAULT,
                      ignored=others(used), log_std_key="log_std" if log_std is not None else None,
                      normalization_hint="Stable-Baselines3 keeps VecNormalize statistics outside the model")
    if "q_net.q_net" in names:
        return Acting("sb3-dqn", stacks["q_net.q_net"],
                      "Stable-Baselines3 DQNPolicy: predict acts greedily on the online q_net; "
                      "q_net_target is the lagged target copy used only in training",
                      head="discrete", activation=("relu", SB3_RELU_DEFAULTS["sb3-dqn"]),
                      ignored=others(("q_net.q_net",)),
                      normalization_hint="Stable-Baselines3 keeps VecNormalize statistics outside the model")
    if "actor.latent_pi" in names or ("actor.mu" in stacks and "actor.log_std" in names):
        if stacks.get("actor.mu") != ["actor.mu"] or "actor.log_std.weight" not in arrays:
            raise ModelFileError("unsupported_policy", "the SAC actor uses gSDE (use_sde=True), which the hub "
                                 "does not evaluate")
        used = ("actor.latent_pi", "actor.mu")
        return Acting("sb3-sac", [*stacks.get("actor.latent_pi", []), "actor.mu"],
                      "Stable-Baselines3 SACPolicy: predict(deterministic=True) is tanh(actor.mu(actor.latent_pi"
                      "(obs))) rescaled from [-1, 1] to the action bounds; the critics never act",
                      head="box", squash=True, activation=("relu", SB3_RELU_DEFAULTS["sb3-sac"]),
                      ignored=others(used),
                      normalization_hint="Stable-Baselines3 keeps VecNormalize statistics outside the model")
    if "actor.mu" in stacks and stacks["actor.mu"] != ["actor.mu"]:
        return Acting("sb3-td3", stacks["actor.mu"],
                      "Stable-Baselines3 TD3Policy: predict is actor.mu (ending in Tanh) rescaled from [-1, 1] "
                      "to the action bounds; actor_target and the critics never act",
                      head="box", squash=True, activation=("relu", SB3_RELU_DEFAULTS["sb3-td3"]),
                      ignored=others(("actor.mu",)),
                      normalization_hint="Stable-Baselines3 keeps VecNormalize statistics outside the model")
    return None


def _cleanrl_layout(arrays: Mapping[str, np.ndarray], stacks: dict[str, list[str]]) -> Acting | None:
    names = set(stacks)
    if "actor_mean" in names and "actor_logstd" in arrays:
        return Acting("cleanrl-ppo-continuous", stacks["actor_mean"],
                      "CleanRL PPO Agent (continuous): the greedy action is actor_mean(obs), clipped to the "
                      "bounds as by its ClipAction wrapper; critic is the value function",
                      head="box", activation=CLEANRL_PPO_DEFAULT, ignored=sorted(names - {"actor_mean"}),
                      log_std_key="actor_logstd",
                      normalization_hint="CleanRL's ppo_continuous_action.py trains behind "
                      "gym.wrappers.NormalizeObservation, whose statistics are not in the state dict")
    head_name = "fc_mu" if "fc_mu" in names else "fc_mean" if "fc_mean" in names else None
    if head_name and stacks.get("fc") == ["fc1", "fc2"] and "action_scale" in arrays:
        algo = "TD3" if head_name == "fc_mu" else "SAC"
        return Acting(f"cleanrl-{algo.lower()}-actor", ["fc1", "fc2", head_name],
                      f"CleanRL {algo} Actor: the greedy action is tanh({head_name}(relu(fc2(relu(fc1(obs)))))) "
                      "rescaled to the action bounds (its action_scale / action_bias buffers)",
                      head="box", squash=True, activation=("relu", f"CleanRL's {algo} Actor applies F.relu"),
                      ignored=sorted(names - {"fc", head_name}), scale_keys=("action_scale", "action_bias"))
    if names == {"actor", "critic"} and all(p != s for s in names for p in stacks[s]):
        return Acting("cleanrl-ppo", stacks["actor"],
                      "CleanRL PPO Agent: actor maps observations to action logits (argmax when greedy); "
                      "critic is the value function", activation=CLEANRL_PPO_DEFAULT, ignored=["critic"])
    return None


def _by_role(stacks: dict[str, list[str]]) -> Acting | None:
    """One stack left after setting target networks and critics aside, or ``None``."""
    targets = sorted(s for s in stacks if _TARGET_RE.search(s))
    critics = sorted(s for s in stacks if s not in targets and _CRITIC_RE.search(s))
    rest = [s for s in stacks if s not in targets and s not in critics]
    if len(rest) != 1:
        return None
    (stack,) = rest
    if not targets and not critics:
        return Acting("sequential", stacks[stack], "the only stack of Linear layers in the file")
    roles = ([f"{', '.join(targets)} (target network{'s' if len(targets) > 1 else ''}, used only in training)"]
             if targets else []) + ([f"{', '.join(critics)} (critic)"] if critics else [])
    return Acting("by-role", stacks[stack], f"the only stack that is neither a target network nor a critic; "
                  f"set aside: {'; '.join(roles)}", ignored=targets + critics)


def _candidates_error(stacks: dict[str, list[str]], prefix: str | None = None) -> ModelFileError:
    candidates = sorted(stacks)
    where = f" under prefix {prefix!r}" if prefix else ""
    return ModelFileError(
        "ambiguous_layers",
        f"the state dict holds several layer stacks{where} ({', '.join(candidates)}) and none of them is "
        "recognisably the acting network; name the one that acts with the 'prefix' form field "
        f"(e.g. prefix={candidates[0]!r})",
        details={"candidates": candidates, "field": "prefix"})


def strip_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under ``prefix`` (a module path), keyed relative to it."""
    p = prefix.strip().rstrip(".")
    if not p:
        return dict(arrays)
    sub = {k[len(p) + 1:]: v for k, v in arrays.items() if k.startswith(p + ".")}
    if not sub:
        stacks = sorted(find_stacks(arrays))
        raise ModelFileError("bad_content", f"no layers under prefix {prefix!r}; the stacks are "
                             f"{', '.join(stacks) or 'none'}",
                             details={"candidates": stacks, "field": "prefix"})
    return sub


def choose_acting(arrays: Mapping[str, np.ndarray], prefix: str | None = None) -> Acting:
    """The acting network of a state dict (see the module doc), with why it was chosen."""
    given = prefix is not None and prefix.strip().rstrip(".") != ""
    p = prefix.strip().rstrip(".") if given else ""  # type: ignore[union-attr]
    view = strip_prefix(arrays, p) if given else dict(arrays)
    _refuse_extractors(view)
    stacks = find_stacks(view)
    if not stacks:
        raise ModelFileError("bad_content",
                             "no Linear layer weights found (expected 2-D '<name>.<i>.weight' arrays); "
                             f"keys: {sorted(view)[:12]}")
    acting = _sb3_layout(view, stacks) or _cleanrl_layout(view, stacks) or _by_role(stacks)
    if acting is None:
        raise _candidates_error({f"{p}.{s}" if given and s else (p or s): v for s, v in stacks.items()},
                                p if given else None)
    if given:
        full = lambda path: f"{p}.{path}" if path else p  # noqa: E731
        acting.paths = [full(x) for x in acting.paths]
        acting.ignored = [full(x) for x in acting.ignored]
        if acting.log_std_key:
            acting.log_std_key = full(acting.log_std_key)
        acting.reason = f"selected by the uploader with prefix={p!r}; {acting.reason}"
    return acting


def gather_layers(arrays: Mapping[str, np.ndarray], paths: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights and biases of ``paths``, checked; other parameters inside the same stacks are refused
    (a LayerNorm or BatchNorm there means the network is not a plain MLP)."""
    weights, biases, used = [], [], set()
    for path in paths:
        w = np.asarray(arrays[path + ".weight"])
        used.add(path + ".weight")
        b_key = path + ".bias"
        if b_key in arrays:
            b = np.asarray(arrays[b_key])
            used.add(b_key)
        else:
            b = np.zeros(w.shape[0], dtype=w.dtype)
        for arr, label in ((w, path + ".weight"), (b, b_key)):
            if arr.dtype.kind not in "fiu":
                raise ModelFileError("bad_content", f"{label} has non-numeric dtype {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise ModelFileError("bad_content", f"{label} contains NaN or infinite values")
        weights.append(w)
        biases.append(b)
    stacks = {stack_name(p) for p in paths}
    leftovers = [k for k in arrays if k not in used and "." in k and stack_name(k.rsplit(".", 1)[0]) in stacks]
    if leftovers:
        raise ModelFileError("unsupported_format",
                             "the network has parameters that are not Linear layers "
                             f"({', '.join(sorted(leftovers)[:6])}); "
                             "only plain MLPs (Linear layers with an elementwise activation) are supported")
    return weights, biases
