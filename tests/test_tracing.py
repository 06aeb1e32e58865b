"""The one rule for when a policy call runs through its trace (PolicyTraces.pick)."""

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from sb3_ncdpo import DiffusionActorCriticPolicy, MultiInputDiffusionPolicy

SMALL = dict(n_denoising_steps=3, denoiser_hidden_sizes=[16], net_arch=[16])
BOX = spaces.Box(-1.0, 1.0, (2,))


def policy(**kwargs) -> DiffusionActorCriticPolicy:
    return DiffusionActorCriticPolicy(spaces.Box(-1.0, 1.0, (3,)), BOX, lambda _: 1e-3, **{**SMALL, **kwargs})


def test_calls_are_traced_unless_a_hook_a_frozen_actor_or_a_dict_observation_needs_the_eager_code():
    traces = policy().traces
    obs = th.zeros(1, 3)
    for traced in (traces.chain, traces.recorded_chain):
        assert traces.pick(traced) is traced
        assert traces.pick(traced, eps_grad_hook=lambda k, grad: None) is None
    for traced in (traces.actor_critic, traces.act):
        assert traced is not None and traces.pick(traced, obs) is traced
        assert traces.pick(traced, {"obs": obs}) is None
    partial = policy(n_finetuned_steps=2).traces  # two denoisers in one chain: eager
    assert all(partial.pick(t, obs) is None for t in (partial.chain, partial.recorded_chain, partial.actor_critic))


def test_user_encoders_and_discrete_actions_have_no_whole_call_trace():
    class Identity(BaseFeaturesExtractor):
        def __init__(self, observation_space: spaces.Space) -> None:
            super().__init__(observation_space, features_dim=3)

        def forward(self, obs: th.Tensor) -> th.Tensor:
            return obs

    traces = policy(features_extractor_class=Identity).traces
    assert traces.actor_critic is None and traces.act is None and traces.pick(traces.chain) is traces.chain
    discrete = DiffusionActorCriticPolicy(spaces.Box(-1.0, 1.0, (3,)), spaces.Discrete(4), lambda _: 1e-3, **SMALL).traces
    assert discrete.actor_critic is not None and discrete.act is None  # no final Gaussian to trace
    dict_space = spaces.Dict({"a": spaces.Box(-1.0, 1.0, (3,))})
    combined = MultiInputDiffusionPolicy(dict_space, BOX, lambda _: 1e-3, **SMALL).traces
    assert combined.actor_critic is None  # SB3's CombinedExtractor is not in TRACEABLE_MODULES


def test_eager_context_disables_every_trace_and_restores_them():
    traces = policy().traces
    with traces.eager():
        assert not any(t.enabled for t in (traces.chain, traces.recorded_chain, traces.actor_critic, traces.act))
    assert all(t.enabled for t in (traces.chain, traces.recorded_chain, traces.actor_critic, traces.act))
