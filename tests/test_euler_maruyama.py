"""Tests for EulerMaruyamaScheduler: config compatibility with DDPM, timesteps, analytic sampling checks."""

import json

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, EulerDiscreteScheduler

from sdscratch.schedulers import EulerMaruyamaScheduler


class _SchedulerPipeline(DiffusionPipeline):
    """A pipeline holding only a scheduler, to check how diffusers records and restores ours."""

    def __init__(self, scheduler):
        super().__init__()
        self.register_modules(scheduler=scheduler)


def _gaussian_epsilon(scheduler, x_t, t, mean, std):
    """Exact ε(x_t, t) for data ~ N(mean, std²): x_t ~ N(sqrt(ᾱ) mean, ᾱ std² + 1 - ᾱ), ε = -sqrt(1 - ᾱ) ∇log p_t."""
    alpha_prod = scheduler.alphas_cumprod[t]
    score = -(x_t - alpha_prod.sqrt() * mean) / (alpha_prod * std**2 + 1 - alpha_prod)
    return -((1 - alpha_prod).sqrt()) * score


def _sample_gaussian(scheduler, num_inference_steps, mean=0.3, std=0.5, n=10_000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(num_inference_steps)
    x = torch.randn(n, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        x = scheduler.step(_gaussian_epsilon(scheduler, model_input, t, mean, std), t, x, generator=generator)
        x = x.prev_sample
    return x


def test_from_ddpm_config_and_back():
    ddpm = DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        steps_offset=1,
        clip_sample=False,
    )
    scheduler = EulerMaruyamaScheduler.from_config(ddpm.config)
    for key in (
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "prediction_type",
        "timestep_spacing",
    ):
        assert scheduler.config[key] == ddpm.config[key]
    assert torch.equal(scheduler.alphas_cumprod, ddpm.alphas_cumprod)
    # and back: DDPM (or any diffusers scheduler) loads from ours; DDPM-only keys such as clip_sample=False are
    # not used by Euler-Maruyama but diffusers carries them along, so a swap there and back loses nothing
    back = DDPMScheduler.from_config(scheduler.config)
    assert back.config.prediction_type == "v_prediction" and back.config.clip_sample is False
    assert torch.equal(DDIMScheduler.from_config(scheduler.config).alphas_cumprod, ddpm.alphas_cumprod)


def test_compatibles_list_diffusers_schedulers_and_itself():
    compatibles = EulerMaruyamaScheduler().compatibles
    for cls in (DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler, EulerMaruyamaScheduler):
        assert cls in compatibles
    assert EulerMaruyamaScheduler.order == 1 and EulerMaruyamaScheduler().init_noise_sigma == 1.0


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("num_inference_steps", [1, 7, 50, 1000])
def test_timesteps_decreasing_in_range_and_as_ddpm(spacing, num_inference_steps):
    scheduler = EulerMaruyamaScheduler(timestep_spacing=spacing)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    assert len(timesteps) == num_inference_steps and timesteps.dtype == torch.int64
    assert (timesteps[1:] < timesteps[:-1]).all()
    assert 0 <= int(timesteps.min()) and int(timesteps.max()) < 1000
    ddpm = DDPMScheduler(timestep_spacing=spacing)
    ddpm.set_timesteps(num_inference_steps)
    assert torch.equal(timesteps, ddpm.timesteps)


def test_trailing_timesteps_never_overshoot_to_minus_one():
    # np.arange(1000, 0, -1000 / 61) has 62 entries, the last ~0: DDPM's trailing schedule ends in timestep -1 there
    # (alphas_cumprod[-1] is ᾱ_999: Euler-Maruyama's last step turned the sample into NaN); 61 steps are 61 steps
    scheduler, ddpm = EulerMaruyamaScheduler(timestep_spacing="trailing"), DDPMScheduler(timestep_spacing="trailing")
    for num_inference_steps in range(1, 1001):
        scheduler.set_timesteps(num_inference_steps)
        ddpm.set_timesteps(num_inference_steps)
        assert len(scheduler.timesteps) == num_inference_steps and int(scheduler.timesteps.min()) >= 0
        assert torch.equal(scheduler.timesteps, ddpm.timesteps[:num_inference_steps])  # as DDPM's, less its extra
    x = _sample_gaussian(scheduler, 61)
    assert torch.isfinite(x).all() and abs(x.mean().item() - 0.3) < 0.05


def test_custom_timesteps_and_bad_input():
    scheduler = EulerMaruyamaScheduler()
    scheduler.set_timesteps(timesteps=[999, 500, 10])
    assert scheduler.timesteps.tolist() == [999, 500, 10] and scheduler.num_inference_steps == 3
    for kwargs in ({"num_inference_steps": 0}, {"num_inference_steps": 1001}, {}, {"timesteps": [10, 500]}):
        with pytest.raises(ValueError):
            scheduler.set_timesteps(**kwargs)
    with pytest.raises(ValueError):
        scheduler.set_timesteps(timesteps=[1000, 10])
    with pytest.raises(ValueError, match="prediction_type"):
        EulerMaruyamaScheduler(prediction_type="noise")
    with pytest.raises(ValueError, match="timestep_spacing"):
        EulerMaruyamaScheduler(timestep_spacing="uniform")


def test_gaussian_data_sampled_with_exact_score():
    """Data N(0.3, 0.5²) has a closed-form score; Euler-Maruyama converges to it as the step count grows."""
    coarse = _sample_gaussian(EulerMaruyamaScheduler(), 20)
    fine = _sample_gaussian(EulerMaruyamaScheduler(), 200)
    assert abs(fine.mean().item() - 0.3) < 0.02
    assert abs(fine.std().item() - 0.5) < 0.015
    # first-order method: the coarse run is visibly biased, the fine one much less
    assert abs(fine.std().item() - 0.5) < abs(coarse.std().item() - 0.5)


def test_point_mass_data_follows_its_noisy_marginal():
    """Data = the single point x0: along the reverse SDE, x_t must stay ~ N(sqrt(ᾱ_t) x0, 1 - ᾱ_t)."""
    scheduler = EulerMaruyamaScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(200)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.7, -1.2]).repeat(4000, 1)  # (batch, 2)

    def exact_epsilon(x, t):
        alpha_prod = scheduler.alphas_cumprod[t]
        return (x - alpha_prod.sqrt() * x0) / (1 - alpha_prod).sqrt()

    x = torch.randn(x0.shape, generator=generator)
    for t in scheduler.timesteps[:-1]:
        x = scheduler.step(exact_epsilon(x, t), t, x, generator=generator).prev_sample
        if t == 194:  # x is now at timestep 189, far from the stiff end of the chain (t -> 0)
            alpha_prod = scheduler.alphas_cumprod[189]
            assert torch.allclose(x.mean(0), alpha_prod.sqrt() * x0[0], atol=0.02)
            assert torch.allclose(x.std(0), (1 - alpha_prod).sqrt().expand(2), rtol=0.06)
    # the last step returns the denoised estimate, without noise: exactly x0 here
    t = scheduler.timesteps[-1]
    out = scheduler.step(exact_epsilon(x, t), t, x, generator=generator)
    assert torch.allclose(out.prev_sample, x0, atol=1e-4)
    assert torch.equal(out.prev_sample, out.pred_original_sample)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_prediction_types_agree_with_epsilon(prediction_type):
    """The same ground truth expressed as ε, x0 or v gives the same step."""
    generator = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    t = torch.tensor(600)
    reference = EulerMaruyamaScheduler()
    reference.set_timesteps(10)
    x_t = reference.add_noise(x0, noise, t)
    alpha_prod = reference.alphas_cumprod[t]
    outputs = {"sample": x0, "v_prediction": alpha_prod.sqrt() * noise - (1 - alpha_prod).sqrt() * x0}
    scheduler = EulerMaruyamaScheduler(prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    expected = reference.step(noise, t, x_t, generator=torch.Generator().manual_seed(0))
    actual = scheduler.step(outputs[prediction_type], t, x_t, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(actual.prev_sample, expected.prev_sample, atol=1e-5)
    assert torch.allclose(actual.pred_original_sample, x0, atol=1e-5)


def _run(scheduler, generator, sample):
    scheduler.set_timesteps(5)
    for t in scheduler.timesteps:
        sample = scheduler.step(0.1 * sample, t, sample, generator=generator).prev_sample
    return sample


def test_determinism_and_per_sample_generators():
    sample = torch.randn(2, 3, 4, 4)
    scheduler = EulerMaruyamaScheduler()
    a = _run(scheduler, torch.Generator().manual_seed(0), sample)
    b = _run(scheduler, torch.Generator().manual_seed(0), sample)
    c = _run(scheduler, torch.Generator().manual_seed(1), sample)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # a list of generators gives each batch item the result it gets alone (batch == one-by-one)
    batch = _run(scheduler, [torch.Generator().manual_seed(s) for s in (3, 4)], sample)
    for i, seed in enumerate((3, 4)):
        single = _run(scheduler, [torch.Generator().manual_seed(seed)], sample[i : i + 1])
        assert torch.allclose(batch[i : i + 1], single)


def test_step_index_begin_index_and_dtype():
    scheduler = EulerMaruyamaScheduler()
    scheduler.set_timesteps(10)
    assert scheduler.step_index is None and scheduler.begin_index is None
    scheduler.set_begin_index(4)  # image-to-image starts part-way
    sample = torch.randn(1, 3, 4, 4, dtype=torch.bfloat16)
    assert scheduler.scale_model_input(sample, scheduler.timesteps[4]) is sample
    out = scheduler.step(torch.zeros_like(sample), scheduler.timesteps[4], sample, return_dict=False)
    assert isinstance(out, tuple) and out[0].dtype == torch.bfloat16 and torch.isfinite(out[0].float()).all()
    assert scheduler.step_index == 5
    scheduler.set_timesteps(10)  # resets the counters
    scheduler.step(torch.zeros_like(sample), scheduler.timesteps[2], sample)
    assert scheduler.step_index == 3


def test_add_noise_matches_ddpm():
    config = DDPMScheduler(beta_schedule="squaredcos_cap_v2").config
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    timesteps = torch.tensor([0, 10, 500, 999])
    expected = DDPMScheduler.from_config(config).add_noise(x0, noise, timesteps)
    assert torch.allclose(EulerMaruyamaScheduler.from_config(config).add_noise(x0, noise, timesteps), expected)


def test_save_load_round_trip(tmp_path):
    scheduler = EulerMaruyamaScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction")
    scheduler.save_pretrained(tmp_path)
    reloaded = EulerMaruyamaScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if k != "_use_default_values"}  # noqa: E731
    assert public(reloaded.config) == public(scheduler.config)
    sample = torch.randn(1, 3, 4, 4)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(_run(reloaded, generator, sample), _run(scheduler, generator.manual_seed(0), sample))


def test_pipeline_records_and_restores_the_scheduler(tmp_path):
    _SchedulerPipeline(scheduler=EulerMaruyamaScheduler(timestep_spacing="trailing")).save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["scheduler"] == ["sdscratch.schedulers.scheduling_euler_maruyama", "EulerMaruyamaScheduler"]
    pipe = _SchedulerPipeline.from_pretrained(tmp_path)
    assert type(pipe.scheduler) is EulerMaruyamaScheduler
    assert pipe.scheduler.config.timestep_spacing == "trailing"


def test_rescale_betas_zero_snr_as_ddpm():
    """`rescale_betas_zero_snr=True` from a DDPM config is honoured: the same ᾱ (ending in 0), finite samples."""
    ddpm = DDPMScheduler(
        rescale_betas_zero_snr=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    scheduler = EulerMaruyamaScheduler.from_config(ddpm.config, timestep_spacing="trailing")
    assert scheduler.config.rescale_betas_zero_snr is True
    assert torch.equal(scheduler.alphas_cumprod, ddpm.alphas_cumprod) and scheduler.alphas_cumprod[-1] == 0
    assert int(scheduler.timesteps[0]) == 999  # "trailing" starts at the zero-SNR timestep
    for prediction_type in ("epsilon", "v_prediction", "sample"):
        config = {**ddpm.config, "timestep_spacing": "trailing", "prediction_type": prediction_type}
        scheduler = EulerMaruyamaScheduler.from_config(config)
        scheduler.set_timesteps(10)
        x = torch.randn(64, generator=torch.Generator().manual_seed(0))
        for t in scheduler.timesteps:
            x = scheduler.step(torch.randn_like(x), t, x, generator=torch.Generator().manual_seed(1)).prev_sample
        assert torch.isfinite(x).all(), prediction_type
    x = _sample_gaussian(EulerMaruyamaScheduler.from_config(ddpm.config, timestep_spacing="trailing"), 200)
    assert torch.isfinite(x).all() and abs(x.mean().item() - 0.3) < 0.05


def test_steps_offset_pushing_a_timestep_out_of_range_raises():
    scheduler = EulerMaruyamaScheduler(steps_offset=1)
    with pytest.raises(ValueError, match="steps_offset"):
        scheduler.set_timesteps(1000)  # leading: 999 + 1 = 1000 is no training timestep
    scheduler.set_timesteps(500)
    assert int(scheduler.timesteps[0]) == 999 and int(scheduler.timesteps[-1]) == 1
    ddpm = DDPMScheduler(steps_offset=1)
    ddpm.set_timesteps(500)
    assert torch.equal(scheduler.timesteps, ddpm.timesteps)


def test_one_step_is_the_hand_euler_maruyama_update():
    """One step written out from Song et al. 2021, eq. 6 (f = -β x / 2, g² = β), in float64, with DDPM's own ᾱ: the
    variance of the jump from t to the next timestep s is 1 - ᾱ_t/ᾱ_s = 1 - prod(α_(s, t]), β_t for adjacent ones."""
    ddpm = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    for num_inference_steps, index in ((1000, 499), (10, 3)):  # adjacent timesteps, then 100 training steps apart
        scheduler = EulerMaruyamaScheduler.from_config(ddpm.config, timestep_spacing="trailing")
        scheduler.set_timesteps(num_inference_steps)
        t, s = int(scheduler.timesteps[index]), int(scheduler.timesteps[index + 1])
        scheduler.set_begin_index(index)
        out = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(1))
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).double()  # the Brownian increment
        alpha_prod = ddpm.alphas_cumprod.double()[t]
        beta_dt = 1 - ddpm.alphas.double()[s + 1 : t + 1].prod()
        if num_inference_steps == 1000:
            assert torch.isclose(beta_dt, ddpm.betas.double()[t])
        score = -eps.double() / (1 - alpha_prod).sqrt()
        expected = x.double() + (0.5 * x.double() + score) * beta_dt + beta_dt.sqrt() * z
        assert torch.allclose(out.prev_sample.double(), expected, atol=1e-5), num_inference_steps
        x0 = (x.double() - (1 - alpha_prod).sqrt() * eps.double()) / alpha_prod.sqrt()
        assert torch.allclose(out.pred_original_sample.double(), x0, atol=1e-4)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"])
def test_every_beta_schedule_is_ddpms(beta_schedule):
    ddpm = DDPMScheduler(beta_schedule=beta_schedule, beta_start=0.0001, beta_end=0.02)
    assert torch.allclose(EulerMaruyamaScheduler.from_config(ddpm.config).alphas_cumprod, ddpm.alphas_cumprod)


def test_low_precision_sample_is_stepped_in_float32():
    """A bfloat16 sample and model output are stepped in float32 (then rounded once): the same result as the step of
    their float32 values, for both outputs, and the same Brownian increment."""
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 3, 8, 8, generator=generator), torch.randn(1, 3, 8, 8, generator=generator)
    x, eps = x.bfloat16(), eps.bfloat16()

    def step(sample, model_output):
        scheduler = EulerMaruyamaScheduler(timestep_spacing="trailing")
        scheduler.set_timesteps(10)
        out = scheduler.step(model_output, scheduler.timesteps[8], sample, generator=torch.Generator().manual_seed(1))
        return out.prev_sample, out.pred_original_sample

    low, high = step(x, eps), step(x.float(), eps.float())
    for a, b in zip(low, high):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b.bfloat16())


def test_negative_custom_timesteps_are_refused():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\)"):
        EulerMaruyamaScheduler().set_timesteps(timesteps=[500, 10, -1])  # ᾱ_{-1} would wrap to ᾱ_999


def test_zero_terminal_snr_first_step_is_finite_in_every_output():
    """ᾱ_999 = 0 with rescale_betas_zero_snr: x̂_0 divides by max(ᾱ_t, 2**-24) (as EulerDiscreteScheduler), so a
    1-step sample (which returns x̂_0) and the x̂_0 of a first step stay finite."""
    scheduler = EulerMaruyamaScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    x = torch.randn(64, generator=torch.Generator().manual_seed(0))
    for num_inference_steps in (1, 10):
        scheduler.set_timesteps(num_inference_steps)
        out = scheduler.step(0.5 * x, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(out.prev_sample).all() and torch.isfinite(out.pred_original_sample).all()
