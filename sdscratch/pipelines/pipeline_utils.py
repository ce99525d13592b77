"""Helpers shared by `CartoonFacePipeline`'s text-to-image, img2img, inpainting and interpolation paths.

Kept out of the pipeline module so that each file reads as one concept: here the timestep, latent and
scheduler plumbing (as diffusers' `retrieve_timesteps` / `retrieve_latents`), there the numbered phases.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DPMSolverMultistepScheduler, LMSDiscreteScheduler, PNDMScheduler, SchedulerMixin

#: Image types `image` / `mask_image` accept (one of these, or a list of them), as diffusers' `PipelineImageInput`.
IMAGE_TYPES = (PIL.Image.Image, np.ndarray, torch.Tensor)


def retrieve_timesteps(
    scheduler: SchedulerMixin,
    num_inference_steps: int | None = None,
    device: str | torch.device | None = None,
    timesteps: list[int] | None = None,
    sigmas: list[float] | None = None,
) -> tuple[torch.Tensor, int]:
    """Calls `scheduler.set_timesteps` and returns its timesteps, as diffusers' `retrieve_timesteps`.

    Args:
        scheduler (`SchedulerMixin`): The scheduler to get timesteps from.
        num_inference_steps (`int`, *optional*): Number of denoising steps; ignored when `timesteps` or `sigmas`
            is given.
        device (`str` or `torch.device`, *optional*): Where the timesteps go.
        timesteps (`list[int]`, *optional*): Custom timesteps (descending) overriding the scheduler's spacing (a
            1-D numpy array or tensor works too).
        sigmas (`list[float]`, *optional*): Custom sigmas (descending; a 1-D array or tensor works too) overriding
            the scheduler's spacing, for schedulers whose `set_timesteps` takes them (`EulerDiscreteScheduler`: the
            final sigma included).

    Returns:
        `tuple[torch.Tensor, int]`: The timestep schedule and the number of inference steps.

    Raises:
        `ValueError`: If both `timesteps` and `sigmas` are given, or the scheduler cannot take the one given.
    """
    if timesteps is not None and sigmas is not None:
        raise ValueError("Pass either `timesteps` or `sigmas`, not both.")
    if timesteps is not None:
        check_scheduler_accepts(scheduler, "timesteps")
        timesteps = as_list(timesteps)
        # the steps asked for: a second-order scheduler (Heun) lists 2 * len(timesteps) - 1 timesteps for them
        num_inference_steps = len(timesteps)
        scheduler.set_timesteps(timesteps=timesteps, device=device)
    elif sigmas is not None:
        check_scheduler_accepts(scheduler, "sigmas")
        # an array, as the schedulers compute with it (UniPC's flow sigmas cannot take a list; a GPU tensor is read)
        scheduler.set_timesteps(sigmas=np.asarray(as_list(sigmas), dtype=np.float64), device=device)
        num_inference_steps = len(scheduler.timesteps) // scheduler.order
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    return scheduler.timesteps, num_inference_steps


def as_list(values: Any) -> Any:
    """A 1-D numpy array or tensor (custom `timesteps` / `sigmas`, as diffusers' schedulers take them) as a list of
    Python numbers; anything else unchanged."""
    if isinstance(values, (np.ndarray, torch.Tensor)) and values.ndim == 1:
        return values.tolist()
    return values


def start_schedule_at(scheduler: SchedulerMixin, t_start: int) -> torch.Tensor:
    """Sets `scheduler` to skip the first `t_start` steps of its schedule (img2img) and returns the timesteps left.

    As diffusers' img2img (`timesteps[t_start * order:]` and `set_begin_index`), except for two schedulers that
    cannot start part-way through their schedule (diffusers' img2img leaves noise in their images): LMS takes its
    multistep order from the step index instead of the derivatives it has seen, and PLMS (`PNDMScheduler`) needs the
    repeated timestep of its warm-up step ([t0, t1, t1, t2, ...]) at its start. Their schedules are cut instead, so
    that they start at step 0 (`set_timesteps` restores them).

    Args:
        scheduler (`SchedulerMixin`): A scheduler after `set_timesteps`.
        t_start (`int`): Steps to skip, in [0, num_inference_steps).

    Returns:
        `torch.Tensor`: The timesteps to run.
    """
    if t_start > 0 and isinstance(scheduler, LMSDiscreteScheduler):
        scheduler.timesteps = scheduler.timesteps[t_start:]
        scheduler.sigmas = scheduler.sigmas[t_start:]  # its last entry is the final sigma (0)
        t_start = 0
    elif t_start > 0 and isinstance(scheduler, PNDMScheduler) and scheduler.config.skip_prk_steps:
        grid = torch.cat([scheduler.timesteps[:1], scheduler.timesteps[2:]])  # [t0, t1, t2, ...] without the repeat
        remaining = grid[t_start:]
        scheduler.timesteps = torch.cat([remaining[:2], remaining[1:]])  # [t_s, t_s+1, t_s+1, t_s+2, ...]
        t_start = 0
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return scheduler.timesteps[t_start * scheduler.order :]


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


def _item_layout(item: Any, name: str, grayscale: bool, in_list: bool) -> tuple[int, int | None, int, int]:
    """`(batch, channels, height, width)` of one entry of a `PipelineImageInput` (see `image_layout`)."""
    if isinstance(item, PIL.Image.Image):
        return 1, None, item.height, item.width
    shape = tuple(item.shape)
    if isinstance(item, np.ndarray):  # channels last
        if len(shape) == 4:
            return shape[0], shape[3], shape[1], shape[2]
        if len(shape) == 3:
            if grayscale and not in_list and shape[-1] != 1:  # (B, H, W), as diffusers' mask inputs
                return shape[0], 1, shape[1], shape[2]
            return 1, shape[2], shape[0], shape[1]  # (H, W, C)
        if len(shape) == 2:  # (H, W)
            return 1, 1, shape[0], shape[1]
        allowed = "(B, H, W, C), (H, W, C)" + (", (B, H, W)" if grayscale and not in_list else "") + " or (H, W)"
    else:  # torch.Tensor, channels first
        if len(shape) == 4:
            return shape
        if len(shape) == 3:
            if grayscale and not in_list:  # (B, H, W) or (1, H, W): diffusers inserts the channel dimension
                return shape[0], 1, shape[1], shape[2]
            return 1, *shape  # (C, H, W)
        if len(shape) == 2 and grayscale:  # (H, W)
            return 1, 1, shape[0], shape[1]
        allowed = "(B, C, H, W), (C, H, W)" + (", (B, H, W) or (H, W)" if grayscale else "")
    raise ValueError(
        f"`{name}`: a {type(item).__name__} of shape {shape} is not an image here; allowed shapes: {allowed}."
    )


def image_layout(image: Any, name: str = "image", grayscale: bool = False) -> tuple[int, int | None, int, int]:
    """`(batch, channels, height, width)` that diffusers' `VaeImageProcessor.preprocess` makes of `image`.

    Follows `preprocess`'s own normalisation, so that defaults derived from the input (output size, batch size)
    are those of the tensor the pipeline will actually use:

    - a PIL image is one image (its channels are converted by the processor: `None` here); a list of them is a
      batch, resized to the size of the first;
    - numpy arrays are channels-last: `(B, H, W, C)`, `(H, W, C)` or `(H, W)`; a list stacks them (4-D ones are
      concatenated);
    - tensors are channels-first: `(B, C, H, W)` or `(C, H, W)`; a list stacks them (4-D ones are concatenated);
    - with a grayscale processor (`grayscale=True`, as for masks), a single 3-D numpy array is `(H, W, 1)` when
      its last dimension is 1 and `(B, H, W)` otherwise, a single 3-D tensor is `(B, H, W)` (or `(1, H, W)`), and
      2-D tensors `(H, W)` are accepted.

    Args:
        image (`PipelineImageInput`): PIL image, numpy array, torch tensor or a non-empty list of one of them.
        name (`str`, defaults to `"image"`): The argument's name, for error messages.
        grayscale (`bool`, defaults to `False`): Whether the processor has `do_convert_grayscale=True`.

    Returns:
        `tuple[int, int | None, int, int]`: Batch size, channels (`None` for PIL), height and width (of the first
        image, which every other one must match unless they are PIL images).

    Raises:
        `ValueError`: For an array / tensor shape that is not an image, or list entries of different sizes.
    """
    check_image_type(image, name)
    items = image if isinstance(image, list) else [image]
    layouts = [_item_layout(item, name, grayscale, in_list=isinstance(image, list)) for item in items]
    _, channels, height, width = layouts[0]
    if not isinstance(items[0], PIL.Image.Image):
        others = {tuple(layout[1:]) for layout in layouts[1:]} - {(channels, height, width)}
        if others:
            raise ValueError(
                f"`{name}`: every entry of the list must have the first one's (channels, height, width) "
                f"{(channels, height, width)}, got {sorted(others)}."
            )
    return sum(layout[0] for layout in layouts), channels, height, width


def check_float_image_range(image: Any, name: str = "image") -> None:
    """Raises `ValueError` for a float array / tensor with values above 1: `VaeImageProcessor` reads floats as [0, 1]
    (or the deprecated [-1, 1]), so 0-255 floats (`np.array(pil_image).astype(np.float32)`) would come out white."""
    for item in image if isinstance(image, list) else [image]:
        if isinstance(item, np.ndarray) and np.issubdtype(item.dtype, np.floating) and item.size:
            high = float(np.nanmax(item))
        elif isinstance(item, torch.Tensor) and item.is_floating_point() and item.numel():
            high = float(item.detach().float().max())
        else:
            continue
        if high > 1.0 + 1e-3:
            raise ValueError(
                f"`{name}`: float arrays and tensors must hold values in [0, 1], got values up to {high:g}; divide "
                "0-255 values by 255 (or pass uint8 or a PIL image)."
            )


def as_float_images(image: Any, scale_uint8: bool) -> Any:
    """`image` (a `PipelineImageInput`) with boolean and (`scale_uint8=True`) uint8 arrays / tensors made float32.

    `VaeImageProcessor` takes numpy arrays and tensors as floats in [0, 1]: a uint8 image (`np.array(pil_image)`,
    0-255) would be normalised to [-1, 509] and decode to a white image, and boolean ones crash its resize. uint8
    images are divided by 255 (as PIL images are read); masks keep their uint8 values (0/1 and 0/255 both binarise
    right) and booleans become 0.0 / 1.0.
    """
    if isinstance(image, list):
        return [as_float_images(item, scale_uint8) for item in image]
    if isinstance(image, np.ndarray):
        if image.dtype == np.bool_:
            return image.astype(np.float32)
        if scale_uint8 and image.dtype == np.uint8:
            return image.astype(np.float32) / 255
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.bool:
            return image.float()
        if scale_uint8 and image.dtype == torch.uint8:
            return image.float() / 255
    return image


def check_image_type(image: Any, name: str) -> None:
    """Raises `TypeError` unless `image` is a PIL image, numpy array, torch tensor, or a non-empty list of one of
    those types."""
    items = image if isinstance(image, list) else [image]
    kinds = sorted({type(i).__name__ for i in items}) or ["empty list"]
    if len(items) == 0 or not all(isinstance(i, IMAGE_TYPES) for i in items):
        raise TypeError(
            f"`{name}` must be a PIL.Image.Image, np.ndarray or torch.Tensor (or a list of them), got {kinds}."
        )
    if len({next(t for t in IMAGE_TYPES if isinstance(i, t)) for i in items}) > 1:
        raise TypeError(f"`{name}`: a list must hold images of one type (PIL, numpy or torch), got {kinds}.")


def check_scheduler_accepts(scheduler: SchedulerMixin, name: str) -> None:
    """Raises `ValueError` naming `name` (`"timesteps"` or `"sigmas"`) unless `scheduler.set_timesteps` takes a
    custom schedule of that kind (custom timesteps do not go with a Karras, exponential, beta or Lu-lambda sigma
    schedule; custom sigmas need the scheduler's own sigma convention: see its `set_timesteps`)."""
    if name not in inspect.signature(scheduler.set_timesteps).parameters:
        example = "DDPMScheduler, EulerDiscreteScheduler" if name == "timesteps" else "EulerDiscreteScheduler"
        raise ValueError(
            f"`{name}`: {type(scheduler).__name__}.set_timesteps does not accept custom {name}; "
            f"pass `num_inference_steps` instead or use a scheduler that does (e.g. {example})."
        )
    if name == "sigmas":
        if getattr(scheduler.config, "use_flow_sigmas", None) is False:  # UniPC / DPM-Solver: flow matching only
            takes_timesteps = "timesteps" in inspect.signature(scheduler.set_timesteps).parameters
            raise ValueError(
                f"`sigmas`: {type(scheduler).__name__} takes custom sigmas only with use_flow_sigmas=True (flow "
                "matching models); for this model use EulerDiscreteScheduler"
                + (", or `timesteps`." if takes_timesteps else " (or pass `num_inference_steps`).")
            )
        return
    # diffusers' set_timesteps refuses these too, but only after the text encoder has run (and with flow sigmas,
    # DPM-Solver++ multistep crashes: 'NoneType' + 'int')
    sigma_schedules = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")
    sigma_schedules += ("use_flow_sigmas",)
    own = [key for key in sigma_schedules if getattr(scheduler.config, key, False)]
    if own:
        raise ValueError(
            f"`timesteps`: {type(scheduler).__name__} with {own[0]}=True derives its timesteps from its own sigma "
            f"schedule; pass `num_inference_steps` instead or build the scheduler with {own[0]}=False."
        )


def is_real_number(value: Any) -> bool:
    """`True` for Python / numpy real scalars and 0-d real tensors (not booleans)."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


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


def clip_final_layer_norm(text_encoder: Any) -> torch.nn.Module | None:
    """A CLIP text encoder's `final_layer_norm` (`None` if it has none): on the model itself in transformers >= 5.6,
    which flattened `CLIPTextModel`, on its `text_model` before (and in `CLIPTextModelWithProjection`). diffusers
    0.42's `clip_skip` reads `text_encoder.text_model.final_layer_norm` and fails on the former (diffusers issue
    14124)."""
    return getattr(getattr(text_encoder, "text_model", text_encoder), "final_layer_norm", None)


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
    if getattr(scheduler.config, "use_flow_sigmas", False) and not all(0 < float(v) <= 1 for v in values):
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
    guidance_rescale=0.0,
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
    if not is_real_number(guidance_scale):
        raise TypeError(
            f"`guidance_scale` must be a real number (e.g. 7.5; <= 1 disables guidance), got {guidance_scale!r}."
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
        elif isinstance(latents, torch.Tensor) and latents.ndim == 4 and isinstance(num_images_per_prompt, int):
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
        if not isinstance(value, int) or value <= 0 or value % factor != 0:
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
    if not custom and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
        raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}.")
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
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be an integer >= 1, got {num_images_per_prompt!r}.")
    if not is_real_number(strength) or not 0 <= strength <= 1:
        raise ValueError(f"`strength` must be a real number in [0, 1], got {strength!r}.")
    if not is_real_number(guidance_rescale) or not 0 <= guidance_rescale <= 1:
        raise ValueError(f"`guidance_rescale` must be a real number in [0, 1], got {guidance_rescale!r}.")
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
    prk_steps = getattr(pipe.scheduler.config, "skip_prk_steps", True) is False
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
            raise ValueError(f"`mask_image` holds {n} masks; pass 1 or one per prompt ({batch_size}).")
        if mask_channels not in (None, 1):
            raise ValueError(f"`mask_image` must have 1 channel, got {mask_channels}.")
        if mask_size != size:
            raise ValueError(f"`mask_image` size {tuple(mask_size)} must equal `image` size {tuple(size)} (H, W).")
        if pipe.vae is not None and pipe.vae.config.latent_channels != pipe.unet.config.in_channels:
            raise ValueError("`mask_image`: inpainting needs a UNet whose input channels equal the latent channels.")
    return batch_size
