"""CartoonFacePipeline: text-to-image, img2img, inpainting, interpolation, save/load, bad input.

Tiny seeded components (our SmallVAE / SmallUNet / offline tokenizer + CLIP text encoder), CPU, 2-3 steps.
The scheduler matrix lives in test_pipeline_schedulers.py.
"""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)

from sdscratch import CartoonFacePipeline, SmallUNet, SmallVAE
from sdscratch.pipelines.pipeline_utils import default_scheduler_config, make_scheduler, slerp
from sdscratch.text import build_text_encoder, build_tokenizer

CAPTIONS = [
    "Cartoon face with glasses, without facial hair, black hair and with white skin",
    "Cartoon face without glasses, with facial hair, orange hair and with dark skin",
] * 4
PROMPT = "Cartoon face with glasses"
STEPS = 2


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CAPTIONS, model_max_length=12, vocab_size=600)


def tiny_pipeline(tokenizer=None, pixel_space=False, conditional=True, channels=3, scheduler=None):
    """A seeded tiny pipeline: 16x16 images; latent 8x8x4 (or pixel space 16x16xchannels)."""
    torch.manual_seed(0)
    vae = None
    if not pixel_space:
        vae = SmallVAE(in_channels=channels, out_channels=channels, block_out_channels=(8, 16), norm_num_groups=8,
                       sample_size=16, latent_channels=4, scaling_factor=0.5)  # fmt: skip
    unet_channels = 4 if vae is not None else channels
    unet = SmallUNet(
        sample_size=8 if vae is not None else 16, in_channels=unet_channels, out_channels=unet_channels,
        block_out_channels=(8, 16), transformer_levels=(False, True), attention_head_dim=8, norm_num_groups=8,
        cross_attention_dim=16 if conditional else None,
    )  # fmt: skip
    text_encoder = None
    if conditional:
        text_encoder = build_text_encoder(
            tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
    pipe = CartoonFacePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer if conditional else None,
        unet=unet,
        scheduler=scheduler or make_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # as from_pretrained leaves them (train-mode kernels differ in the last bits)
    return pipe


@pytest.fixture
def pipe(tokenizer):
    return tiny_pipeline(tokenizer)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def run(pipe, prompt=PROMPT, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "output_type": "np", "generator": gen(0), **kwargs}
    return pipe(prompt, **kwargs).images


# ---------------------------------------------------------------- text-to-image


def test_output_types_and_return_dict(pipe):
    pil = pipe(PROMPT, num_inference_steps=STEPS, generator=gen()).images
    assert len(pil) == 1 and isinstance(pil[0], PIL.Image.Image) and pil[0].size == (16, 16) and pil[0].mode == "RGB"
    array = run(pipe)
    assert array.shape == (1, 16, 16, 3) and array.min() >= 0 and array.max() <= 1
    tensor = run(pipe, output_type="pt")
    assert tensor.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), array, atol=1e-6)
    assert run(pipe, output_type="latent").shape == (1, 4, 8, 8)
    output = pipe(PROMPT, num_inference_steps=STEPS, generator=gen(), output_type="np", return_dict=False)
    assert isinstance(output, tuple) and np.array_equal(output[0], array)
    assert (pipe.vae_scale_factor, pipe.unet_scale_factor) == (2, 2)


def test_same_seed_same_image_other_seed_other_image(pipe):
    np.testing.assert_array_equal(run(pipe), run(pipe))
    assert not np.allclose(run(pipe), run(pipe, generator=gen(1)))


def test_batch_equals_one_by_one(pipe):
    prompts = [PROMPT, "Cartoon face without glasses"]
    batch = run(pipe, prompts, generator=[gen(0), gen(1)])
    singles = [run(pipe, p, generator=gen(s)) for p, s in zip(prompts, (0, 1))]
    np.testing.assert_allclose(batch, np.concatenate(singles), atol=1e-5)


def test_num_images_per_prompt(pipe):
    images = run(pipe, [PROMPT, "orange hair"], num_images_per_prompt=2, generator=[gen(s) for s in range(4)])
    assert images.shape == (4, 16, 16, 3)
    # the order is prompt 0 (twice), prompt 1 (twice), as diffusers; each image its own generator
    np.testing.assert_allclose(images[2], run(pipe, "orange hair", generator=gen(2))[0], atol=1e-5)


def test_classifier_free_guidance_is_one_batched_unet_call(pipe):
    batch_sizes = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    guided = run(pipe, guidance_scale=5.0)
    assert batch_sizes == [2] * STEPS  # uncond + cond in one call
    batch_sizes.clear()
    unguided = run(pipe, guidance_scale=1.0)
    assert batch_sizes == [1] * STEPS
    assert not np.allclose(guided, unguided)
    assert not np.allclose(guided, run(pipe, guidance_scale=5.0, negative_prompt="black hair"))


def test_encode_prompt_alone_and_prompt_embeds(pipe):
    embeds, negative = pipe.encode_prompt([PROMPT, "x"], torch.device("cpu"), 3, True, negative_prompt=["a", "b"])
    assert embeds.shape == negative.shape == (6, 12, 16)
    torch.testing.assert_close(embeds[0], embeds[2])
    embeds, negative = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, False)
    assert negative is None
    # precomputed embeddings reproduce the prompt path exactly
    uncond, _ = pipe.encode_prompt("", torch.device("cpu"), 1, False)
    from_embeds = run(pipe, None, prompt_embeds=embeds, negative_prompt_embeds=uncond)
    np.testing.assert_array_equal(from_embeds, run(pipe))


def test_callback_on_step_end_changes_latents(pipe):
    seen = []

    def callback(pipeline, step, timestep, callback_kwargs):
        seen.append((step, sorted(callback_kwargs)))
        return {"latents": callback_kwargs["latents"] * 0.0}

    changed = run(pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert seen == [(i, ["latents", "prompt_embeds"]) for i in range(STEPS)]
    assert not np.allclose(changed, run(pipe))


def test_custom_timesteps_and_second_order_progress(tokenizer):
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(DDPMScheduler))
    assert run(pipe, timesteps=[999, 500, 10]).shape == (1, 16, 16, 3)
    assert pipe.num_timesteps == 3
    pipe.scheduler = make_scheduler(HeunDiscreteScheduler)
    ticks = []
    pipe.progress_bar = _counting_progress_bar(ticks)
    run(pipe, num_inference_steps=3)
    assert pipe.num_timesteps == 5 and ticks == [3, 3]  # 2 * 3 - 1 UNet calls, 3 ticks of a bar of 3


def _counting_progress_bar(ticks):
    class Bar:
        def __init__(self, total):
            self.total, self.n = total, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            ticks.extend([self.total, self.n])

        def update(self):
            self.n += 1

    return lambda total: Bar(total)


def test_pixel_space_grayscale_digits(tokenizer):
    pipe = tiny_pipeline(tokenizer, pixel_space=True, channels=1)
    assert pipe.vae_scale_factor == 1
    image = pipe("8", num_inference_steps=STEPS, generator=gen()).images[0]
    assert image.mode == "L" and image.size == (16, 16)
    assert run(pipe, "8").shape == (1, 16, 16, 1)


def test_unconditional_unet_needs_no_text_parts():
    pipe = tiny_pipeline(conditional=False)
    assert pipe.text_encoder is None and pipe.tokenizer is None
    none_prompt = run(pipe, None)
    np.testing.assert_array_equal(none_prompt, run(pipe, ""))
    assert none_prompt.shape == (1, 16, 16, 3) and np.isfinite(none_prompt).all()


def test_text_conditioned_unet_without_text_encoder_takes_prompt_embeds(pipe):
    embeds, negative = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True)
    reference = run(pipe, None, prompt_embeds=embeds, negative_prompt_embeds=negative)
    headless = CartoonFacePipeline.from_pipe(pipe, text_encoder=None, tokenizer=None)
    np.testing.assert_array_equal(
        run(headless, None, prompt_embeds=embeds, negative_prompt_embeds=negative), reference
    )
    with pytest.raises(ValueError, match="prompt"):
        run(headless)
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        run(headless, None, prompt_embeds=embeds)  # guidance needs the unconditional embeddings too


def test_unconditional_sampling_of_a_text_model_is_the_empty_prompt(pipe):
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    unconditional = run(pipe, None)
    assert calls == [1] * STEPS  # guiding "" towards "" is a no-op: skipped
    np.testing.assert_array_equal(unconditional, run(pipe, "", guidance_scale=1.0))


# ---------------------------------------------------------------- img2img, inpainting, interpolation


def _face():
    return PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8))


@torch.no_grad()
def test_img2img_strength_edges(pipe):
    image = _face()
    # strength 0: no step runs, the image comes back through the VAE (posterior mean, decoded)
    out = run(pipe, image=image, strength=0.0, output_type="pt")
    pixels = pipe.image_processor.preprocess(image)
    expected = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mode()).sample
    torch.testing.assert_close(out, (expected / 2 + 0.5).clamp(0, 1))
    # strength 1: pure noise, the text-to-image result for the same seed
    np.testing.assert_allclose(run(pipe, image=image, strength=1.0), run(pipe), atol=1e-6)
    # in between: fewer steps, a result depending on the image
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    half = run(pipe, image=image, strength=0.5, num_inference_steps=4)
    assert len(calls) == 2 and not np.allclose(half, run(pipe, image=image.rotate(90), strength=0.5))


def test_img2img_pixel_space_strength_zero_is_identity(tokenizer):
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    np.testing.assert_allclose(run(pipe, image=image, strength=0.0), image, atol=1e-6)


def test_inpainting_keeps_unmasked_region(tokenizer):
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    mask = np.zeros((1, 16, 16, 1), dtype=np.float32)
    mask[:, 4:12, 4:12] = 1.0  # white = repaint
    out = run(pipe, image=image, mask_image=mask, strength=1.0, num_inference_steps=3)
    keep = mask[0, :, :, 0] == 0
    np.testing.assert_allclose(out[0][keep], image[0][keep], atol=1e-5)
    assert np.abs(out[0][~keep] - image[0][~keep]).mean() > 0.05


@torch.no_grad()
def test_inpainting_in_latent_space(pipe):
    image = _face()
    mask = PIL.Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))  # repaint the left half
    latents = run(pipe, image=image, mask_image=mask, strength=1.0, output_type="latent")
    image_latents = pipe.encode_image(pipe.image_processor.preprocess(image))
    torch.testing.assert_close(latents[..., 4:], image_latents[..., 4:])  # latent mask: left 4 columns
    assert not torch.allclose(latents[..., :4], image_latents[..., :4])
    # (in pixels the kept half is the VAE's reconstruction, up to the decoder's global mid-block attention)


def test_interpolation_is_smooth(pipe):
    frames = pipe.interpolate(PROMPT, "orange hair", seed_a=0, seed_b=1, num_images=5, num_inference_steps=STEPS,
                              output_type="np").images  # fmt: skip
    assert frames.shape == (5, 16, 16, 3)
    steps = [np.abs(frames[i + 1] - frames[i]).mean() for i in range(4)]
    assert max(steps) < np.abs(frames[-1] - frames[0]).mean()
    np.testing.assert_allclose(frames[0], run(pipe)[0], atol=1e-5)  # frame 0 = (a, seed_a), both at the default scale
    unconditional = tiny_pipeline(conditional=False).interpolate(
        seed_a=0, seed_b=1, num_images=3, num_inference_steps=1
    )
    assert len(unconditional.images) == 3


def test_interpolation_frame_zero_is_the_plain_call_with_a_stochastic_scheduler(pipe):
    """The step noise of an ancestral sampler continues seed_a's stream after the initial noise, as in a plain
    call (it used to restart it: frame 0 then reused its initial noise as step noise)."""
    from diffusers import EulerAncestralDiscreteScheduler

    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    frames = pipe.interpolate(PROMPT, "orange hair", seed_a=3, seed_b=4, num_images=3, num_inference_steps=STEPS,
                              output_type="np").images  # fmt: skip
    np.testing.assert_allclose(frames[0], run(pipe, generator=gen(3))[0], atol=1e-5)
    with pytest.raises(ValueError, match="num_images_per_prompt"):
        pipe.interpolate(PROMPT, num_images=2, num_images_per_prompt=2)


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(slerp(0.0, a, b), a)
    torch.testing.assert_close(slerp(1.0, a, b), b)
    assert slerp(0.5, a, b).norm() > torch.lerp(a, b, 0.5).norm()  # stays on the sphere, lerp cuts inside


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip_identical_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    files = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file())
    assert "model_index.json" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert {"vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors"} <= set(files)
    loaded = CartoonFacePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.vae) is SmallVAE and type(loaded.scheduler) is type(pipe.scheduler)
    assert set(loaded.components) == {"vae", "text_encoder", "tokenizer", "unet", "scheduler"}
    # identical weights; memory-mapped safetensors can pick other SIMD kernels, so allow float rounding only
    np.testing.assert_allclose(run(loaded), run(pipe), atol=1e-5)


def test_fp16_variant_loads_as_float32(pipe, tmp_path):
    reference = run(pipe)
    pipe.to(torch.float16).save_pretrained(tmp_path, variant="fp16")  # storage only: no fp16 compute on CPU
    assert (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = CartoonFacePipeline.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float32)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.dtype == loaded.vae.dtype == loaded.text_encoder.dtype == torch.float32
    np.testing.assert_allclose(run(loaded), reference, atol=0.02)


def test_half_precision_files_are_upcast_unless_torch_dtype_is_given(pipe, tmp_path):
    # Shipped models are stored in fp16 (no variant); loading them must not compute in fp16 on a CPU.
    pipe.to(torch.float16).save_pretrained(tmp_path)
    loaded = CartoonFacePipeline.from_pretrained(tmp_path)
    assert loaded.unet.dtype == loaded.vae.dtype == loaded.text_encoder.dtype == torch.float32
    import warnings

    with warnings.catch_warnings():  # both names work, without diffusers 0.42's `torch_dtype` deprecation warning
        warnings.simplefilter("error", FutureWarning)
        for name in ("torch_dtype", "dtype"):
            bf16 = CartoonFacePipeline.from_pretrained(tmp_path, **{name: torch.bfloat16})
            assert bf16.unet.dtype == bf16.text_encoder.dtype == torch.bfloat16


@pytest.mark.parametrize("force_upcast", [True, False])
def test_float16_vae_runs_in_float32_when_its_config_forces_upcast(pipe, tmp_path, force_upcast):
    # as StableDiffusionXLPipeline: a float16 VAE whose config says force_upcast encodes / decodes in float32
    pipe.save_pretrained(tmp_path)
    mixed = CartoonFacePipeline.from_pretrained(tmp_path, torch_dtype={"vae": torch.float16, "default": torch.float32})
    mixed.set_progress_bar_config(disable=True)
    mixed.vae.register_to_config(force_upcast=force_upcast)
    seen = []
    for part in (mixed.vae.encoder, mixed.vae.decoder):
        part.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    image = PIL.Image.fromarray((run(pipe)[0] * 255).astype(np.uint8))
    for kwargs in ({}, {"image": image, "strength": 0.5, "num_inference_steps": 4}):
        np.testing.assert_allclose(run(mixed, **kwargs), run(pipe, **kwargs), atol=0.05)
    assert seen == [torch.float32 if force_upcast else torch.float16] * 3  # decode, encode, decode
    assert mixed.vae.dtype == torch.float16  # back as loaded


@pytest.mark.parametrize(
    "torch_dtype",
    [{"unet": torch.bfloat16}, {"vae": torch.float32, "default": torch.bfloat16}],
    ids=["bf16_unet", "fp32_vae"],
)
def test_components_in_different_dtypes(pipe, tmp_path, torch_dtype):
    # diffusers' per-component `torch_dtype` (e.g. a bf16 UNet with a float32 VAE): each model gets its own dtype
    pipe.save_pretrained(tmp_path)
    mixed = CartoonFacePipeline.from_pretrained(tmp_path, torch_dtype=torch_dtype)
    mixed.set_progress_bar_config(disable=True)
    assert len({mixed.vae.dtype, mixed.unet.dtype, mixed.text_encoder.dtype}) == 2
    image = PIL.Image.fromarray((run(pipe)[0] * 255).astype(np.uint8))
    for kwargs in ({}, {"image": image, "strength": 0.5, "num_inference_steps": 4}):
        np.testing.assert_allclose(run(mixed, **kwargs), run(pipe, **kwargs), atol=0.1)


def test_none_components_save_and_load(tmp_path):
    pipe = tiny_pipeline(pixel_space=True, conditional=False)
    pipe.save_pretrained(tmp_path)
    loaded = CartoonFacePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vae is None and loaded.text_encoder is None and loaded.tokenizer is None
    np.testing.assert_allclose(run(loaded, None), run(pipe, None), atol=1e-5)


def test_from_pipe_shares_weights_and_to_dtype(pipe):
    other = CartoonFacePipeline.from_pipe(pipe, scheduler=make_scheduler(EulerDiscreteScheduler))
    assert other.unet is pipe.unet and other.vae is pipe.vae and other.text_encoder is pipe.text_encoder
    assert isinstance(other.scheduler, EulerDiscreteScheduler)
    pipe.to(torch.bfloat16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16


def test_saved_scheduler_config_is_explicit(pipe, tmp_path):
    config = default_scheduler_config()
    assert config["clip_sample"] is False and config["prediction_type"] == "epsilon"
    pipe.save_pretrained(tmp_path)
    saved = (tmp_path / "scheduler" / "scheduler_config.json").read_text()
    assert '"prediction_type": "epsilon"' in saved and '"timestep_spacing": "trailing"' in saved


# ---------------------------------------------------------------- parity with diffusers parts


def diffusers_pipelines(tokenizer, text_layers=1, scheduler=None):
    """Ours and `StableDiffusionPipeline` on the same seeded diffusers AutoencoderKL + UNet2DConditionModel."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16)  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, cross_attention_dim=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2,
    )  # fmt: skip
    text_encoder = build_text_encoder(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=text_layers,
                                      num_attention_heads=2)  # fmt: skip
    scheduler = scheduler or make_scheduler()
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    ours = CartoonFacePipeline(**parts)
    theirs = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                     requires_safety_checker=False)  # fmt: skip
    for p in (ours, theirs):
        p.set_progress_bar_config(disable=True)
    return ours, theirs


def test_parity_with_stable_diffusion_pipeline_on_diffusers_parts(tokenizer):
    """Same diffusers AutoencoderKL + UNet2DConditionModel, same seed: our pipeline == StableDiffusionPipeline."""
    ours, theirs = diffusers_pipelines(tokenizer)
    kwargs = dict(negative_prompt="black hair", num_images_per_prompt=2, guidance_scale=3.0)
    np.testing.assert_allclose(run(ours, **kwargs), run(theirs, **kwargs), atol=1e-6)
    # guidance_rescale (Lin et al. 2023) as StableDiffusionPipeline applies it
    rescaled = run(ours, **kwargs, guidance_rescale=0.7)
    np.testing.assert_allclose(rescaled, run(theirs, **kwargs, guidance_rescale=0.7), atol=1e-6)
    assert np.abs(rescaled - run(ours, **kwargs)).max() > 1e-4  # applied: 100x the parity tolerance


def test_guidance_rescale_does_not_import_stable_diffusion_and_its_warnings():
    """`rescale_noise_cfg` is copied from diffusers: importing it from diffusers' Stable Diffusion module pulled
    transformers' image processors, which printed two torchvision warnings into the user's output."""
    import subprocess
    import sys

    code = (
        "import sys, torch, sdscratch\n"
        "pipe = sdscratch.CartoonFacePipeline.from_pretrained(sdscratch.pretrained('digits'))\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "pipe('8', num_inference_steps=2, guidance_rescale=0.5, generator=torch.Generator().manual_seed(0))\n"
        "print(sorted(m for m in sys.modules if 'stable_diffusion' in m))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]" and "torchvision" not in result.stderr


def test_sigmas_and_clip_skip_as_stable_diffusion_pipeline(tokenizer, monkeypatch):
    """Custom `sigmas` (Euler) and `clip_skip` give StableDiffusionPipeline's images on the same parts."""
    from transformers import CLIPTextModel

    # diffusers 0.42 reads `text_encoder.text_model`, which transformers >= 5.6 removed (diffusers issue 14124)
    monkeypatch.setattr(CLIPTextModel, "text_model", property(lambda self: self), raising=False)
    ours, theirs = diffusers_pipelines(tokenizer, text_layers=2, scheduler=make_scheduler(EulerDiscreteScheduler))
    karras = make_scheduler(EulerDiscreteScheduler, use_karras_sigmas=True)
    karras.set_timesteps(3)
    sigmas = karras.sigmas.tolist()  # 3 steps, then the final sigma 0
    kwargs = dict(negative_prompt="black hair", guidance_scale=3.0)
    with_sigmas = run(ours, **kwargs, sigmas=sigmas)
    np.testing.assert_allclose(with_sigmas, run(theirs, **kwargs, sigmas=sigmas), atol=1e-6)
    assert np.abs(with_sigmas - run(ours, **kwargs, num_inference_steps=3)).max() > 1e-3  # not the default grid
    ours.scheduler.set_timesteps(3)  # the default grid given as sigmas is the default call
    np.testing.assert_allclose(run(ours, **kwargs, sigmas=ours.scheduler.sigmas.tolist()),
                               run(ours, **kwargs, num_inference_steps=3), atol=1e-6)  # fmt: skip
    # diffusers skips CLIP layers for the prompt only: equal without a negative prompt (no guidance)
    skipped = run(ours, guidance_scale=1.0, clip_skip=1)
    np.testing.assert_allclose(skipped, run(theirs, guidance_scale=1.0, clip_skip=1), atol=1e-6)
    assert np.abs(skipped - run(ours, guidance_scale=1.0)).max() > 1e-3
    # ours skips them for the negative prompt too: the embeddings of "" through layer 1 and the final norm
    cpu = torch.device("cpu")
    _, negative = ours.encode_prompt(PROMPT, cpu, 1, True, negative_prompt="black hair", clip_skip=1)
    torch.testing.assert_close(negative, ours.encode_prompt("black hair", cpu, 1, False, clip_skip=1)[0])
    hidden = ours.text_encoder(tokenizer("black hair", padding="max_length", return_tensors="pt").input_ids,
                               output_hidden_states=True).hidden_states  # fmt: skip
    torch.testing.assert_close(negative, ours.text_encoder.final_layer_norm(hidden[1]))


def test_sigmas_in_img2img_and_interpolate_with_clip_skip(tokenizer):
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(EulerDiscreteScheduler))
    sigmas = [10.0, 3.0, 0.5, 0.0]
    # strength 1 starts from pure noise: the text-to-image images, with the same custom sigmas
    np.testing.assert_allclose(run(pipe, sigmas=sigmas, image=_face(), strength=1.0), run(pipe, sigmas=sigmas),
                               atol=1e-6)  # fmt: skip
    half = run(pipe, sigmas=sigmas, image=_face(), strength=0.67)  # the last 2 of the 3 steps
    assert half.shape == (1, 16, 16, 3) and np.isfinite(half).all()
    with pytest.raises(ValueError, match="`strength`=0.2 with `num_inference_steps`=3"):  # counted from sigmas
        run(pipe, sigmas=sigmas, image=_face(), strength=0.2)
    pipe.text_encoder = build_text_encoder(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                           num_attention_heads=2)  # fmt: skip
    frames = pipe.interpolate(PROMPT, "other", num_images=2, num_inference_steps=STEPS, output_type="np",
                              guidance_scale=3.0, clip_skip=1).images  # fmt: skip
    np.testing.assert_allclose(frames[:1], run(pipe, guidance_scale=3.0, clip_skip=1), atol=1e-6)
    assert np.abs(frames[:1] - run(pipe, guidance_scale=3.0)).max() > 1e-3


@pytest.mark.parametrize(
    "scheduler, kwargs, match",
    [
        (DDIMScheduler, dict(sigmas=[10.0, 1.0, 0.0]), "`sigmas`: DDIMScheduler.set_timesteps does not accept"),
        (UniPCMultistepScheduler, dict(sigmas=[10.0, 1.0, 0.0]), "`sigmas`: UniPCMultistepScheduler takes custom"),
        (EulerDiscreteScheduler, dict(sigmas=[1.0, 10.0, 0.0]), "`sigmas` must be a list of at least 2"),
        (EulerDiscreteScheduler, dict(sigmas=[10.0, -1.0]), "`sigmas` must be a list of at least 2"),
        (EulerDiscreteScheduler, dict(sigmas=[10.0, float("nan")]), "`sigmas` must be a list of at least 2"),
        (EulerDiscreteScheduler, dict(sigmas=[10.0]), "`sigmas` must be a list of at least 2"),
        (EulerDiscreteScheduler, dict(sigmas="10, 0"), "`sigmas` must be a list of at least 2"),
        (EulerDiscreteScheduler, dict(sigmas=[10.0, 0.0], timesteps=[999]), "either `timesteps` or `sigmas`"),
        (EulerDiscreteScheduler, dict(clip_skip=1), "`clip_skip` must be an integer in \\[0, 1\\)"),
        (EulerDiscreteScheduler, dict(clip_skip=-1), "`clip_skip` must be an integer"),
        (EulerDiscreteScheduler, dict(clip_skip=True), "`clip_skip` must be an integer"),
        (EulerDiscreteScheduler, dict(clip_skip=0.5), "`clip_skip` must be an integer"),
    ],
)
def test_bad_sigmas_and_clip_skip_raise_before_the_models(tokenizer, scheduler, kwargs, match):
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(scheduler))
    for model in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder, pipe.text_encoder):
        model.register_forward_pre_hook(lambda *args: pytest.fail("a model ran before the inputs were checked"))
    with pytest.raises(ValueError, match=match):
        pipe(PROMPT, **kwargs)
    with pytest.raises(ValueError, match=match):
        pipe.interpolate(PROMPT, "other", num_images=2, **kwargs)


@pytest.mark.parametrize(
    "scheduler, config, kwargs, match",
    [
        # refused as a scheduler, not by its own set_timesteps (which wants a tensor: AttributeError)
        (EDMEulerScheduler, {}, dict(sigmas=[10.0, 1.0, 0.0]), "`scheduler`: EDMEulerScheduler feeds the UNet"),
        # UniPC takes no custom timesteps: not offered as the way out
        (UniPCMultistepScheduler, {}, dict(sigmas=[10.0, 1.0, 0.0]), r"EulerDiscreteScheduler \(or pass `num_infer"),
        (UniPCMultistepScheduler, dict(use_flow_sigmas=True), dict(sigmas=[10.0, 1.0, 0.0]), r"levels in \(0, 1\]"),
        # diffusers' set_timesteps crashed here ('NoneType' + 'int') after the text encoder
        (DPMSolverMultistepScheduler, dict(use_flow_sigmas=True), dict(timesteps=[999, 500]), "use_flow_sigmas=True"),
    ],
)
def test_custom_schedules_a_scheduler_cannot_take_raise_before_the_models(tokenizer, scheduler, config, kwargs, match):
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(scheduler, **config))
    for model in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder, pipe.text_encoder):
        model.register_forward_pre_hook(lambda *args: pytest.fail("a model ran before the inputs were checked"))
    with pytest.raises(ValueError, match=match) as raised:
        pipe(PROMPT, **kwargs)
    assert "or `timesteps`" not in str(raised.value)


def test_a_swapped_scheduler_is_judged_by_its_own_config_keys(tokenizer, tmp_path):
    """`from_config` keeps the previous scheduler's keys in the new one's config: an Euler built from the shipped
    DPM-Solver++ config carries `use_flow_sigmas=False`, a DDPM from a Karras DPM-Solver `use_karras_sigmas=True`,
    a DDIM from a Runge-Kutta PNDM `skip_prk_steps=False`. Those are not the new scheduler's settings: the checks
    refused `sigmas`, `timesteps`, 2 steps and img2img that diffusers' StableDiffusionPipeline runs."""
    pipe = tiny_pipeline(tokenizer)
    pipe.scheduler.save_pretrained(tmp_path)  # a saved DPM-Solver++ config (as the shipped models') writes every key
    pipe.scheduler = DPMSolverMultistepScheduler.from_pretrained(tmp_path)
    euler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    assert euler.config.get("use_flow_sigmas") is False  # carried over, not an Euler argument
    sigmas = [14.6, 3.0, 0.0]
    pipe.scheduler = euler
    swapped = run(pipe, sigmas=sigmas)
    pipe.scheduler = make_scheduler(EulerDiscreteScheduler)
    np.testing.assert_allclose(swapped, run(pipe, sigmas=sigmas), atol=1e-6)

    pipe.scheduler = DDPMScheduler.from_config(make_scheduler(use_karras_sigmas=True).config)
    karras_born = run(pipe, timesteps=[999, 500])
    pipe.scheduler = make_scheduler(DDPMScheduler)
    np.testing.assert_allclose(karras_born, run(pipe, timesteps=[999, 500]), atol=1e-6)

    pipe.scheduler = DDIMScheduler.from_config(make_scheduler(PNDMScheduler, skip_prk_steps=False).config)
    prk_born = [run(pipe, num_inference_steps=2), run(pipe, num_inference_steps=4, image=_face(), strength=0.5)]
    pipe.scheduler = make_scheduler(DDIMScheduler)
    np.testing.assert_allclose(prk_born[0], run(pipe, num_inference_steps=2), atol=1e-6)
    np.testing.assert_allclose(prk_born[1], run(pipe, num_inference_steps=4, image=_face(), strength=0.5), atol=1e-6)
    # the scheduler's own settings still count
    pipe.scheduler = make_scheduler(PNDMScheduler, skip_prk_steps=False)
    with pytest.raises(ValueError, match="`num_inference_steps`=2: PNDMScheduler with skip_prk_steps=False"):
        run(pipe, num_inference_steps=2)


def test_latents_of_a_non_square_size_are_checked_against_height_and_width(pipe):
    """The latents' expected shape comes from `height` x `width` (8 x 16 latents for 16 x 32 pixels), whatever the
    UNet's cross_attention_dim (16 here, as the tiny pipeline's size: a name clash with `width` went unseen)."""
    noise = torch.randn(1, 4, 8, 16, generator=gen(0))
    images = run(pipe, height=16, width=32, latents=noise)
    assert images.shape == (1, 16, 32, 3)
    np.testing.assert_allclose(images, run(pipe, height=16, width=32, latents=noise.clone(), generator=gen(5)))
    with pytest.raises(ValueError, match=r"`latents` must be a tensor of shape \(1, 4, 8, 16\)"):
        run(pipe, height=16, width=32, latents=torch.randn(1, 4, 16, 8))


def test_an_rgb_numpy_mask_says_how_its_shape_was_read(pipe):
    """An (H, W, 3) array (np.array of an RGB mask) is read as 16 masks of 16x3, as diffusers reads it; the error
    says so and how to pass it (it said only "holds 16 masks")."""
    with pytest.raises(ValueError, match=r"holds 16 masks \(a 3-D array .* shape \(16, 16, 3\); .* mask\[\.\.\., 0\]"):
        run(pipe, image=_face(), mask_image=np.ones((16, 16, 3), dtype=np.float32))
    assert run(pipe, image=_face(), mask_image=np.ones((16, 16, 3), dtype=np.float32)[..., 0]).shape == (1, 16, 16, 3)


def test_callback_tensor_inputs_none_is_no_tensors(pipe):
    """`callback_on_step_end_tensor_inputs=None`: the callback gets an empty dict (it crashed after the first step:
    'NoneType' object is not iterable)."""
    seen = []

    def callback(pipeline, step, timestep, callback_kwargs):
        seen.append(dict(callback_kwargs))
        return callback_kwargs

    images = run(pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=None)
    assert seen == [{}] * STEPS
    np.testing.assert_allclose(images, run(pipe), atol=1e-6)


def test_flow_sigmas_with_unipc_run(tokenizer):
    """UniPC's flow sigmas (one per step, in (0, 1]) reach its set_timesteps as an array: a list crashed it."""
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(UniPCMultistepScheduler, use_flow_sigmas=True))
    images = run(pipe, sigmas=[1.0, 0.6, 0.2])
    assert np.isfinite(images).all() and pipe.scheduler.timesteps.tolist() == [999, 600, 200]


@pytest.mark.parametrize("array", [np.array, torch.tensor])
def test_custom_timesteps_and_sigmas_as_arrays_and_tensors(tokenizer, array):
    """As diffusers' schedulers take them (e.g. AYS schedules, a scheduler's own `timesteps` / `sigmas`)."""
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(EulerDiscreteScheduler))
    timesteps, sigmas = [999, 500, 100], [10.0, 3.0, 0.5, 0.0]
    np.testing.assert_array_equal(run(pipe, timesteps=array(timesteps)), run(pipe, timesteps=timesteps))
    np.testing.assert_array_equal(run(pipe, sigmas=array(sigmas)), run(pipe, sigmas=sigmas))
    np.testing.assert_array_equal(run(pipe, timesteps=array(timesteps), image=_face(), strength=0.7),
                                  run(pipe, timesteps=timesteps, image=_face(), strength=0.7))  # fmt: skip
    with pytest.raises(ValueError, match="`timesteps` must be a non-empty list"):
        run(pipe, timesteps=array([100, 500]))


def test_clip_skip_reads_the_hidden_states_when_attentions_are_output_too(tokenizer):
    pipe = tiny_pipeline(tokenizer)
    pipe.text_encoder = build_text_encoder(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                           num_attention_heads=2)  # fmt: skip
    expected = run(pipe, guidance_scale=1.0, clip_skip=1)
    pipe.text_encoder.set_attn_implementation("eager")  # sdpa cannot output attentions
    pipe.text_encoder.config.output_attentions = True
    np.testing.assert_allclose(run(pipe, guidance_scale=1.0, clip_skip=1), expected, atol=1e-6)


def test_clip_skip_needs_a_clip_text_encoder(pipe):
    embeds = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, False)[0]
    pipe.text_encoder = None
    with pytest.raises(ValueError, match="`clip_skip`=1 needs a CLIP text encoder"):
        pipe(prompt_embeds=embeds, guidance_scale=1.0, clip_skip=1)


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.5", None])
def test_bad_guidance_rescale_raises_before_the_models(pipe, value):
    pipe.text_encoder.register_forward_pre_hook(lambda *args: pytest.fail("the text encoder ran before the check"))
    with pytest.raises(ValueError, match="`guidance_rescale` must be a real number in \\[0, 1\\]"):
        pipe("face", guidance_rescale=value, num_inference_steps=2)


def test_our_parts_plug_into_stable_diffusion_pipelines(pipe):
    """SmallVAE + SmallUNet take diffusers' own StableDiffusionPipeline's calls (it passes `timestep_cond`,
    `cross_attention_kwargs`, `added_cond_kwargs`): the same images as ours in text-to-image; img2img runs."""
    from diffusers import StableDiffusionImg2ImgPipeline

    parts = dict(pipe.components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    kwargs = dict(negative_prompt="black hair", num_images_per_prompt=2, guidance_scale=3.0)
    theirs = StableDiffusionPipeline(**parts)
    theirs.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run(pipe, **kwargs), run(theirs, **kwargs), atol=1e-6)
    img2img = StableDiffusionImg2ImgPipeline(**parts)
    img2img.set_progress_bar_config(disable=True)
    # diffusers' img2img samples the posterior (ours takes its mean, see `encode_image`): runs, not equal
    images = run(img2img, image=_face(), strength=0.75, num_inference_steps=4, guidance_scale=3.0)
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_unconditional_diffusers_unet2dmodel_plugs_in():
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=8,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)  # fmt: skip
    pipe = CartoonFacePipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=make_scheduler())
    pipe.set_progress_bar_config(disable=True)
    assert run(pipe, None).shape == (1, 16, 16, 3)


# ---------------------------------------------------------------- bad input, raised before any model runs

BAD_INPUTS = [
    ("prompt", {"prompt": 3}, TypeError),
    ("prompt", {"prompt": ["ok", 3]}, TypeError),
    ("negative_prompt", {"negative_prompt": ["a", "b"]}, TypeError),
    ("negative_prompt", {"prompt": ["a"], "negative_prompt": ["a", "b"]}, ValueError),
    ("height", {"height": 15}, ValueError),
    ("width", {"width": 18}, ValueError),  # divisible by the VAE's 2, not by VAE x UNet = 4
    ("num_inference_steps", {"num_inference_steps": 0}, ValueError),
    ("strength", {"image": _face(), "strength": 1.5}, ValueError),
    ("strength", {"image": _face(), "strength": -0.1}, ValueError),
    ("mask_image", {"image": _face(), "mask_image": PIL.Image.new("L", (8, 8))}, ValueError),
    ("mask_image", {"mask_image": PIL.Image.new("L", (16, 16))}, ValueError),
    ("image", {"image": "face.png"}, TypeError),
    ("image", {"image": torch.zeros(1, 4, 16, 16)}, ValueError),
    ("output_type", {"output_type": "jpeg"}, ValueError),
    ("latents", {"latents": torch.zeros(1, 4, 4, 4)}, ValueError),
    ("generator", {"generator": [torch.Generator()] * 2}, ValueError),
    ("callback_on_step_end_tensor_inputs", {"callback_on_step_end_tensor_inputs": ["noise_pred"]}, ValueError),
    # negative prompts are counted against the batch however it is given
    ("negative_prompt", {"prompt": None, "negative_prompt": ["a", "b"]}, ValueError),
    (
        "negative_prompt",
        {"prompt": None, "prompt_embeds": torch.zeros(1, 12, 16), "negative_prompt": ["a", "b"]},
        ValueError,
    ),  # fmt: skip
    # one mask, or one per prompt, as for `image`
    ("mask_image", {"image": _face(), "mask_image": [PIL.Image.new("L", (16, 16))] * 2}, ValueError),
    (
        "mask_image",
        {"prompt": ["a", "b"], "image": _face(), "mask_image": [PIL.Image.new("L", (16, 16))] * 3},
        ValueError,
    ),  # fmt: skip
    ("mask_image", {"image": _face(), "mask_image": np.zeros((1, 16, 16, 3))}, ValueError),  # one channel only
    # `image` formats: a shape that is no image, a numpy image of the wrong channel count, mixed lists
    ("image", {"image": np.zeros((16, 16, 4), dtype=np.float32)}, ValueError),
    ("image", {"image": np.zeros((1, 1, 16, 16, 3))}, ValueError),
    ("image", {"image": [_face(), np.zeros((16, 16, 3))]}, TypeError),
    ("image", {"image": [np.zeros((16, 16, 3)), np.zeros((8, 8, 3))]}, ValueError),
    ("image", {"image": PIL.Image.new("RGB", (2, 2))}, ValueError),  # smaller than the VAE x UNet factor 4
    # custom timesteps: non-empty, integers, strictly descending, within the training schedule
    ("timesteps", {"timesteps": []}, ValueError),
    ("timesteps", {"timesteps": [10, 500, 999]}, ValueError),
    ("timesteps", {"timesteps": [999, 999, 10]}, ValueError),
    ("timesteps", {"timesteps": [1000, 10]}, ValueError),
    ("timesteps", {"timesteps": [999.5, 10]}, ValueError),
    # img2img that would run no step at all (int(4 * 0.1) == 0)
    ("strength", {"image": _face(), "strength": 0.1, "num_inference_steps": 4}, ValueError),
    ("strength", {"image": _face(), "strength": 0.2, "timesteps": [999, 500, 10]}, ValueError),
    ("strength", {"image": _face(), "strength": "0.5"}, ValueError),
    ("guidance_scale", {"guidance_scale": None}, TypeError),
    ("guidance_scale", {"guidance_scale": "7"}, TypeError),
    ("guidance_scale", {"guidance_scale": float("nan")}, ValueError),  # ran unguided
    ("guidance_scale", {"guidance_scale": float("inf")}, ValueError),  # drew black images
    ("num_inference_steps", {"num_inference_steps": True}, ValueError),
    # DDIM's eta is defined on [0, 1]: above 1 DDIM returns NaN (black) images
    ("eta", {"eta": 1.5}, ValueError),
    ("eta", {"eta": -0.1}, ValueError),
    ("eta", {"eta": "0.5"}, ValueError),
    # 0 is no size: refused, not replaced by the default size
    ("height", {"height": 0}, ValueError),
    ("width", {"width": 0}, ValueError),
    ("height", {"height": 0, "image": _face()}, ValueError),
    # fewer generators than images, more images than prompts
    ("generator", {"prompt": [PROMPT, PROMPT], "generator": [torch.Generator()]}, ValueError),
    ("image", {"image": [_face(), _face()]}, ValueError),
    # a seed is no generator (it failed in randn_tensor, after the text encoder: 'int' object has no attribute)
    ("generator", {"generator": 0}, TypeError),
    ("generator", {"generator": [0]}, TypeError),
    # embeddings: a tensor (batch, tokens, the UNet's cross_attention_dim 16); they failed inside the models
    ("prompt_embeds", {"prompt": None, "prompt_embeds": [torch.zeros(1, 12, 16)]}, TypeError),
    ("prompt_embeds", {"prompt": None, "prompt_embeds": torch.zeros(12, 16)}, TypeError),
    ("prompt_embeds", {"prompt": None, "prompt_embeds": torch.zeros(1, 12, 7)}, TypeError),
    ("negative_prompt_embeds", {"negative_prompt_embeds": torch.zeros(1, 12, 7)}, TypeError),
    # beside a text prompt: one per prompt, of the tokenizer's 12 tokens (a batch of 2 failed after a UNet step)
    ("negative_prompt_embeds", {"negative_prompt_embeds": torch.zeros(2, 12, 16)}, ValueError),
    ("negative_prompt_embeds", {"negative_prompt_embeds": torch.zeros(1, 7, 16)}, ValueError),
]


@pytest.mark.parametrize("name,kwargs,error", BAD_INPUTS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_raises_before_any_model_runs(pipe, name, kwargs, error):
    for model in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder, pipe.text_encoder):
        model.register_forward_pre_hook(lambda *args: pytest.fail("a model ran before the inputs were checked"))
    kwargs = {"prompt": PROMPT, "num_inference_steps": STEPS, **kwargs}
    with pytest.raises(error, match=name):
        pipe(**kwargs)


def test_prompt_without_text_encoder_raises():
    pipe = tiny_pipeline(conditional=False)
    with pytest.raises(ValueError, match="prompt"):
        pipe(PROMPT, num_inference_steps=STEPS)


def test_custom_timesteps_on_a_scheduler_without_them_raise_before_the_text_encoder(tokenizer):
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(DDIMScheduler))
    for model in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder, pipe.text_encoder):
        model.register_forward_pre_hook(lambda *args: pytest.fail("a model ran before the inputs were checked"))
    with pytest.raises(ValueError, match="`timesteps`: DDIMScheduler"):
        pipe(PROMPT, timesteps=[999, 500, 10])


@pytest.mark.parametrize("sigma_schedule", ["use_karras_sigmas", "use_exponential_sigmas", "use_lu_lambdas"])
def test_custom_timesteps_with_a_sigma_schedule_raise_before_the_text_encoder(tokenizer, sigma_schedule):
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(**{sigma_schedule: True}))  # DPM-Solver++
    for model in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder, pipe.text_encoder):
        model.register_forward_pre_hook(lambda *args: pytest.fail("a model ran before the inputs were checked"))
    with pytest.raises(ValueError, match=f"`timesteps`: DPMSolverMultistepScheduler with {sigma_schedule}=True"):
        pipe(PROMPT, timesteps=[999, 500, 10])


def test_more_steps_than_training_timesteps_raise_before_the_models(tokenizer):
    # DPM-Solver took them: 11-19 steps of a 10-timestep model stepped past its schedule (IndexError), 20 of a
    # 15-timestep one between equal timesteps (nan images)
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(num_train_timesteps=10))
    for model in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder, pipe.text_encoder):
        model.register_forward_pre_hook(lambda *args: pytest.fail("a model ran before the inputs were checked"))
    with pytest.raises(ValueError, match="`num_inference_steps`=11 is more than the model's 10 training timesteps"):
        pipe(PROMPT, num_inference_steps=11)
    pipe = tiny_pipeline(tokenizer, scheduler=make_scheduler(num_train_timesteps=10))
    assert np.isfinite(run(pipe, num_inference_steps=10)).all()


def test_encode_prompt_checks_negative_prompt_batch_before_encoding(pipe):
    pipe.text_encoder.register_forward_pre_hook(lambda *args: pytest.fail("the text encoder ran"))
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="`negative_prompt`.*has batch size 2, but `prompt`.*has batch size 1"):
        pipe.encode_prompt(None, cpu, 1, True, negative_prompt=["a", "b"], prompt_embeds=torch.zeros(1, 12, 16))
    with pytest.raises(ValueError, match="has batch size 2, but `prompt`.*has batch size 1"):
        pipe.encode_prompt([PROMPT], cpu, 1, True, negative_prompt=["a", "b"])
    with pytest.raises(TypeError, match="negative_prompt"):
        pipe.encode_prompt([PROMPT], cpu, 1, True, negative_prompt="a")


# ---------------------------------------------------------------- review fixes: image formats, guidance, steps

_RGB = np.random.RandomState(1).rand(16, 32, 3).astype(np.float32)  # (H, W, C): not square, to catch H/W swaps
_RGB_PIL = PIL.Image.fromarray((_RGB * 255).round().astype(np.uint8))
IMAGE_FORMATS = {
    "pil": _RGB_PIL,
    "pil_list": [_RGB_PIL],
    "np_hwc": _RGB,
    "np_bhwc": _RGB[None],
    "np_hwc_list": [_RGB],
    "pt_chw": torch.from_numpy(_RGB).permute(2, 0, 1),
    "pt_bchw": torch.from_numpy(_RGB).permute(2, 0, 1)[None],
    "pt_chw_list": [torch.from_numpy(_RGB).permute(2, 0, 1)],
}


@pytest.mark.parametrize("kind", list(IMAGE_FORMATS))
def test_img2img_default_size_from_every_image_format(pipe, kind):
    image = IMAGE_FORMATS[kind]
    default = run(pipe, image=image, strength=0.5)
    assert default.shape == (1, 16, 32, 3)
    np.testing.assert_array_equal(default, run(pipe, image=image, strength=0.5, height=16, width=32))


def test_img2img_batch_of_image_lists_takes_their_size(pipe):
    images = run(pipe, [PROMPT, "orange hair"], image=[_RGB_PIL, _RGB_PIL.rotate(180)], strength=0.5,
                 generator=[gen(0), gen(1)])  # fmt: skip
    assert images.shape == (2, 16, 32, 3)


def test_img2img_grayscale_default_size_from_2d_and_channel_last_inputs(tokenizer):
    pipe = tiny_pipeline(tokenizer, pixel_space=True, channels=1)
    gray = _RGB[..., 0]  # (16, 32)
    expected = run(pipe, "8", image=gray, strength=0.5, height=16, width=32)
    assert expected.shape == (1, 16, 32, 1)
    for image in (gray, gray[..., None], gray[None, ..., None], torch.from_numpy(gray)[None], [gray[..., None]]):
        np.testing.assert_array_equal(run(pipe, "8", image=image, strength=0.5), expected)


def test_img2img_default_size_rounds_down_to_the_models_multiple(pipe):
    image = _RGB_PIL.resize((22, 18))  # W 22, H 18: multiples of the VAE's 2, not of VAE x UNet = 4
    rounded = run(pipe, image=image, strength=0.5)
    assert rounded.shape == (1, 16, 20, 3)
    np.testing.assert_array_equal(rounded, run(pipe, image=image, strength=0.5, height=16, width=20))
    assert run(pipe, image=image, strength=0.5, height=24).shape == (1, 24, 20, 3)  # only the missing side


def test_numpy_masks_in_every_documented_layout(tokenizer):
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    mask = np.zeros((16, 16), dtype=np.float32)
    mask[4:12, 4:12] = 1.0
    reference = run(pipe, image=image, mask_image=PIL.Image.fromarray((mask * 255).astype(np.uint8)), strength=1.0)
    for layout in (mask[None, :, :, None], mask[None], mask[:, :, None], mask):  # (B,H,W,1) (B,H,W) (H,W,1) (H,W)
        np.testing.assert_array_equal(run(pipe, image=image, mask_image=layout, strength=1.0), reference)


def test_one_mask_per_prompt(tokenizer):
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    masks = np.zeros((2, 16, 16, 1), dtype=np.float32)
    masks[0, :8], masks[1, 8:] = 1.0, 1.0  # top half, bottom half
    prompts, generators = [PROMPT, "orange hair"], [gen(0), gen(1)]
    out = run(pipe, prompts, image=image, mask_image=masks, strength=1.0, generator=generators)
    np.testing.assert_allclose(out[0, 8:], image[0, 8:], atol=1e-5)  # each image keeps its own unmasked half
    np.testing.assert_allclose(out[1, :8], image[0, :8], atol=1e-5)


def test_callback_can_change_guidance_scale(pipe):
    batch_sizes = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))

    def set_guidance(value):
        def callback(pipeline, step, timestep, callback_kwargs):
            pipeline._guidance_scale = value
            return {}

        return callback

    plain = run(pipe, guidance_scale=7.5)
    changed = run(pipe, guidance_scale=7.5, callback_on_step_end=set_guidance(2.0))
    assert not np.allclose(changed, plain)  # step 1 used w = 2.0
    batch_sizes.clear()
    cut_off = run(pipe, guidance_scale=7.5, callback_on_step_end=set_guidance(1.0))
    assert batch_sizes == [2, 1] and np.isfinite(cut_off).all()  # guidance switched off after step 0


def test_interrupt_skips_the_remaining_steps(pipe):
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))

    def interrupt(pipeline, step, timestep, callback_kwargs):
        pipeline._interrupt = True
        return {}

    images = run(pipe, num_inference_steps=4, callback_on_step_end=interrupt)
    assert len(calls) == 1 and pipe.interrupt is True and np.isfinite(images).all()
    calls.clear()
    run(pipe, num_inference_steps=4)  # reset at the start of every call
    assert len(calls) == 4 and pipe.interrupt is False


def test_promptless_interpolation_runs_without_guidance(pipe):
    batch_sizes = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    frames = pipe.interpolate(seed_a=0, seed_b=1, num_images=3, num_inference_steps=STEPS, output_type="np").images
    assert frames.shape == (3, 16, 16, 3) and batch_sizes == [3] * STEPS
    batch_sizes.clear()
    pipe.interpolate(PROMPT, seed_a=0, seed_b=1, num_images=3, num_inference_steps=STEPS)
    assert batch_sizes == [6] * STEPS  # with a prompt: guided, [uncond, cond] in one batch
    with pytest.raises(TypeError, match="guidance_scale"):
        pipe.interpolate(PROMPT, num_images=3, guidance_scale=None)


def test_strength_accepts_numpy_and_0d_tensor_scalars(pipe):
    image = _face()
    reference = run(pipe, image=image, strength=0.5, num_inference_steps=4)
    for strength in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5), torch.tensor(0.5, dtype=torch.float64)):
        np.testing.assert_array_equal(run(pipe, image=image, strength=strength, num_inference_steps=4), reference)
    np.testing.assert_array_equal(run(pipe, image=image, strength=np.float32(0)), run(pipe, image=image, strength=0))


def test_numpy_integers_are_taken_as_diffusers_takes_them(pipe):
    # e.g. `for steps in np.arange(2, 6): pipe(..., num_inference_steps=steps)`: an integer, not an error
    sizes = {"num_images_per_prompt": 2, "height": 16, "width": 16}
    reference = run(pipe, num_inference_steps=3, **sizes)
    as_numpy = {name: np.int64(value) for name, value in sizes.items()}
    np.testing.assert_array_equal(run(pipe, num_inference_steps=np.int64(3), **as_numpy), reference)
    frames = pipe.interpolate(PROMPT, num_images=np.int64(2), num_inference_steps=np.int32(2), output_type="np")
    assert frames.images.shape == (2, 16, 16, 3)


def test_ddim_eta_in_range_gives_finite_images(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert np.isfinite(run(pipe, eta=1.0, num_inference_steps=3)).all()
    assert np.isfinite(run(pipe, eta=np.float32(0.5), num_inference_steps=3)).all()


def test_long_prompt_truncation_warns(pipe, caplog):
    long_prompt = " ".join(["glasses"] * 30)
    with caplog.at_level("WARNING"):
        run(pipe, long_prompt)
    assert "truncated because CLIP can only handle sequences up to 12 tokens" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        run(pipe, PROMPT)
    assert "truncated" not in caplog.text


def test_truncation_warning_names_only_what_was_cut(pipe, caplog):
    # 10 tokens + <|startoftext|> / <|endoftext|> fill model_max_length=12 exactly: nothing is cut
    fits = "glasses black hair orange hair dark skin white skin glasses"
    assert len(pipe.tokenizer(fits).input_ids) == 12
    with caplog.at_level("WARNING"):
        pipe.encode_prompt(fits, torch.device("cpu"), 1, True)
    assert "truncated" not in caplog.text
    with caplog.at_level("WARNING"):
        pipe.encode_prompt([PROMPT, fits + " orange hair"], torch.device("cpu"), 1, False)
    # the long prompt's lost words only, not the padding of the short one (diffusers lists that as "truncated")
    assert caplog.text.rstrip().endswith("up to 12 tokens: ['orange hair']")


def test_uint8_images_are_read_as_0_to_255(tokenizer):
    """`np.array(pil_image)` is uint8: it used to be normalised as if in [0, 1] (to [-1, 509]), a white image."""
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).randint(0, 256, (16, 16, 3)).astype(np.uint8)
    expected = run(pipe, image=image.astype(np.float32) / 255, strength=0.0)
    for uint8 in (image, torch.from_numpy(image).permute(2, 0, 1), [image]):
        np.testing.assert_allclose(run(pipe, image=uint8, strength=0.0), expected, atol=1e-6)


def test_boolean_masks(tokenizer):
    """Boolean masks (`array > 0`) crashed in the mask processor's resize; True = repaint."""
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:12, 4:12] = True
    reference = run(pipe, image=image, mask_image=mask.astype(np.float32), strength=1.0)
    for boolean in (mask, torch.from_numpy(mask)[None, None]):
        np.testing.assert_array_equal(run(pipe, image=image, mask_image=boolean, strength=1.0), reference)


def test_interpolate_checks_seeds_and_prompts(pipe):
    for kwargs, name in (({"seed_a": None}, "seed_a"), ({"seed_b": 1.5}, "seed_b"), ({"prompt_b": ["a", "b"]}, "prompt_b"),
                         ({"negative_prompt": ["x"]}, "negative_prompt")):  # fmt: skip
        with pytest.raises(TypeError, match=name):
            pipe.interpolate(PROMPT, num_images=2, num_inference_steps=STEPS, **kwargs)
    numpy_seed = pipe.interpolate(
        PROMPT, seed_a=np.int64(3), num_images=2, num_inference_steps=STEPS, output_type="np"
    )
    np.testing.assert_allclose(numpy_seed.images[0], run(pipe, generator=gen(3))[0], atol=1e-5)  # frame 0 = seed 3


def test_interpolate_refuses_seeds_torch_cannot_take_before_the_text_encoder(pipe, monkeypatch):
    """torch.Generator.manual_seed takes [-2**63, 2**64 - 1]: a seed past it failed with "Overflow when unpacking
    long long", naming no argument; the ends themselves are seeds like any other."""
    edges = pipe.interpolate(
        PROMPT, seed_a=-(2**63), seed_b=2**64 - 1, num_images=2, num_inference_steps=STEPS, output_type="np"
    )
    np.testing.assert_allclose(edges.images[1], run(pipe, generator=gen(2**64 - 1))[0], atol=1e-5)

    def no_encoding(*args, **kwargs):
        raise AssertionError("the text encoder ran before the seeds were checked")

    monkeypatch.setattr(pipe, "encode_prompt", no_encoding)
    for kwargs, name in (({"seed_a": 2**64}, "seed_a"), ({"seed_b": -(2**63) - 1}, "seed_b")):
        with pytest.raises(ValueError, match=rf"`{name}` must be in \[-9223372036854775808, 18446744073709551615\]"):
            pipe.interpolate(PROMPT, num_images=2, num_inference_steps=STEPS, **kwargs)


def test_float_images_above_1_are_refused_before_the_models(pipe):
    # 0-255 floats (np.array(pil).astype(np.float32)) would be read as [0, 1] and come out white
    for model in (pipe.unet, pipe.text_encoder):
        model.register_forward_pre_hook(lambda *args: pytest.fail("a model ran before the image was checked"))
    image = np.full((16, 16, 3), 200.0, dtype=np.float32)
    for bad in (image, torch.from_numpy(image).permute(2, 0, 1), [image]):
        with pytest.raises(ValueError, match=r"`image`: float arrays and tensors must hold values in \[0, 1\]"):
            pipe("face", image=bad, strength=0.5, num_inference_steps=2)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"height": 30}, "`height`"),
        ({"height": 0}, "got 0"),  # refused, not replaced by the default size
        ({"output_type": "jpeg"}, "`output_type`"),
        ({"mask_image": np.ones((16, 16), dtype=np.float32)}, "`mask_image` needs `image`"),
        ({"num_inference_step": 4}, "unexpected keyword arguments ['num_inference_step']"),
        ({"guidance_rescale": 2.0}, "`guidance_rescale` must be a real number in [0, 1]"),
        ({"eta": 2.0}, "`eta` must be a real number in [0, 1]"),
    ],
)
def test_interpolate_checks_every_argument_before_the_text_encoder(pipe, kwargs, error):
    pipe.text_encoder.register_forward_pre_hook(lambda *args: pytest.fail("the text encoder ran before the checks"))
    with pytest.raises((ValueError, TypeError)) as raised:
        pipe.interpolate("a face", "another face", num_images=2, num_inference_steps=2, **kwargs)
    assert error in str(raised.value)


# ---------------------------------------------------------------- mutation-testing gaps (AUDIT20)


def test_guidance_rescale_below_one_half_as_stable_diffusion_pipeline(tokenizer):
    # any rescale in (0, 1] is applied (0.7 alone did not tell `> 0` from `> 0.5`)
    ours, theirs = diffusers_pipelines(tokenizer)
    rescaled = run(ours, guidance_scale=3.0, guidance_rescale=0.2)
    np.testing.assert_allclose(rescaled, run(theirs, guidance_scale=3.0, guidance_rescale=0.2), atol=1e-6)
    assert np.abs(rescaled - run(ours, guidance_scale=3.0)).max() > 1e-4


def test_empty_prompt_is_unconditional_in_one_unet_batch(pipe):
    # `prompt=""` is documented as unconditional: guiding "" towards "" is a no-op, so its batch is skipped
    batch_sizes = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    empty = run(pipe, "")
    assert batch_sizes == [1] * STEPS
    np.testing.assert_array_equal(empty, run(pipe, None))


def test_negative_prompts_per_prompt_with_num_images_per_prompt_as_stable_diffusion_pipeline(tokenizer):
    # each prompt's copies keep their own negative prompt: [a, a, b, b] guided away from [x, x, y, y]
    ours, theirs = diffusers_pipelines(tokenizer)
    prompts, negative_prompts = [PROMPT, "Cartoon face without glasses"], ["black hair", "orange hair"]
    images = [
        run(p, prompts, negative_prompt=negative_prompts, num_images_per_prompt=2, guidance_scale=3.0,
            generator=[gen(s) for s in range(4)])
        for p in (ours, theirs)
    ]  # fmt: skip
    np.testing.assert_allclose(images[0], images[1], atol=1e-6)


def test_images_and_masks_per_prompt_follow_num_images_per_prompt(tokenizer):
    # [prompt a, prompt b] x 2 images each: a's two images start from a's image and mask, b's from b's
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    images = np.random.RandomState(0).rand(2, 16, 16, 3).astype(np.float32)
    masks = np.zeros((2, 16, 16, 1), dtype=np.float32)
    masks[0, :8], masks[1, 8:] = 1.0, 1.0
    prompts = [PROMPT, "orange hair"]
    for mask_image in (None, masks):
        out = run(pipe, prompts, image=images, mask_image=mask_image, strength=0.5, num_inference_steps=4,
                  num_images_per_prompt=2, generator=[gen(s) for s in range(4)])  # fmt: skip
        for i in range(4):
            single = run(pipe, prompts[i // 2], image=images[i // 2], strength=0.5, num_inference_steps=4,
                         mask_image=None if mask_image is None else masks[i // 2], generator=gen(i))  # fmt: skip
            # a batch of 8 vs 2 through the UNet: 1.5e-6 apart here (other CPUs round other blockings); swapped: > 0.1
            np.testing.assert_allclose(out[i], single[0], atol=1e-4)


def test_soft_masks_are_binarised_at_one_half(tokenizer):
    # documented: values >= 0.5 are repainted, the rest kept (not blended by their value)
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    soft = np.full((16, 16), 0.3, dtype=np.float32)
    soft[4:12, 4:12] = 0.7
    out = run(pipe, image=image, mask_image=soft, strength=1.0)
    np.testing.assert_array_equal(
        out, run(pipe, image=image, mask_image=(soft >= 0.5).astype(np.float32), strength=1.0)
    )
    np.testing.assert_allclose(out[0][soft < 0.5], image[0][soft < 0.5], atol=1e-5)


@torch.no_grad()
def test_latent_mask_is_the_nearest_downsampled_pixel_mask(pipe):
    # as diffusers (nearest): a latent pixel is repainted or kept whole, never a blend of the two
    image = _face()
    masks = []
    for right in (5, 6):  # pixel columns [0, 5) and [0, 6): both make latent columns 0-2 (pixels 0, 2, 4)
        mask = PIL.Image.new("L", (16, 16), 0)
        mask.paste(255, (0, 0, right, 16))
        masks.append(mask)
    latents = [run(pipe, image=image, mask_image=m, strength=1.0, output_type="latent") for m in masks]
    torch.testing.assert_close(latents[0], latents[1], rtol=0, atol=0)
    image_latents = pipe.encode_image(pipe.image_processor.preprocess(image))
    torch.testing.assert_close(latents[0][..., 3:], image_latents[..., 3:])
    assert (latents[0][..., :3] - image_latents[..., :3]).abs().amin(dim=(0, 1, 2)).min() > 1e-3


def test_ddim_eta_is_applied_with_the_generator(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    stochastic = run(pipe, eta=1.0, num_inference_steps=3)
    np.testing.assert_array_equal(stochastic, run(pipe, eta=1.0, num_inference_steps=3))  # the generator's noise
    assert np.abs(stochastic - run(pipe, eta=0.0, num_inference_steps=3)).max() > 1e-3


def test_callback_can_replace_the_prompt_embeddings(pipe):
    cpu = torch.device("cpu")
    other, other_negative = pipe.encode_prompt("orange hair", cpu, 1, True, negative_prompt="black hair")

    def replace(names, values):
        def callback(pipeline, step, timestep, callback_kwargs):
            return dict(zip(names, values))

        return callback

    plain = run(pipe)
    for names, values in ((["prompt_embeds"], [other]), (["negative_prompt_embeds"], [other_negative])):
        changed = run(pipe, callback_on_step_end=replace(names, values), callback_on_step_end_tensor_inputs=names)
        assert np.abs(changed - plain).max() > 1e-4, names  # the second step used them


def test_interpolation_frames_are_slerped_noise_and_lerped_embeddings(pipe):
    frames = pipe.interpolate(PROMPT, "orange hair", seed_a=0, seed_b=1, num_images=3, num_inference_steps=STEPS,
                              output_type="np").images  # fmt: skip
    # the last frame is (prompt_b, seed_b) with the default deterministic DPM-Solver++, as documented
    np.testing.assert_allclose(frames[-1], run(pipe, "orange hair", generator=gen(1))[0], atol=1e-5)
    # the middle one starts from the great-circle midpoint of the two seeds' noise, halfway between the prompts
    a, b = (torch.randn(1, 4, 8, 8, generator=gen(s), dtype=torch.float32).double() for s in (0, 1))
    theta = torch.acos((a * b).sum() / (a.norm() * b.norm()))
    middle_noise = ((a + b) * torch.sin(theta / 2) / torch.sin(theta)).float()
    cpu = torch.device("cpu")
    embeds_a, negative = pipe.encode_prompt(PROMPT, cpu, 1, True)
    embeds_b = pipe.encode_prompt("orange hair", cpu, 1, False)[0]
    middle = run(pipe, None, prompt_embeds=(embeds_a + embeds_b) / 2, negative_prompt_embeds=negative,
                 latents=middle_noise)  # fmt: skip
    np.testing.assert_allclose(frames[1], middle[0], atol=1e-5)


def test_default_strength_is_0_8(pipe):
    image = _face()
    default = run(pipe, image=image, num_inference_steps=5)  # int(5 * 0.8) = 4 steps
    np.testing.assert_array_equal(default, run(pipe, image=image, strength=0.8, num_inference_steps=5))
    assert not np.allclose(default, run(pipe, image=image, strength=1.0, num_inference_steps=5))


@pytest.mark.parametrize("scheduler", [DPMSolverMultistepScheduler, DDIMScheduler])
def test_inpainting_known_region_is_the_image_noised_to_the_next_timestep(tokenizer, scheduler):
    # after step i the kept pixels hold the image noised to the timestep of step i + 1 with the initial noise (as
    # diffusers' inpainting with a 4-channel UNet), after the last step the image itself. (DPM-Solver's add_noise
    # reads its step index, DDIM's the timestep it is given.)
    pipe = tiny_pipeline(tokenizer, pixel_space=True, scheduler=make_scheduler(scheduler))
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    mask = np.zeros((16, 16), dtype=np.float32)
    mask[4:12, 4:12] = 1.0
    seen = []

    def record(pipeline, step, timestep, callback_kwargs):
        seen.append(callback_kwargs["latents"].clone())
        return {}

    run(pipe, image=image, mask_image=mask, strength=1.0, num_inference_steps=3, callback_on_step_end=record)
    timesteps = pipe.scheduler.timesteps.tolist()
    assert len(seen) == len(timesteps) == 3
    x0 = torch.from_numpy(image).permute(0, 3, 1, 2) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen(0))
    keep = torch.from_numpy(mask == 0).expand_as(x0)
    for i, latents in enumerate(seen):
        expected = x0
        if i < len(timesteps) - 1:
            alpha_bar = pipe.scheduler.alphas_cumprod[timesteps[i + 1]]
            expected = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        torch.testing.assert_close(latents[keep], expected[keep], atol=1e-5, rtol=0, msg=f"step {i}")


def test_default_size_of_a_non_square_unet_sample_size():
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=(16, 24), in_channels=3, out_channels=3, block_out_channels=(8, 16),
                       norm_num_groups=8, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)  # fmt: skip
    pipe = CartoonFacePipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=make_scheduler())
    pipe.set_progress_bar_config(disable=True)
    assert run(pipe, None, num_inference_steps=1).shape == (1, 16, 24, 3)  # (height, width) = sample_size


def test_uint8_masks_of_0_1_and_0_255_both_work(tokenizer):
    # documented: uint8 masks may hold 0/1 or 0/255 (unlike images, they are not divided by 255)
    pipe = tiny_pipeline(tokenizer, pixel_space=True)
    image = np.random.RandomState(0).rand(1, 16, 16, 3).astype(np.float32)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 1
    reference = run(pipe, image=image, mask_image=mask.astype(np.float32), strength=1.0)
    for uint8 in (mask, mask * 255, torch.from_numpy(mask)[None, None], torch.from_numpy(mask * 255)[None, None]):
        np.testing.assert_array_equal(run(pipe, image=image, mask_image=uint8, strength=1.0), reference)
