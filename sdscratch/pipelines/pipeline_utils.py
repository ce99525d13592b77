"""Helpers shared by `CartoonFacePipeline`'s text-to-image, img2img, inpainting and interpolation paths.

Kept out of the pipeline module so that each file reads as one concept: here the timestep, latent and
scheduler plumbing (as diffusers' `retrieve_timesteps` / `retrieve_latents`), in `input_checks.py` the
validation of every `__call__` argument, in `image_inputs.py` how image inputs are read, in
`pipeline_cartoon_face.py` the numbered phases.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    SchedulerMixin,
)


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
        if isinstance(scheduler, (DDIMScheduler, DDPMScheduler, PNDMScheduler)) and (scheduler.timesteps < 0).any():
            # diffusers 0.42's "trailing" spacing (np.arange(T, 0, -T / n)) overshoots for some n (61, 103, ... of
            # 1000) by one timestep, -1: these schedulers read alphas_cumprod[-1] = ᾱ_T there and end on pure noise.
            # Their last step already goes to the clean image (prev_t < 0), so the extra one is dropped.
            scheduler.timesteps = scheduler.timesteps[scheduler.timesteps >= 0]
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


# Copied from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.rescale_noise_cfg (that module imports
# transformers' image processors, which warn about torchvision on every import)
def rescale_noise_cfg(noise_cfg: torch.Tensor, noise_pred_text: torch.Tensor, guidance_rescale: float = 0.0):
    r"""Rescales `noise_cfg` by `guidance_rescale` to fix overexposure (Section 3.4 of [Common Diffusion Noise
    Schedules and Sample Steps are Flawed](https://huggingface.co/papers/2305.08891)).

    Args:
        noise_cfg (`torch.Tensor`): The guided noise prediction.
        noise_pred_text (`torch.Tensor`): The text-conditioned noise prediction.
        guidance_rescale (`float`, defaults to 0.0): The share of the rescaled prediction in the result.

    Returns:
        `torch.Tensor`: The rescaled noise prediction.
    """
    std_text = noise_pred_text.std(dim=list(range(1, noise_pred_text.ndim)), keepdim=True)
    std_cfg = noise_cfg.std(dim=list(range(1, noise_cfg.ndim)), keepdim=True)
    # rescale the results from guidance (fixes overexposure)
    noise_pred_rescaled = noise_cfg * (std_text / std_cfg)
    # mix with the original results from guidance by factor guidance_rescale to avoid "plain looking" images
    noise_cfg = guidance_rescale * noise_pred_rescaled + (1 - guidance_rescale) * noise_cfg
    return noise_cfg


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


def scheduler_setting(scheduler: SchedulerMixin, key: str, default: Any = None) -> Any:
    """`scheduler.config[key]` when `key` is an argument of the scheduler class's own `__init__`, else `default`.

    `from_config` / `from_pretrained` keep the keys of the config a scheduler was built from, also those its class
    does not take (an Euler built from a DPM-Solver config carries `use_flow_sigmas`, a DDIM built from a PNDM one
    `skip_prk_steps`): they mean nothing to this scheduler, so the pipeline's checks read only its own.
    """
    if key not in inspect.signature(type(scheduler).__init__).parameters:
        return default
    return scheduler.config.get(key, default)


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
        if scheduler_setting(scheduler, "use_flow_sigmas") is False:  # UniPC / DPM-Solver: flow matching only
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
    own = [key for key in sigma_schedules if scheduler_setting(scheduler, key, False)]
    if own:
        raise ValueError(
            f"`timesteps`: {type(scheduler).__name__} with {own[0]}=True derives its timesteps from its own sigma "
            f"schedule; pass `num_inference_steps` instead or build the scheduler with {own[0]}=False."
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


def clip_final_layer_norm(text_encoder: Any) -> torch.nn.Module | None:
    """A CLIP text encoder's `final_layer_norm` (`None` if it has none): on the model itself in transformers >= 5.6,
    which flattened `CLIPTextModel`, on its `text_model` before (and in `CLIPTextModelWithProjection`). diffusers
    0.42's `clip_skip` reads `text_encoder.text_model.final_layer_norm` and fails on the former (diffusers issue
    14124)."""
    return getattr(getattr(text_encoder, "text_model", text_encoder), "final_layer_norm", None)
