"""Helpers shared by `CartoonFacePipeline`'s text-to-image, img2img, inpainting and interpolation paths.

Kept out of the pipeline module so that each file reads as one concept: here the timestep, latent and
scheduler plumbing (as diffusers' `retrieve_timesteps` / `retrieve_latents`), there the numbered phases.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DPMSolverMultistepScheduler, SchedulerMixin

#: Image types `image` / `mask_image` accept (one of these, or a list of them), as diffusers' `PipelineImageInput`.
IMAGE_TYPES = (PIL.Image.Image, np.ndarray, torch.Tensor)


def retrieve_timesteps(
    scheduler: SchedulerMixin,
    num_inference_steps: int | None = None,
    device: str | torch.device | None = None,
    timesteps: list[int] | None = None,
) -> tuple[torch.Tensor, int]:
    """Calls `scheduler.set_timesteps` and returns its timesteps, as diffusers' `retrieve_timesteps`.

    Args:
        scheduler (`SchedulerMixin`): The scheduler to get timesteps from.
        num_inference_steps (`int`, *optional*): Number of denoising steps; ignored when `timesteps` is given.
        device (`str` or `torch.device`, *optional*): Where the timesteps go.
        timesteps (`list[int]`, *optional*): Custom timesteps (descending) overriding the scheduler's spacing.

    Returns:
        `tuple[torch.Tensor, int]`: The timestep schedule and the number of inference steps.

    Raises:
        `ValueError`: If `timesteps` is given and the scheduler cannot take custom timesteps.
    """
    if timesteps is not None:
        if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
            raise ValueError(
                f"`timesteps`: {type(scheduler).__name__}.set_timesteps does not accept custom timesteps; "
                "pass `num_inference_steps` instead or use a scheduler that does (e.g. DDPMScheduler, "
                "EulerDiscreteScheduler)."
            )
        scheduler.set_timesteps(timesteps=timesteps, device=device)
        timesteps = scheduler.timesteps
        num_inference_steps = len(timesteps)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
    return timesteps, num_inference_steps


def retrieve_latents(encoder_output: Any, generator: torch.Generator | None = None, sample_mode: str = "argmax"):
    """The latents of a VAE encoder output: the posterior mean ("argmax") or a sample ("sample")."""
    if hasattr(encoder_output, "latent_dist"):
        if sample_mode == "sample":
            return encoder_output.latent_dist.sample(generator)
        return encoder_output.latent_dist.mode()
    if hasattr(encoder_output, "latents"):
        return encoder_output.latents
    raise AttributeError("Could not access latents of the provided encoder_output.")


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical linear interpolation between two noise tensors of the same shape.

    Gaussian noise in many dimensions lives near a sphere of radius sqrt(numel); a straight line between two
    samples passes inside it (norm too small -> washed-out images), the great circle stays on it.
    Falls back to `torch.lerp` when the two are nearly parallel (the angle is then ill-conditioned).

    Args:
        t (`float`): Position in [0, 1]; 0 gives `v0`, 1 gives `v1`.
        v0, v1 (`torch.Tensor`): Endpoints, any identical shape.

    Returns:
        `torch.Tensor`: The interpolated tensor, shaped and typed as `v0`.
    """
    a, b = v0.flatten().double(), v1.flatten().double()
    dot = torch.dot(a / a.norm(), b / b.norm())
    if dot.abs() > dot_threshold:
        out = torch.lerp(a, b, t)
    else:
        theta = torch.acos(dot)  # angle between the endpoints
        out = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
    return out.reshape(v0.shape).to(v0.dtype)


def image_batch_size(image: Any) -> int:
    """Number of images in a `PipelineImageInput` (PIL / numpy / torch, single or list)."""
    if isinstance(image, list):
        return sum(image_batch_size(i) for i in image)
    if isinstance(image, PIL.Image.Image):
        return 1
    if image.ndim == 4:
        return image.shape[0]
    return 1


def image_size(image: Any) -> tuple[int, int]:
    """(height, width) of the first image in a `PipelineImageInput`.

    Tensors are `(batch, channels, height, width)` or `(channels, height, width)`; numpy arrays are
    `(batch, height, width, channels)` or `(height, width, channels)` (diffusers' conventions).
    """
    if isinstance(image, list):
        return image_size(image[0])
    if isinstance(image, PIL.Image.Image):
        return image.height, image.width
    if isinstance(image, torch.Tensor):
        return tuple(image.shape[-2:])
    return tuple(image.shape[-3:-1]) if image.ndim >= 3 else tuple(image.shape)


def check_image_type(image: Any, name: str) -> None:
    """Raises `TypeError` unless `image` is a PIL image, numpy array, torch tensor, or a non-empty list of those."""
    items = image if isinstance(image, list) else [image]
    if len(items) == 0 or not all(isinstance(i, IMAGE_TYPES) for i in items):
        kinds = sorted({type(i).__name__ for i in items}) or ["empty list"]
        raise TypeError(
            f"`{name}` must be a PIL.Image.Image, np.ndarray or torch.Tensor (or a list of them), got {kinds}."
        )


def default_scheduler_config(**overrides: Any) -> dict[str, Any]:
    """The scheduler config sdscratch saves with a pipeline: Stable Diffusion's training schedule, made explicit.

    `clip_sample=False` because latents are not in [-1, 1]; `prediction_type` and `timestep_spacing` are
    written out so that every scheduler built with `from_config` samples the schedule the model was trained
    on. `timestep_spacing="trailing"` starts sampling at the last training timestep, which matters at the
    few steps a CPU affords (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

    Args:
        **overrides: Any config key to change, e.g. `beta_schedule="linear"` for a pixel-space model.

    Returns:
        `dict`: A config for `SchedulerClass.from_config(...)`.
    """
    config = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "timestep_spacing": "trailing",
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,  # PNDM: PLMS only, as Stable Diffusion (its Runge-Kutta warm-up needs >= 4 steps)
    }
    config.update(overrides)
    return config


def make_scheduler(scheduler_cls: type = DPMSolverMultistepScheduler, **overrides: Any) -> SchedulerMixin:
    """Builds `scheduler_cls` (default: DPM-Solver++ multistep, the one sdscratch ships) from
    `default_scheduler_config(**overrides)`."""
    return scheduler_cls.from_config(default_scheduler_config(**overrides))


def _check_prompt(prompt: Any, name: str) -> int | None:
    """Batch size of a prompt argument (`None` stays `None`); `TypeError` unless `str` or a list of `str`."""
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, list) and len(prompt) > 0 and all(isinstance(p, str) for p in prompt):
        return len(prompt)
    raise TypeError(f"`{name}` must be a string or a non-empty list of strings, got {prompt!r}.")


def check_inputs(
    pipe, prompt, height, width, num_inference_steps, timesteps, guidance_scale, negative_prompt,
    num_images_per_prompt, generator, latents, prompt_embeds, negative_prompt_embeds, output_type,
    callback_on_step_end_tensor_inputs, image, strength, mask_image,
) -> int:  # fmt: skip
    """Validates every `CartoonFacePipeline.__call__` argument before any model runs.

    Returns:
        `int`: The prompt batch size (before `num_images_per_prompt`).

    Raises:
        `TypeError` / `ValueError`: naming the argument, its value and what is allowed.
    """
    # prompts
    batch_size = _check_prompt(prompt, "prompt")
    negative_batch_size = _check_prompt(negative_prompt, "negative_prompt")
    if prompt is not None and prompt_embeds is not None:
        raise ValueError("Pass either `prompt` or `prompt_embeds`, not both.")
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("Pass either `negative_prompt` or `negative_prompt_embeds`, not both.")
    has_text = pipe.text_encoder is not None and pipe.tokenizer is not None
    uses_text = prompt not in (None, "") or negative_prompt is not None
    if uses_text and not (has_text and pipe.is_text_conditioned):
        reason = "its UNet is unconditional" if not pipe.is_text_conditioned else "it has no text_encoder/tokenizer"
        raise ValueError(
            f"`prompt`/`negative_prompt` given ({prompt!r}, {negative_prompt!r}) but this pipeline cannot read "
            f"text: {reason}. Pass `prompt=None` (unconditional) or `prompt_embeds`."
        )
    if not pipe.is_text_conditioned and (prompt_embeds is not None or negative_prompt_embeds is not None):
        raise ValueError("`prompt_embeds`: this pipeline's UNet is unconditional (no cross-attention).")
    if pipe.is_text_conditioned and not has_text and prompt_embeds is None:
        raise ValueError(
            "This pipeline has no text_encoder/tokenizer but a text-conditioned UNet: pass `prompt_embeds`."
        )
    if prompt_embeds is not None:
        batch_size = prompt_embeds.shape[0]
        if negative_prompt_embeds is not None and negative_prompt_embeds.shape != prompt_embeds.shape:
            raise ValueError(
                f"`negative_prompt_embeds` shape {tuple(negative_prompt_embeds.shape)} must equal `prompt_embeds` "
                f"shape {tuple(prompt_embeds.shape)}."
            )
    if negative_batch_size is not None and isinstance(prompt, (str, list)):
        if type(prompt) is not type(negative_prompt):
            raise TypeError(
                f"`negative_prompt` must have the type of `prompt` ({type(prompt).__name__}), "
                f"got {type(negative_prompt).__name__}."
            )
        if negative_batch_size != batch_size:
            raise ValueError(
                f"`negative_prompt` has {negative_batch_size} entries but `prompt` has {batch_size}; they must match."
            )
    do_cfg = guidance_scale > 1 and pipe.is_text_conditioned
    if do_cfg and not has_text and negative_prompt_embeds is None:
        raise ValueError(
            f"`guidance_scale`={guidance_scale} > 1 needs `negative_prompt_embeds` when the pipeline has no "
            "text_encoder; pass them or set guidance_scale=1."
        )
    if batch_size is None:  # unconditional: as many images as `image` or `latents` hold
        batch_size = 1
        if image is not None:
            batch_size = image_batch_size(image)
        elif isinstance(latents, torch.Tensor) and latents.ndim == 4 and isinstance(num_images_per_prompt, int):
            batch_size = max(1, latents.shape[0] // max(1, num_images_per_prompt))

    # sizes and steps
    factor = pipe.vae_scale_factor * pipe.unet_scale_factor
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value <= 0 or value % factor != 0:
            raise ValueError(
                f"`{name}` must be a positive multiple of {factor} (VAE factor {pipe.vae_scale_factor} x UNet "
                f"factor {pipe.unet_scale_factor}), got {value!r}."
            )
    if timesteps is None and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
        raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}.")
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be an integer >= 1, got {num_images_per_prompt!r}.")
    if not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ValueError(f"`strength` must be in [0, 1], got {strength!r}.")
    if output_type not in ("pil", "np", "pt", "latent"):
        raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
    bad = [k for k in callback_on_step_end_tensor_inputs or [] if k not in pipe._callback_tensor_inputs]
    if bad:
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` must be a subset of {pipe._callback_tensor_inputs}, got {bad}."
        )

    # noise
    num_images = batch_size * num_images_per_prompt
    if isinstance(generator, list) and len(generator) != num_images:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators but {num_images} images are requested "
            f"(batch {batch_size} x num_images_per_prompt {num_images_per_prompt}); pass one per image."
        )
    latent_shape = (
        num_images, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor
    )  # fmt: skip
    if latents is not None and (not isinstance(latents, torch.Tensor) or tuple(latents.shape) != latent_shape):
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"`latents` must be a tensor of shape {latent_shape}, got {got}.")

    # scheduler
    if hasattr(pipe.scheduler, "precondition_noise"):
        raise ValueError(
            f"`scheduler`: {type(pipe.scheduler).__name__} feeds the UNet EDM's noise conditioning "
            "c_noise = log(sigma) / 4 instead of the discrete training timesteps this model was trained on; use "
            "EulerDiscreteScheduler (with use_karras_sigmas=True for the EDM/Karras sigma schedule) instead."
        )

    prk_steps = getattr(pipe.scheduler.config, "skip_prk_steps", True) is False
    if prk_steps and timesteps is None and num_inference_steps < getattr(pipe.scheduler, "pndm_order", 4):
        raise ValueError(
            f"`num_inference_steps`={num_inference_steps}: {type(pipe.scheduler).__name__} with skip_prk_steps=False "
            "needs at least 4 steps for its Runge-Kutta warm-up; use more steps or skip_prk_steps=True."
        )

    # images
    if mask_image is not None and image is None:
        raise ValueError("`mask_image` needs `image` (the picture to inpaint).")
    if image is not None:
        check_image_type(image, "image")
        n = image_batch_size(image)
        if n not in (1, batch_size):
            raise ValueError(f"`image` holds {n} images; pass 1 or one per prompt ({batch_size}).")
        channels = pipe.vae.config.in_channels if pipe.vae is not None else pipe.unet.config.in_channels
        first = image[0] if isinstance(image, list) else image
        if isinstance(first, torch.Tensor) and first.ndim in (3, 4) and first.shape[-3] != channels:
            raise ValueError(f"`image` tensor must have {channels} channels (dim -3), got shape {tuple(first.shape)}.")
        if not hasattr(pipe.scheduler, "add_noise"):
            raise ValueError(f"`image`: {type(pipe.scheduler).__name__} has no `add_noise`, needed for img2img.")
    if mask_image is not None:
        check_image_type(mask_image, "mask_image")
        if image_size(mask_image) != image_size(image):
            raise ValueError(
                f"`mask_image` size {image_size(mask_image)} must equal `image` size {image_size(image)} (H, W)."
            )
        if pipe.vae is not None and pipe.vae.config.latent_channels != pipe.unet.config.in_channels:
            raise ValueError("`mask_image`: inpainting needs a UNet whose input channels equal the latent channels.")
    return batch_size
