"""The pure diffusion maths: schedules, DDPM/DDIM coefficients against closed forms, the unrolled chain."""

import math

import pytest
import torch as th

from sb3_ncdpo.common.diffusion import ChainConfig, DiffusionChain, cosine_betas, linear_betas
from sb3_ncdpo.common.diffusion import make_chain as build_chain


def make_chain(**kwargs) -> DiffusionChain:
    chain = build_chain(ChainConfig(**kwargs))
    assert isinstance(chain, DiffusionChain)
    return chain


@pytest.mark.parametrize("n_steps", [1, 2, 5, 10, 100])
def test_cosine_schedule_closed_form(n_steps):
    betas = cosine_betas(n_steps)
    alpha_bar = th.cumprod(1 - betas, 0)

    def f(t: float) -> float:
        return math.cos((t / n_steps + 0.008) / 1.008 * math.pi / 2) ** 2

    # Every step but the last follows alpha_bar_k = f(k) / f(0); the last beta (1 before clipping) is clipped.
    for k in range(1, n_steps):
        assert alpha_bar[k - 1].item() == pytest.approx(f(k) / f(0), rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.999)
    assert th.all(betas > 0)


def test_linear_schedule_is_rescaled_to_k():
    betas = linear_betas(10)
    assert betas[0].item() == pytest.approx(1e-4 * 100)
    assert betas[-1].item() == pytest.approx(0.999)  # 0.02 * 100 = 2, clipped
    assert th.all(betas[1:] >= betas[:-1])
    # x_K is close to pure noise whatever K
    for n_steps in (5, 20, 1000):
        assert th.prod(1 - linear_betas(n_steps)).item() < 1e-3


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_ddpm_posterior_matches_gaussian_conditioning(schedule):
    """The DDPM mean/std coefficients equal q(x_{k-1} | x_k, x_0) derived by conditioning the joint Gaussian."""
    chain = make_chain(n_denoising_steps=8, noise_schedule=schedule)
    abar, abar_prev, betas = chain.alpha_bars.tolist(), chain.alpha_bars_prev.tolist(), chain.betas.tolist()
    for i in range(8):
        alpha = 1 - betas[i]
        # x_{k-1} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) e1 ;  x_k = sqrt(alpha) x_{k-1} + sqrt(beta) e2
        cov = math.sqrt(alpha) * (1 - abar_prev[i])  # Cov(x_{k-1}, x_k | x0)
        var_k = 1 - abar[i]  # Var(x_k | x0)
        gain = cov / var_k
        # mean = sqrt(abar_prev) x0 + gain (x_k - sqrt(abar) x0)
        assert chain.xk_coef[i].item() == pytest.approx(gain, rel=1e-10, abs=1e-14)
        assert chain.x0_coef[i].item() == pytest.approx(
            math.sqrt(abar_prev[i]) - gain * math.sqrt(abar[i]), rel=1e-9, abs=1e-12
        )
        variance = (1 - abar_prev[i]) - cov * gain
        assert chain.step_std[i].item() ** 2 == pytest.approx(variance, rel=1e-9, abs=1e-14)
    # Step 1 lands exactly on the predicted clean action, with no noise.
    assert chain.x0_coef[0].item() == pytest.approx(1.0) and chain.xk_coef[0].item() == 0.0
    assert chain.step_std[0].item() == 0.0


def test_ddim_with_true_noise_stays_on_the_forward_marginal():
    """With the true eps, a deterministic DDIM step maps sqrt(abar_k) x0 + sqrt(1-abar_k) eps to the same at k-1."""
    chain = make_chain(n_denoising_steps=6, sampler="ddim", ddim_eta=0.0, x0_clip=None)
    gen = th.Generator().manual_seed(0)
    x0 = th.rand(32, 3, generator=gen, dtype=th.float64) * 2 - 1
    eps = th.randn(32, 3, generator=gen, dtype=th.float64)
    for k in range(6, 0, -1):
        abar, abar_prev = chain.alpha_bars[k - 1].item(), chain.alpha_bars_prev[k - 1].item()
        x_k = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
        expected = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps
        th.testing.assert_close(chain.step_mean(x_k, eps, k), expected, rtol=1e-10, atol=1e-10)


def test_ddim_eta_one_has_the_ddpm_posterior_std():
    ddim = make_chain(n_denoising_steps=7, sampler="ddim", ddim_eta=1.0)
    ddpm = make_chain(n_denoising_steps=7, sampler="ddpm")
    th.testing.assert_close(ddim.step_std, ddpm.step_std, rtol=1e-10, atol=1e-12)
    half = make_chain(n_denoising_steps=7, sampler="ddim", ddim_eta=0.5)
    th.testing.assert_close(half.step_std, 0.5 * ddpm.step_std, rtol=1e-10, atol=1e-12)


def test_ddpm_with_true_noise_recovers_x0_and_posterior_mean():
    chain = make_chain(n_denoising_steps=5, x0_clip=None)
    x0 = th.tensor([[0.3, -0.7]], dtype=th.float64)
    eps = th.tensor([[1.1, 0.4]], dtype=th.float64)
    k = 3
    abar = chain.alpha_bars[k - 1].item()
    x_k = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
    th.testing.assert_close(chain.predict_x0(x_k, eps, k), x0, rtol=1e-10, atol=1e-12)
    th.testing.assert_close(chain.step_mean(x_k, eps, k), chain.x0_coef[k - 1] * x0 + chain.xk_coef[k - 1] * x_k)


@pytest.mark.parametrize(
    "settings",
    [
        dict(sampler="ddpm"),
        dict(sampler="ddpm", x0_clip=None),
        dict(sampler="ddpm", x0_clip_final=False),
        dict(sampler="ddim", ddim_eta=0.0),
        dict(sampler="ddim", ddim_eta=0.7, x0_clip=0.5),
        dict(sampler="ddim", ddim_eta=1.0, x0_clip=None),
        dict(sampler="ddpm", noise_schedule="linear", x0_clip=0.3),
        dict(sampler="ddpm", prediction_type="sample"),
        dict(sampler="ddpm", prediction_type="sample", x0_clip=None),
        dict(sampler="ddim", ddim_eta=0.5, prediction_type="sample", x0_clip=0.5),
    ],
)
def test_fused_step_mean_equals_the_textbook_step(settings):
    """
    step_mean's fused form equals: x0 = clip((x - sqrt(1-abar) eps) / sqrt(abar)) (epsilon-prediction) or
    x0 = clip(prediction) (sample-prediction), then the sampler's mean.
    """
    chain = make_chain(n_denoising_steps=8, **settings)
    gen = th.Generator().manual_seed(3)
    for k in range(8, 0, -1):
        x_k = 3 * th.randn(64, 2, generator=gen, dtype=th.float64)  # wide enough that x0 is clipped for some rows
        eps = th.randn(64, 2, generator=gen, dtype=th.float64)
        x0 = chain.predict_x0(x_k, eps, k)
        if settings.get("prediction_type") == "sample":
            clip = settings.get("x0_clip", 1.0)
            th.testing.assert_close(x0, eps if clip is None else eps.clamp(-clip, clip), rtol=0, atol=0)
        i = k - 1
        if settings["sampler"] == "ddpm":
            expected = chain.x0_coef[i] * x0 + chain.xk_coef[i] * x_k
        else:
            consistent_eps = (x_k - chain.alpha_bars[i].sqrt() * x0) / (1 - chain.alpha_bars[i]).sqrt()
            expected = chain.x0_coef[i] * x0 + chain.eps_coef[i] * consistent_eps
        th.testing.assert_close(chain.step_mean(x_k, eps, k), expected, rtol=1e-12, atol=1e-12)


def test_sample_prediction_with_the_true_x0_stays_on_the_posterior():
    """Predicting the true x0 makes each DDPM step the exact posterior mean q(x_{k-1} | x_k, x0), whatever x_k."""
    chain = make_chain(n_denoising_steps=6, prediction_type="sample", x0_clip=None)
    gen = th.Generator().manual_seed(1)
    x0 = th.rand(16, 2, generator=gen, dtype=th.float64) * 2 - 1
    for k in range(6, 0, -1):
        x_k = th.randn(16, 2, generator=gen, dtype=th.float64)
        expected = chain.x0_coef[k - 1] * x0 + chain.xk_coef[k - 1] * x_k
        th.testing.assert_close(chain.step_mean(x_k, x0, k), expected, rtol=1e-12, atol=1e-12)
    # The last step lands on the prediction itself.
    th.testing.assert_close(chain.step_mean(th.randn(16, 2, dtype=th.float64), x0, 1), x0, rtol=0, atol=1e-15)


def test_x0_clip_and_noise_clip():
    chain = make_chain(n_denoising_steps=3, x0_clip=0.5, noise_clip=1.5)
    x0 = chain.predict_x0(th.full((4, 2), 10.0), th.zeros(4, 2), 2)
    assert th.all(x0 == 0.5)
    # The final step (its output is the action mean) is clipped too, unless x0_clip_final=False
    assert th.all(chain.predict_x0(th.full((4, 2), 10.0), th.zeros(4, 2), 1) == 0.5)
    free = make_chain(n_denoising_steps=3, x0_clip=0.5, x0_clip_final=False)
    assert th.all(free.predict_x0(th.full((4, 2), 10.0), th.zeros(4, 2), 1) > 9.0)
    noise = chain.sample_noise(5000, 2, generator=th.Generator().manual_seed(0))
    assert noise.shape == (5000, 3, 2)
    assert noise.abs().max().item() == pytest.approx(1.5)  # some draws were clipped, none exceed the clip
    unclipped = make_chain(n_denoising_steps=3).sample_noise(5000, 2, generator=th.Generator().manual_seed(0))
    assert unclipped.abs().max().item() > 1.5


def test_min_step_std_floors_intermediate_steps_only():
    chain = make_chain(n_denoising_steps=4, sampler="ddim", ddim_eta=0.0, min_step_std=0.1)
    assert [chain.noise_std(k) for k in (2, 3, 4)] == [0.1, 0.1, 0.1]


def linear_eps_model(weight: th.Tensor):
    def eps_model(x: th.Tensor, k: int) -> th.Tensor:
        return th.tanh(x @ weight * k)

    return eps_model


def test_k1_is_a_single_step_on_x_k():
    chain = make_chain(n_denoising_steps=1, x0_clip=None)
    weight = th.eye(2, dtype=th.float64) * 0.3
    noise = th.randn(6, 1, 2, dtype=th.float64)
    x1 = noise[:, 0]
    expected = (x1 - math.sqrt(1 - chain.alpha_bars[0].item()) * th.tanh(x1 @ weight)) / math.sqrt(chain.alpha_bars[0].item())
    th.testing.assert_close(chain.final_mean(linear_eps_model(weight), noise), expected)


def test_chain_matches_explicit_loop_and_is_batched():
    chain = make_chain(n_denoising_steps=4, x0_clip=None)
    weight = th.randn(3, 3, dtype=th.float64) * 0.2
    eps_model = linear_eps_model(weight)
    noise = th.randn(5, 4, 3, dtype=th.float64)
    # Written out: x_3 = mu(x_4) + s_4 z_4, x_2 = mu(x_3) + s_3 z_3, x_1 = mu(x_2) + s_2 z_2, return mu(x_1)
    x = noise[:, 0]
    for i, k in enumerate([4, 3, 2]):
        x = chain.step_mean(x, eps_model(x, k), k) + chain.step_std[k - 1].item() * noise[:, i + 1]
    expected = chain.step_mean(x, eps_model(x, 1), 1)
    th.testing.assert_close(chain.final_mean(eps_model, noise), expected)
    # Batched result equals per-sample results
    rows = th.cat([chain.final_mean(eps_model, noise[i : i + 1]) for i in range(5)])
    th.testing.assert_close(chain.final_mean(eps_model, noise), rows)


def test_ddim_eta_zero_ignores_the_step_noise():
    chain = make_chain(n_denoising_steps=5, sampler="ddim", ddim_eta=0.0)
    eps_model = linear_eps_model(th.randn(2, 2, dtype=th.float64))
    noise = th.randn(8, 5, 2, dtype=th.float64)
    other = noise.clone()
    other[:, 1:] = th.randn(8, 4, 2, dtype=th.float64)
    th.testing.assert_close(chain.final_mean(eps_model, noise), chain.final_mean(eps_model, other))
    # ... but not the initial sample x_K
    other[:, 0] += 1.0
    assert not th.allclose(chain.final_mean(eps_model, noise), chain.final_mean(eps_model, other))
    # with eta > 0 the step noise matters
    stochastic = make_chain(n_denoising_steps=5, sampler="ddim", ddim_eta=1.0)
    other = noise.clone()
    other[:, 1:] += 1.0
    assert not th.allclose(stochastic.final_mean(eps_model, noise), stochastic.final_mean(eps_model, other))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_chain_is_differentiable_wrt_initial_noise(sampler):
    chain = make_chain(n_denoising_steps=6, sampler=sampler, ddim_eta=0.5, x0_clip=None)
    noise = th.randn(4, 6, 2, dtype=th.float64, requires_grad=True)
    chain.final_mean(linear_eps_model(th.randn(2, 2, dtype=th.float64)), noise).sum().backward()
    assert noise.grad is not None
    assert th.all(noise.grad[:, 0].abs() > 0)


def test_eps_grad_hook_sees_every_step():
    chain = make_chain(n_denoising_steps=4, x0_clip=None)
    weight = th.randn(2, 2, dtype=th.float64, requires_grad=True)
    seen: dict[int, float] = {}
    mean = chain.final_mean(
        linear_eps_model(weight),
        th.randn(3, 4, 2, dtype=th.float64),
        eps_grad_hook=lambda k, g: seen.update({k: g.norm().item()}),
    )
    mean.sum().backward()
    assert sorted(seen) == [1, 2, 3, 4]
    assert all(v > 0 for v in seen.values())


def test_noise_shape_is_checked():
    chain = make_chain(n_denoising_steps=3)
    with pytest.raises(ValueError, match=r"noise must have shape \(batch, 3, dim\)"):
        chain.final_mean(linear_eps_model(th.eye(2)), th.zeros(2, 4, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_denoising_steps=0), "n_denoising_steps must be an int >= 1"),
        (dict(n_denoising_steps=2.5), "n_denoising_steps must be an int >= 1"),
        (dict(n_denoising_steps=True), "n_denoising_steps must be an int >= 1"),
        (dict(sampler="heun"), r"sampler must be one of \('ddpm', 'ddim'(, '[a-z]+')*\), got 'heun'"),
        (dict(noise_schedule="sigmoid"), r"noise_schedule must be one of \('cosine', 'linear'\)"),
        (dict(ddim_eta=1.5), r"ddim_eta must be a float in \[0, 1\]"),
        (dict(ddim_eta=-0.1), r"ddim_eta must be a float in \[0, 1\]"),
        (dict(x0_clip=0.0), "x0_clip must be a float > 0 or None"),
        (dict(noise_clip=-1.0), "noise_clip must be a float > 0 or None"),
        (dict(x0_clip_final="yes"), "x0_clip_final must be a bool"),
        (dict(min_step_std=-0.1), "min_step_std must be a float >= 0"),
    ],
)
def test_bad_chain_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChainConfig(**kwargs)


@pytest.mark.parametrize("x0_clip", [None, 1.0])
def test_ddim_eta_one_is_the_ddpm_chain(x0_clip):
    """DDIM with eta = 1 has DDPM's posterior mean and std: the same noise gives the same chain."""
    ddim = make_chain(n_denoising_steps=6, sampler="ddim", ddim_eta=1.0, x0_clip=x0_clip)
    ddpm = make_chain(n_denoising_steps=6, sampler="ddpm", x0_clip=x0_clip)
    eps_model = linear_eps_model(th.randn(3, 3, dtype=th.float64))
    noise = th.randn(16, 6, 3, dtype=th.float64)
    th.testing.assert_close(ddim.final_mean(eps_model, noise), ddpm.final_mean(eps_model, noise), rtol=1e-9, atol=1e-9)
