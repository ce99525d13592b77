"""Short scheduler names for scripts and examples (``--scheduler dpm++``), mapped to diffusers classes.

Every entry is built with ``from_config`` on the pipeline's saved scheduler config, so the trained beta
schedule and ``prediction_type`` carry over unchanged.
"""

from __future__ import annotations

from typing import Any

import diffusers

#: name -> (diffusers class name, extra config overrides)
SCHEDULER_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++-karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "dpm-single": ("DPMSolverSinglestepScheduler", {}),
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
    "deis": ("DEISMultistepScheduler", {}),
    "euler-maruyama": ("EulerMaruyamaScheduler", {}),
}


def get_scheduler(name: str, config: Any) -> Any:
    """Builds the scheduler called `name` from an existing scheduler `config`.

    Args:
        name (`str`): A key of `SCHEDULER_ALIASES` (e.g. ``"dpm++"``) or a diffusers scheduler class name
            (e.g. ``"UniPCMultistepScheduler"``).
        config: The config (``scheduler.config``) whose training schedule the new scheduler keeps.

    Returns:
        A scheduler instance.

    Raises:
        `ValueError`: If `name` is neither an alias nor a scheduler class.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string, got {type(name).__name__}.")
    class_name, overrides = SCHEDULER_ALIASES.get(name, (name, {}))
    if class_name == "EulerMaruyamaScheduler":
        from .scheduling_euler_maruyama import EulerMaruyamaScheduler as scheduler_cls
    else:
        scheduler_cls = getattr(diffusers, class_name, None)
        if scheduler_cls is None or not hasattr(scheduler_cls, "from_config") or not class_name.endswith("Scheduler"):
            raise ValueError(
                f"`scheduler` must be one of {sorted(SCHEDULER_ALIASES)} or a diffusers scheduler class name, "
                f"got {name!r}."
            )
    return scheduler_cls.from_config(config, **overrides)
