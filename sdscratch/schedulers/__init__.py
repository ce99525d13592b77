"""Schedulers that diffusers lacks; every diffusers scheduler also works with sdscratch pipelines."""

from .scheduling_euler_maruyama import EulerMaruyamaScheduler, EulerMaruyamaSchedulerOutput

__all__ = ["EulerMaruyamaScheduler", "EulerMaruyamaSchedulerOutput"]
