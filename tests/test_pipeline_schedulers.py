"""The scheduler matrix: every member of `pipe.scheduler.compatibles` (plus our EulerMaruyamaScheduler) either
gives finite images of the right shape or raises a clear error, in text-to-image, img2img and inpainting."""

import importlib.util
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from test_pipeline import CAPTIONS, gen, tiny_pipeline

from sdscratch.text import build_tokenizer


def _scheduler_classes():
    classes = {cls.__name__: cls for cls in DPMSolverMultistepScheduler().compatibles}
    try:
        from sdscratch.schedulers.scheduling_euler_maruyama import EulerMaruyamaScheduler

        classes["EulerMaruyamaScheduler"] = EulerMaruyamaScheduler
    except ImportError:  # written in parallel; the matrix covers it once it exists
        pass
    return dict(sorted(classes.items()))


SCHEDULERS = _scheduler_classes()
# Members that cannot work here, and the words their error must contain.
EXPECTED_ERRORS = {"EDMEulerScheduler": (ValueError, "c_noise")}
if importlib.util.find_spec("torchsde") is None:
    EXPECTED_ERRORS["DPMSolverSDEScheduler"] = (ImportError, "torchsde")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(build_tokenizer(CAPTIONS, model_max_length=12, vocab_size=600))


def test_matrix_covers_the_documented_schedulers():
    documented = {
        "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler", "DPMSolverSDEScheduler", "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler", "EDMEulerScheduler",
    }  # fmt: skip
    assert documented <= set(SCHEDULERS)


def _mode_kwargs(mode):
    image = PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8))
    mask = PIL.Image.new("L", (16, 16), 0)
    mask.paste(255, (4, 4, 12, 12))
    return {
        "one_step": {"num_inference_steps": 1},
        "text2img": {"num_inference_steps": 2},
        "img2img": {"num_inference_steps": 4, "image": image, "strength": 0.5},
        "inpaint": {"num_inference_steps": 2, "image": image, "mask_image": mask, "strength": 1.0},
    }[mode]


@pytest.mark.parametrize("mode", ["one_step", "text2img", "img2img", "inpaint"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_gives_finite_images_or_a_clear_error(pipe, name, mode):
    kwargs = {"prompt": "Cartoon face with glasses", "output_type": "np", "generator": gen(0), **_mode_kwargs(mode)}
    original = pipe.scheduler
    try:
        if name in EXPECTED_ERRORS:
            error, words = EXPECTED_ERRORS[name]
            with pytest.raises(error, match=words):
                pipe.scheduler = SCHEDULERS[name].from_config(original.config)
                pipe(**kwargs)
            return
        pipe.scheduler = SCHEDULERS[name].from_config(original.config)
        images = pipe(**kwargs).images
    finally:
        pipe.scheduler = original
    assert images.shape == (1, 16, 16, 3)
    assert np.isfinite(images).all()


def test_pndm_runge_kutta_warm_up_needs_four_steps(pipe):
    original = pipe.scheduler
    try:
        pipe.scheduler = SCHEDULERS["PNDMScheduler"].from_config(original.config, skip_prk_steps=False)
        with pytest.raises(ValueError, match="num_inference_steps"):
            pipe("face", num_inference_steps=2)
        assert np.isfinite(pipe("face", num_inference_steps=4, output_type="np").images).all()
    finally:
        pipe.scheduler = original


def test_default_scheduler_is_dpm_solver_multistep(pipe):
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.clip_sample is False
    assert torch.is_tensor(pipe.scheduler.betas)


def test_compare_schedulers_example_writes_grid_and_table(tmp_path, capsys, monkeypatch):
    module = _compare_schedulers_script(monkeypatch)
    output = tmp_path / "grid.png"
    module.main(["--steps", "2", "--schedulers", "dpm++,heun,DPMSolverSDEScheduler", "--output", str(output)])
    table = capsys.readouterr().out
    assert PIL.Image.open(output).size == (2 * 128 + 2, 128 + 28)  # two columns, labels below
    assert "HeunDiscreteScheduler" in table and "3" in table.split("HeunDiscreteScheduler")[1].split()[0]
    if "DPMSolverSDEScheduler" in EXPECTED_ERRORS:
        assert "skipped" in table and "torchsde" in table


def test_compare_schedulers_reports_sampling_errors_and_bad_steps(tmp_path, monkeypatch):
    # building a scheduler may be skipped with a reason; an error while sampling is a real one, not a "skipped" row
    module = _compare_schedulers_script(monkeypatch)
    with pytest.raises(SystemExit, match="--steps must be at least 1, got 0"):
        module.main(["--steps", "0", "--output", str(tmp_path / "g.png")])
    from sdscratch.pipelines.pipeline_cartoon_face import CartoonFacePipeline

    calls = []

    def broken(self, *args, **kwargs):
        calls.append(kwargs.get("num_inference_steps"))
        if len(calls) > 1:  # after the warm-up call
            raise ValueError("a bug inside a scheduler")
        return original(self, *args, **kwargs)

    original = CartoonFacePipeline.__call__
    monkeypatch.setattr(CartoonFacePipeline, "__call__", broken)
    with pytest.raises(ValueError, match="a bug inside a scheduler"):
        module.main(["--steps", "2", "--schedulers", "dpm++", "--output", str(tmp_path / "g.png")])


def _missing_weights(name="cartoon-faces"):
    raise FileNotFoundError(name)


def _compare_schedulers_script(monkeypatch):
    """examples/compare_schedulers.py as a module, on the tiny random stand-in pipeline."""
    monkeypatch.setattr("sdscratch.demo.pretrained", _missing_weights)
    script = Path(__file__).resolve().parents[1] / "examples" / "compare_schedulers.py"
    spec = importlib.util.spec_from_file_location("compare_schedulers", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["FlowMatchEulerDiscreteScheduler", "DDIMInverseScheduler", "ScoreSdeVeScheduler"])
def test_registry_refuses_schedulers_outside_the_ddpm_family(pipe, name):
    from sdscratch.schedulers.registry import get_scheduler

    with pytest.raises(ValueError, match="DDPM-compatible") as error:
        get_scheduler(name, pipe.scheduler.config)
    assert name in str(error.value) and "UniPCMultistepScheduler" in str(error.value) and "dpm++" in str(error.value)
    for accepted in [*SCHEDULERS, "euler-maruyama", "dpm++"]:  # every compatible class and the short names
        if accepted in EXPECTED_ERRORS:  # torchsde missing, or EDM (next test)
            continue
        assert get_scheduler(accepted, pipe.scheduler.config) is not None


def test_registry_refuses_edm_schedulers_by_name(pipe):
    """The pipeline refuses EDMEulerScheduler (its c_noise is not the UNet's timesteps): `--scheduler
    EDMEulerScheduler` says so before any model is loaded, not after."""
    from sdscratch.schedulers.registry import check_scheduler_name, get_scheduler

    for call in (lambda: check_scheduler_name("EDMEulerScheduler"), lambda: get_scheduler("EDMEulerScheduler", {})):
        with pytest.raises(ValueError, match="c_noise") as error:
            call()
        assert "EDMEulerScheduler" in str(error.value) and "'euler'" in str(error.value)


def test_load_pipeline_refuses_a_scheduler_before_loading_models(monkeypatch):
    import sdscratch.demo

    monkeypatch.setattr(sdscratch.demo, "set_cpu_threads", lambda: pytest.fail("got past the scheduler check"))
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler"):
        sdscratch.demo.load_pipeline(scheduler="FlowMatchEulerDiscreteScheduler")


def test_compare_schedulers_skips_an_incompatible_scheduler(tmp_path, capsys, monkeypatch):
    module = _compare_schedulers_script(monkeypatch)
    output = tmp_path / "grid.png"
    names = "FlowMatchEulerDiscreteScheduler,dpm++,ScoreSdeVeScheduler"
    module.main(["--steps", "1", "--schedulers", names, "--output", str(output)])
    table = capsys.readouterr().out
    assert PIL.Image.open(output).size == (128, 128 + 28)  # one column: the two others only get a row
    for name in ("FlowMatchEulerDiscreteScheduler", "ScoreSdeVeScheduler"):
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert "skipped" in row and "DDPM-compatible" in row


def _exact_denoiser(scheduler, x0):
    """`_predict_noise` of a perfect model whose data is the single image `x0`: the noise (or v) that takes the sample
    back to `x0`, at any timestep (fractional ones, as KDPM2's, interpolated in log sigma)."""
    log_sigma = ((1 - scheduler.alphas_cumprod.double()) / scheduler.alphas_cumprod.double()).sqrt().log()

    def predict(sample, t, prompt_embeds):
        low = min(int(t), len(log_sigma) - 2)
        alpha = torch.sigmoid(-2 * torch.lerp(log_sigma[low], log_sigma[low + 1], float(t) - low))  # 1/(sigma^2+1)
        noise = (sample.double() - alpha.sqrt() * x0) / (1 - alpha).sqrt()
        if scheduler.config.prediction_type == "v_prediction":
            return (alpha.sqrt() * noise - (1 - alpha).sqrt() * x0).float()
        return noise.float()

    return predict


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n not in EXPECTED_ERRORS])
def test_img2img_and_inpainting_with_an_exact_denoiser_end_on_the_image(name, monkeypatch):
    """With a perfect model of one image, every sampler ends on that image (or as near as in text-to-image: DDIM and
    PNDM with set_alpha_to_one=False), whatever strength it starts from. diffusers' img2img leaves noise with LMS
    (it takes its multistep order from the step index) and PNDM (its cut schedule loses the repeated timestep)."""
    pipe = tiny_pipeline(pixel_space=True, conditional=False)
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
    x0 = torch.rand(1, 3, 16, 16, generator=gen(5), dtype=torch.float64) * 2 - 1
    monkeypatch.setattr(pipe, "_predict_noise", _exact_denoiser(pipe.scheduler, x0))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    kwargs = {"num_inference_steps": 4, "output_type": "latent"}
    # DDIM, DEIS and PNDM stop at alphas_cumprod[0] (set_alpha_to_one=False): x0 plus sqrt(1 - 0.99915) noise
    error = (pipe(generator=gen(0), **kwargs).images - x0).abs().max().item()
    assert error < 0.2
    image = x0.float()
    for strength in (0.5, 0.75):
        for mask_image in (None, mask):
            latents = pipe(generator=gen(0), image=image, mask_image=mask_image, strength=strength, **kwargs).images
            assert (latents - x0).abs().max().item() < error + 1e-3, (strength, mask_image is not None)
    assert torch.equal(pipe(image=image, strength=0.0, **kwargs).images, image)  # no step, PNDM included


@pytest.mark.parametrize("name", ["DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "EulerMaruyamaScheduler"])
def test_trailing_spacing_never_steps_to_timestep_minus_one(name, monkeypatch):
    """diffusers' "trailing" schedule (sdscratch's saved spacing) lists 62 timesteps for 61 steps, the last -1:
    schedulers that index alphas_cumprod by timestep read ᾱ_999 there and ended on noise (NaN: Euler-Maruyama)."""
    pipe = tiny_pipeline(pixel_space=True, conditional=False)
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    x0 = torch.rand(1, 3, 16, 16, generator=gen(5), dtype=torch.float64) * 2 - 1
    monkeypatch.setattr(pipe, "_predict_noise", _exact_denoiser(pipe.scheduler, x0))
    seen = []
    latents = pipe(num_inference_steps=61, generator=gen(0), output_type="latent",
                   callback_on_step_end=lambda p, i, t, kwargs: seen.append(int(t)) or kwargs).images  # fmt: skip
    assert min(seen) == 15 and len(set(seen)) == 61
    assert (latents - x0).abs().max().item() < 0.2  # as with 4 steps in the test above


def test_custom_timesteps_on_a_second_order_scheduler_keep_img2img_steps(pipe):
    """Heun lists 2 * 3 - 1 timesteps for `timesteps=[999, 500, 100]`: `strength` takes a share of the 3 steps."""
    original = pipe.scheduler
    seen = []
    try:
        pipe.scheduler = SCHEDULERS["HeunDiscreteScheduler"].from_config(original.config)
        image = PIL.Image.new("RGB", (16, 16), (200, 30, 30))
        pipe("face", image=image, strength=0.5, timesteps=[999, 500, 100], output_type="latent",
             callback_on_step_end=lambda p, i, t, kwargs: seen.append(int(t)) or kwargs)  # fmt: skip
    finally:
        pipe.scheduler = original
    assert seen == [100]  # int(3 * 0.5) = 1 step, from the last timestep (it used to run none: the image came back)


def test_pndm_runge_kutta_cannot_start_part_way(pipe):
    original = pipe.scheduler
    image = PIL.Image.new("RGB", (16, 16), (200, 30, 30))
    try:
        pipe.scheduler = SCHEDULERS["PNDMScheduler"].from_config(original.config, skip_prk_steps=False)
        with pytest.raises(ValueError, match="skip_prk_steps=False cannot start part-way"):
            pipe("face", image=image, strength=0.5, num_inference_steps=4)
        assert np.isfinite(
            pipe("face", image=image, strength=1.0, num_inference_steps=4, output_type="np").images
        ).all()
    finally:
        pipe.scheduler = original


# What each short name means (docs/architecture.md, README): the diffusers class, and the settings it forces
ALIAS_CONFIGS = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpm-single": ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "ddpm": ("DDPMScheduler", {"clip_sample": False}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
    "kdpm2-a": ("KDPM2AncestralDiscreteScheduler", {}),
    "deis": ("DEISMultistepScheduler", {"algorithm_type": "deis"}),
    "euler-maruyama": ("EulerMaruyamaScheduler", {}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALIAS_CONFIGS))
def test_each_short_name_builds_its_documented_scheduler_on_the_trained_schedule(name):
    """From a config whose other settings differ from the alias's (3rd-order DPM-Solver (not ++), clip_sample=True, PNDM's
    Runge-Kutta warm-up), each short name gives its class with its settings forced, and keeps the training schedule."""
    from sdscratch.schedulers.registry import SCHEDULER_ALIASES, get_scheduler

    assert set(SCHEDULER_ALIASES) == set(ALIAS_CONFIGS)
    training = {"beta_schedule": "linear", "beta_start": 0.0002, "beta_end": 0.03, "prediction_type": "v_prediction",
                "timestep_spacing": "trailing", "num_train_timesteps": 500}  # fmt: skip
    config = {**training, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3,
              "clip_sample": True, "skip_prk_steps": False}  # fmt: skip
    class_name, forced = ALIAS_CONFIGS[name]
    scheduler = get_scheduler(name, config)
    assert type(scheduler).__name__ == class_name
    for key, value in {**training, **forced}.items():
        assert scheduler.config[key] == value, key


@pytest.mark.parametrize("algorithm_type", ["sde-dpmsolver++", "sde-dpmsolver", "dpmsolver"])
def test_every_short_name_builds_on_any_dpm_solver_config(algorithm_type):
    """A short name means its own algorithm, whatever DPM-Solver config it is built on (swapping in place, as the
    README shows): "deis" on an SDE-DPM-Solver++ config raised diffusers' NotImplementedError ("sde-dpmsolver++ is
    not implemented for DEISMultistepScheduler"), and "dpm-single" kept the SDE variant, a stochastic sampler."""
    from diffusers import DPMSolverMultistepScheduler

    from sdscratch.pipelines.pipeline_utils import default_scheduler_config
    from sdscratch.schedulers.registry import SCHEDULER_ALIASES, get_scheduler

    final = {} if algorithm_type.endswith("++") else {"final_sigmas_type": "sigma_min"}  # diffusers refuses "zero"
    config = DPMSolverMultistepScheduler.from_config(
        default_scheduler_config(), algorithm_type=algorithm_type, **final
    )
    config = config.config
    built = {name: get_scheduler(name, config) for name in SCHEDULER_ALIASES}
    assert built["deis"].config.algorithm_type == "deis"
    assert built["dpm-single"].config.algorithm_type == "dpmsolver++"  # else its step is stochastic (below)
    assert built["dpm++"].config.algorithm_type == "dpmsolver++"
    # deterministic (DEIS's step takes no generator at all): the same step whatever generator is given
    sample, noise_pred = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(1, 4, 8, 8)
    for name in ("dpm-single", "dpm++"):
        steps = []
        for seed in (0, 1):
            scheduler = get_scheduler(name, config)
            scheduler.set_timesteps(4)
            t = scheduler.timesteps[0]
            steps.append(
                scheduler.step(noise_pred, t, sample, generator=torch.Generator().manual_seed(seed)).prev_sample
            )
        torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=0, msg=name)


def test_dpm_plus_plus_after_dpm_plus_plus_karras_is_not_karras():
    """Each swap builds on the scheduler in place (README: `get_scheduler(name, pipe.scheduler.config)`): "dpm++"
    after "dpm++-karras" kept use_karras_sigmas=True from its config, so the two drew the same images."""
    from sdscratch.pipelines.pipeline_utils import make_scheduler
    from sdscratch.schedulers.registry import get_scheduler

    config = make_scheduler().config
    plain = get_scheduler("dpm++", get_scheduler("dpm++-karras", config).config)
    assert plain.config.use_karras_sigmas is False
    fresh = get_scheduler("dpm++", config)
    plain.set_timesteps(5)
    fresh.set_timesteps(5)
    assert plain.timesteps.tolist() == fresh.timesteps.tolist() == [999, 799, 599, 399, 199]


@pytest.mark.parametrize("spacing", ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"])
def test_a_short_name_samples_its_own_sigmas_whatever_config_it_is_built_on(spacing):
    """The short names "euler", "heun", "lms", "kdpm2"... built on a config with Karras (or exponential, beta) sigmas kept them and
    sampled other timesteps than their name says; a class name keeps them, as diffusers' `from_config` does."""
    from diffusers import EulerDiscreteScheduler

    from sdscratch.pipelines.pipeline_utils import make_scheduler
    from sdscratch.schedulers.registry import SCHEDULER_ALIASES, get_scheduler

    config = make_scheduler().config
    other = EulerDiscreteScheduler.from_config(config, **{spacing: True}).config
    checked = 0
    for name in SCHEDULER_ALIASES:
        if name == "dpm++-karras":
            continue
        built, fresh = get_scheduler(name, other), get_scheduler(name, config)
        built.set_timesteps(6)
        fresh.set_timesteps(6)
        assert built.timesteps.tolist() == fresh.timesteps.tolist(), name
        checked += spacing in built.config
    assert checked >= 6  # euler, euler-a, heun, lms, kdpm2, kdpm2-a, dpm++, ... accept the flag
    kept = get_scheduler("EulerDiscreteScheduler", other)
    assert kept.config[spacing] is True
