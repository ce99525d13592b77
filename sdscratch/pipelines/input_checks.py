"""`check_inputs`: every `CartoonFacePipeline.__call__` argument validated before any model runs, with a
`TypeError` / `ValueError` naming the argument, its value and what is allowed (as diffusers pipelines'
`check_inputs`), and the small checks it is built from (prompts, `clip_skip`, custom `sigmas`, real numbers).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from diffusers import SchedulerMixin

from .image_inputs import check_float_image_range, image_layout
from .pipeline_utils import (
    as_list,
    check_scheduler_accepts,
    clip_final_layer_norm,
    retrieve_timesteps,
    scheduler_setting,
)

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what `torch.Generator.manual_seed` takes


def check_seed(seed: int, count: int = 1, flag: str = "--seed") -> int:
    """Checks, before the model loads (or runs), that the seeds `seed`, `seed + 1`, ..., `seed + count - 1` (image i
    of a grid is drawn with `seed + i`) are all ones `torch.Generator.manual_seed` takes: integers in
    [-2**63, 2**64 - 1]. The examples and `sdscratch generate` call it as `sdscratch.demo.check_seed`.

    Args:
        seed (`int`): The first seed.
        count (`int`, defaults to 1): How many consecutive seeds are drawn from it.
        flag (`str`, defaults to `"--seed"`): The command-line flag (or argument) to name in the error.

    Returns:
        `int`: `seed`.

    Raises:
        `ValueError`: If a seed of the range lies outside what torch takes (it failed with "Overflow when unpacking
            long long" only after the model had loaded).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`{flag}` must be an integer, got {seed!r}.")
    last = SEED_MAX - max(count - 1, 0)
    if not SEED_MIN <= seed <= last:
        images = f" (image i uses {flag} + i, for {count} images)" if count > 1 else ""
        raise ValueError(f"`{flag}` must be in [{SEED_MIN}, {last}]{images}, got {seed}.")
    return seed


def is_real_number(value: Any) -> bool:
    """`True` for Python / numpy real scalars and 0-d real tensors (not booleans)."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_integer(value: Any) -> bool:
    """`True` for Python and numpy integers (`np.int64(25)` from a numpy sweep, as diffusers takes them), not
    booleans."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_prompt(prompt: Any, name: str) -> int | None:
    """Batch size of a prompt argument (`None` stays `None`); `TypeError` unless `str` or a list of `str`."""
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, list) and len(prompt) > 0 and all(isinstance(p, str) for p in prompt):
        return len(prompt)
    raise TypeError(f"`{name}` must be a string or a non-empty list of strings, got {prompt!r}.")


def check_clip_skip(text_encoder: Any, clip_skip: Any) -> None:
    """Raises unless `clip_skip` (layers skipped from the end of a `CLIPTextModel`) can be applied to `text_encoder`."""
    if clip_final_layer_norm(text_encoder) is None:
        raise ValueError(
            f"`clip_skip`={clip_skip!r} needs a CLIP text encoder (with a `final_layer_norm`); this pipeline's "
            f"text_encoder is {type(text_encoder).__name__ if text_encoder is not None else None}."
        )
    num_layers = text_encoder.config.num_hidden_layers
    if not isinstance(clip_skip, numbers.Integral) or isinstance(clip_skip, bool) or not 0 <= clip_skip < num_layers:
        raise ValueError(
            f"`clip_skip` must be an integer in [0, {num_layers}) (the text encoder has {num_layers} layers; 1 uses "
            f"the penultimate layer's output), got {clip_skip!r}."
        )


def _check_sigmas(scheduler: SchedulerMixin, sigmas: Any) -> int:
    """Checks custom `sigmas` (values, and that `scheduler` takes them) and returns the steps they make."""
    check_scheduler_accepts(scheduler, "sigmas")
    values = as_list(sigmas)
    valid = isinstance(values, (list, tuple)) and len(values) >= 2
    valid = valid and all(is_real_number(v) and math.isfinite(float(v)) and float(v) >= 0 for v in values)
    if not valid or any(float(a) <= float(b) for a, b in zip(values, values[1:])):
        raise ValueError(
            "`sigmas` must be a list of at least 2 finite real numbers >= 0 in strictly descending order (the "
            f"noise level of each step, then the final one, usually 0), got {sigmas!r}."
        )
    if scheduler_setting(scheduler, "use_flow_sigmas", False) and not all(0 < float(v) <= 1 for v in values):
        raise ValueError(
            f"`sigmas`: {type(scheduler).__name__} with use_flow_sigmas=True takes flow-matching noise levels in "
            f"(0, 1], one per step (it appends the final 0 itself), got {sigmas!r}."
        )
    # the scheduler's own conversion (no model involved): its errors now, and the step count for `strength`
    steps = retrieve_timesteps(scheduler, sigmas=[float(v) for v in values])[1]
    if steps < 1:
        raise ValueError(f"`sigmas` {sigmas!r} make no denoising step with {type(scheduler).__name__}.")
    return steps


def check_inputs(
    pipe, prompt, height, width, num_inference_steps, timesteps, guidance_scale, negative_prompt,
    num_images_per_prompt, generator, latents, prompt_embeds, negative_prompt_embeds, output_type,
    callback_on_step_end_tensor_inputs, image, strength, mask_image, *, sigmas=None, clip_skip=None,
    guidance_rescale=0.0, eta=0.0,
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
    embed_width = getattr(pipe.unet.config, "cross_attention_dim", None)
    for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
        if embeds is not None and (
            not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[-1] != embed_width
        ):
            got = f"shape {tuple(embeds.shape)}" if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise TypeError(
                f"`{name}` must be a tensor of shape (batch, sequence length, {embed_width}) (the UNet's "
                f"cross_attention_dim; as `encode_prompt` returns them), got {got}."
            )
    if prompt_embeds is not None:
        batch_size = prompt_embeds.shape[0]
        if negative_prompt_embeds is not None and negative_prompt_embeds.shape != prompt_embeds.shape:
            raise ValueError(
                f"`negative_prompt_embeds` shape {tuple(negative_prompt_embeds.shape)} must equal `prompt_embeds` "
                f"shape {tuple(prompt_embeds.shape)}."
            )
    if negative_prompt_embeds is not None and prompt_embeds is None and batch_size is not None and has_text:
        # the text prompt's embeddings, (batch, the tokenizer's model_max_length, embed_width), go beside these
        expected = (batch_size, pipe.tokenizer.model_max_length, embed_width)
        if tuple(negative_prompt_embeds.shape) != expected:
            raise ValueError(
                f"`negative_prompt_embeds` shape {tuple(negative_prompt_embeds.shape)} must equal that of the "
                f"`prompt`'s embeddings, {expected} (one per prompt, `tokenizer.model_max_length` tokens)."
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
    if not is_real_number(guidance_scale):
        raise TypeError(
            f"`guidance_scale` must be a real number (e.g. 3.0; <= 1 disables guidance), got {guidance_scale!r}."
        )
    if not math.isfinite(float(guidance_scale)):  # nan ran unguided, inf drew black images
        raise ValueError(
            f"`guidance_scale` must be finite (e.g. 3.0; <= 1 disables guidance), got {guidance_scale!r}."
        )
    if clip_skip is not None:
        check_clip_skip(pipe.text_encoder, clip_skip)
    do_cfg = guidance_scale > 1 and pipe.is_text_conditioned
    if do_cfg and not has_text and negative_prompt_embeds is None:
        raise ValueError(
            f"`guidance_scale`={guidance_scale} > 1 needs `negative_prompt_embeds` when the pipeline has no "
            "text_encoder; pass them or set guidance_scale=1."
        )
    image_grayscale = pipe.image_processor.config.do_convert_grayscale
    if batch_size is None:  # unconditional: as many images as `image` or `latents` hold
        batch_size = 1
        if image is not None:
            batch_size = image_layout(image, "image", image_grayscale)[0]
        elif isinstance(latents, torch.Tensor) and latents.ndim == 4 and is_integer(num_images_per_prompt):
            batch_size = max(1, latents.shape[0] // max(1, num_images_per_prompt))
    if isinstance(negative_prompt, list) and len(negative_prompt) != batch_size:
        source = "`prompt_embeds`" if prompt_embeds is not None else "`prompt`" if prompt is not None else "the batch"
        raise ValueError(
            f"`negative_prompt` has {len(negative_prompt)} entries but {source} has batch size {batch_size}; "
            "pass one negative prompt per prompt, or a single string."
        )

    # sizes and steps
    factor = pipe.vae_scale_factor * pipe.unet_scale_factor
    for name, value in (("height", height), ("width", width)):
        if not is_integer(value) or value <= 0 or value % factor != 0:
            raise ValueError(
                f"`{name}` must be a positive multiple of {factor} (VAE factor {pipe.vae_scale_factor} x UNet "
                f"factor {pipe.unet_scale_factor}), got {value!r}."
            )
    if hasattr(pipe.scheduler, "precondition_noise"):  # (before `sigmas`, which it would read its own way)
        raise ValueError(
            f"`scheduler`: {type(pipe.scheduler).__name__} feeds the UNet EDM's noise conditioning "
            "c_noise = log(sigma) / 4 instead of the discrete training timesteps this model was trained on; use "
            "EulerDiscreteScheduler (with use_karras_sigmas=True for the EDM/Karras sigma schedule) instead."
        )
    if timesteps is not None and sigmas is not None:
        raise ValueError("Pass either `timesteps` or `sigmas`, not both.")
    custom = timesteps is not None or sigmas is not None
    if not custom and (not is_integer(num_inference_steps) or num_inference_steps < 1):
        raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}.")
    num_train_timesteps = pipe.scheduler.config.get("num_train_timesteps")
    if not custom and num_train_timesteps is not None and num_inference_steps > num_train_timesteps:
        # as DDPM / DDIM refuse it; DPM-Solver would step between equal timesteps (nan) or past its schedule
        raise ValueError(
            f"`num_inference_steps`={num_inference_steps} is more than the model's {num_train_timesteps} training "
            f"timesteps (`scheduler.config.num_train_timesteps`): use at most {num_train_timesteps}."
        )
    if sigmas is not None:
        num_inference_steps = _check_sigmas(pipe.scheduler, sigmas)
    if timesteps is not None:
        check_scheduler_accepts(pipe.scheduler, "timesteps")
        num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        timesteps = as_list(timesteps)  # a 1-D array or tensor, as diffusers' schedulers take
        valid = isinstance(timesteps, (list, tuple)) and len(timesteps) > 0
        valid = valid and all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in timesteps)
        valid = valid and all(0 <= t < num_train_timesteps for t in timesteps)
        if not valid or any(a <= b for a, b in zip(timesteps, timesteps[1:])):
            raise ValueError(
                "`timesteps` must be a non-empty list (or 1-D array / tensor) of integers in [0, "
                f"{num_train_timesteps}) in strictly descending order, got {timesteps!r}."
            )
    if not is_integer(num_images_per_prompt) or num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be an integer >= 1, got {num_images_per_prompt!r}.")
    if not is_real_number(strength) or not 0 <= strength <= 1:
        raise ValueError(f"`strength` must be a real number in [0, 1], got {strength!r}.")
    if not is_real_number(guidance_rescale) or not 0 <= guidance_rescale <= 1:
        raise ValueError(f"`guidance_rescale` must be a real number in [0, 1], got {guidance_rescale!r}.")
    # DDIM's eta (and TCD's gamma) is defined on [0, 1]; above 1, DDIM's sqrt(1 - alpha_prev - sigma_t^2) is the
    # root of a negative number at the last steps, and every image comes out NaN (black)
    if not is_real_number(eta) or not 0 <= eta <= 1:
        raise ValueError(
            f"`eta` must be a real number in [0, 1] (0: deterministic DDIM, 1: DDPM-like step noise), got {eta!r}."
        )
    if image is not None and strength > 0:
        steps = len(timesteps) if timesteps is not None else num_inference_steps  # (sigmas: set above)
        if int(steps * float(strength)) < 1:  # as `get_timesteps`
            raise ValueError(
                f"`strength`={float(strength)} with `num_inference_steps`={steps} leaves "
                f"int({steps} * {float(strength)}) = 0 denoising steps: raise `strength` or `num_inference_steps` "
                f"(at least {math.ceil(1 / float(strength))} steps at this strength), or pass strength=0 for the "
                "image itself."
            )
    if output_type not in ("pil", "np", "pt", "latent"):
        raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
    bad = [k for k in callback_on_step_end_tensor_inputs or [] if k not in pipe._callback_tensor_inputs]
    if bad:
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` must be a subset of {pipe._callback_tensor_inputs}, got {bad}."
        )

    # noise
    num_images = batch_size * num_images_per_prompt
    generators = generator if isinstance(generator, list) else [generator]
    if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
        raise TypeError(
            "`generator` must be a `torch.Generator` or a list of them (one per image), e.g. "
            f"torch.Generator().manual_seed(0) for seed 0, got {generator!r}."
        )
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
    prk_steps = scheduler_setting(pipe.scheduler, "skip_prk_steps", True) is False
    if prk_steps and not custom and num_inference_steps < getattr(pipe.scheduler, "pndm_order", 4):
        raise ValueError(
            f"`num_inference_steps`={num_inference_steps}: {type(pipe.scheduler).__name__} with skip_prk_steps=False "
            "needs at least 4 steps for its Runge-Kutta warm-up; use more steps or skip_prk_steps=True."
        )
    if prk_steps and image is not None and 0 < int(num_inference_steps * float(strength)) < num_inference_steps:
        raise ValueError(
            f"`strength`={float(strength)}: {type(pipe.scheduler).__name__} with skip_prk_steps=False cannot start "
            "part-way through its schedule (its Runge-Kutta warm-up always starts at the first timestep); use "
            "strength=1.0, skip_prk_steps=True or another scheduler."
        )

    # images
    if mask_image is not None and image is None:
        raise ValueError("`mask_image` needs `image` (the picture to inpaint).")
    if image is not None:
        n, image_channels, *size = image_layout(image, "image", image_grayscale)
        if n not in (1, batch_size):
            raise ValueError(f"`image` holds {n} images; pass 1 or one per prompt ({batch_size}).")
        channels = pipe.vae.config.in_channels if pipe.vae is not None else pipe.unet.config.in_channels
        if image_channels is not None and image_channels != channels:
            first = image[0] if isinstance(image, list) else image
            where = "dim -3 of a tensor" if isinstance(first, torch.Tensor) else "last dim of a numpy array"
            raise ValueError(
                f"`image` must have {channels} channels ({where}), got {image_channels} (shape {tuple(first.shape)})."
            )
        if not hasattr(pipe.scheduler, "add_noise"):
            raise ValueError(f"`image`: {type(pipe.scheduler).__name__} has no `add_noise`, needed for img2img.")
        check_float_image_range(image)
    if mask_image is not None:
        n, mask_channels, *mask_size = image_layout(mask_image, "mask_image", grayscale=True)
        if n not in (1, batch_size):
            first = mask_image[0] if isinstance(mask_image, list) else mask_image
            read = ""
            if getattr(first, "ndim", None) == 3:  # as diffusers reads a 3-D mask: (masks, H, W)
                read = (
                    f" (a 3-D array or tensor is read as (masks, height, width): shape {tuple(first.shape)}; for an "
                    "(H, W, 3) RGB mask pass one channel, e.g. mask[..., 0], or a PIL image)"
                )
            raise ValueError(f"`mask_image` holds {n} masks{read}; pass 1 or one per prompt ({batch_size}).")
        if mask_channels not in (None, 1):
            raise ValueError(f"`mask_image` must have 1 channel, got {mask_channels}.")
        if mask_size != size:
            raise ValueError(f"`mask_image` size {tuple(mask_size)} must equal `image` size {tuple(size)} (H, W).")
        if pipe.vae is not None and pipe.vae.config.latent_channels != pipe.unet.config.in_channels:
            raise ValueError("`mask_image`: inpainting needs a UNet whose input channels equal the latent channels.")
    return batch_size
