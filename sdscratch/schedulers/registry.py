"""Short scheduler names for scripts and examples (``--scheduler dpm++``), mapped to diffusers classes.

Every entry is built with ``from_config`` on the pipeline's saved scheduler config, so the trained beta
schedule and ``prediction_type`` carry over unchanged, while a short name sets what it names (its solver's
``algorithm_type``, its sigma spacing) whatever that config was built as: ``"deis"`` on an SDE-DPM-Solver++
config would otherwise fail in diffusers, and ``"dpm-single"`` there would sample with the SDE's noise.
"""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
from diffusers.utils import DummyObject
from diffusers.utils.import_utils import requires_backends

#: name -> (diffusers class name, extra config overrides)
SCHEDULER_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++-karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
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
}


#: Sigma spacings a config can carry over from another scheduler: a short name turns off those it does not name
#: ("euler" built on a "dpm++-karras" config would otherwise sample Karras sigmas). Class names keep them, as
#: diffusers' `from_config` does.
SIGMA_SPACING_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def compatible_scheduler_names() -> list[str]:
    """The scheduler classes `get_scheduler` accepts by class name: the DDPM family's `compatibles` (the schedulers
    diffusers' Stable Diffusion pipelines take, `KarrasDiffusionSchedulers`) plus sdscratch's `EulerMaruyamaScheduler`.

    Returns:
        `list[str]`: Sorted class names.
    """
    names = {cls.__name__ for cls in diffusers.DDPMScheduler._get_compatibles()}
    return sorted(names | {"EulerMaruyamaScheduler"})


def check_scheduler_name(name: str) -> tuple[str, dict[str, Any]]:
    """The class name and config overrides of the scheduler `get_scheduler` would build for `name`, checked
    before any model is loaded.

    Raises:
        `TypeError`: If `name` is not a string.
        `ValueError`: If `name` is neither an alias nor a compatible scheduler class name, or is an EDM scheduler
            (`EDMEulerScheduler`: its noise conditioning is not the timesteps a DDPM-trained UNet reads).
        `ImportError`: If the scheduler needs a package that is not installed (`DPMSolverSDEScheduler`: torchsde).
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string, got {type(name).__name__}.")
    class_name, overrides = SCHEDULER_ALIASES.get(name, (name, {}))
    compatibles = compatible_scheduler_names()
    if class_name not in compatibles:
        raise ValueError(
            f"`scheduler` {name!r} is not DDPM-compatible; choose a short name "
            f"{sorted(SCHEDULER_ALIASES)} or a class of the DDPM family's `compatibles` {compatibles}."
        )
    scheduler_cls = getattr(diffusers, class_name, None)
    if hasattr(scheduler_cls, "precondition_noise"):  # the pipeline refuses it too (input_checks.check_inputs)
        raise ValueError(
            f"`scheduler` {name!r} feeds the UNet EDM's noise conditioning c_noise = log(sigma) / 4 instead of the "
            "discrete training timesteps this model was trained on; use 'euler' (EulerDiscreteScheduler, with "
            "use_karras_sigmas=True for the EDM/Karras sigma schedule) instead."
        )
    if isinstance(scheduler_cls, DummyObject):  # diffusers' stand-in for a class whose optional package is missing
        requires_backends(scheduler_cls, scheduler_cls._backends)  # its ImportError: "... pip install torchsde"
    return class_name, overrides


def get_scheduler(name: str, config: Any) -> Any:
    """Builds the scheduler called `name` from an existing scheduler `config`.

    Args:
        name (`str`): A key of `SCHEDULER_ALIASES` (e.g. ``"dpm++"``) or the class name of a scheduler compatible
            with sdscratch pipelines (e.g. ``"UniPCMultistepScheduler"``, see `compatible_scheduler_names`).
        config: The config (``scheduler.config``) whose training schedule the new scheduler keeps.

    Returns:
        A scheduler instance.

    Raises:
        `TypeError`: If `name` is not a string.
        `ImportError`: If the scheduler needs a package that is not installed (`DPMSolverSDEScheduler`: torchsde).
        `ValueError`: If `name` is neither an alias nor a compatible scheduler class name (flow-matching, inverse
            and score-SDE schedulers such as ``FlowMatchEulerDiscreteScheduler``, ``DDIMInverseScheduler`` or
            ``ScoreSdeVeScheduler`` cannot sample a DDPM-trained model in a text-to-image pipeline).
    """
    class_name, overrides = check_scheduler_name(name)
    if class_name == "EulerMaruyamaScheduler":
        from .scheduling_euler_maruyama import EulerMaruyamaScheduler as scheduler_cls
    else:
        scheduler_cls = getattr(diffusers, class_name)
    if name in SCHEDULER_ALIASES:  # a short name means its own sigma spacing, whatever the config was built as
        accepted = inspect.signature(scheduler_cls.__init__).parameters
        overrides = {**{flag: False for flag in SIGMA_SPACING_FLAGS if flag in accepted}, **overrides}
    return scheduler_cls.from_config(config, **overrides)
