"""Accelerator, optimizer and schedule: what the scripts set up once the flags are checked, and the per-step log.

`make_accelerator` (a data order that resumes exactly, quiet non-main processes, a warning for idle CPU cores),
`make_optimizer_and_scheduler` (AdamW and diffusers' LR schedules, counted as accelerate's prepared scheduler
counts), `delay_param_group` (one parameter group held at 0, then ramped), `rebase_lr_scheduler` (a checkpoint
resumed by another number of processes), `make_ema` (diffusers' `EMAModel` with warmup), `seed_each_process`,
and `MicroBatchMean` (the logged values of one optimizer step over its gradient accumulation micro-batches).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Callable
from typing import Optional

import diffusers
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from .._cpu import omp_threads_from_accelerate_launch, usable_cores
from .checkpoints import checkpoint_step
from .flags import report_to_trackers

logger = logging.getLogger(__name__)


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """An `Accelerator` whose data order is a pure function of `(seed, epoch)`, so that a resumed run sees the same
    batches as an uninterrupted one (`use_seedable_sampler`). Processes other than each machine's main one log
    errors only (diffusers, transformers and sdscratch), as diffusers' training scripts do."""
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to_trackers(args.report_to),
        project_config=project_config,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    check_all_processes_joined(accelerator)
    if not accelerator.is_local_main_process:  # as diffusers' scripts: one copy of each warning, not one per process
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        logging.getLogger(__name__.partition(".")[0]).setLevel(logging.ERROR)  # sdscratch's own modules
    message = idle_cores_message(accelerator)
    if message is not None and accelerator.is_local_main_process:
        logger.warning(message)
    return accelerator


def check_all_processes_joined(accelerator: Accelerator) -> None:
    """Raises a `ValueError` when several processes were launched (`WORLD_SIZE` > 1) but accelerate runs each alone:
    on a machine without GPUs, accelerate sets up CPU processes only with `ACCELERATE_USE_CPU=1`; without it each
    process trained its own copy into the same `--output_dir`, colliding on the checkpoint files."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes == 1:
        raise ValueError(
            f"{launched} processes were launched (WORLD_SIZE={launched}), but accelerate runs each one alone: they "
            f"would train {launched} separate copies into one --output_dir. On a machine without GPUs set "
            "ACCELERATE_USE_CPU=1, e.g. `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 "
            "--num_machines 1 training/<script>.py ...` (docs/training.md)."
        )


def idle_cores_message(accelerator: Accelerator) -> Optional[str]:
    """A warning when a CPU run leaves cores idle because of `accelerate launch`: it sets `OMP_NUM_THREADS=1` unless
    it is given, so a single process then trains on one core of many (measured here: 55 instead of 93 samples/s on
    2 cores). `None` on accelerators, when every core has a thread, and when the thread count is the user's own
    choice (`OMP_NUM_THREADS` set by the user, e.g. the 1 thread recipes/digits.sh recommends, or
    `--num_cpu_threads_per_process` given; see `sdscratch._cpu.omp_threads_from_accelerate_launch`)."""
    if accelerator.device.type != "cpu":
        return None
    cores = usable_cores()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    threads = torch.get_num_threads()
    if threads * processes >= cores or not omp_threads_from_accelerate_launch():
        return None
    per_process = max(1, cores // processes)
    return (
        f"torch uses {threads} thread(s) in each of {processes} process(es) on this machine's {cores} cores, so "
        f"{cores - threads * processes} core(s) stay idle (`accelerate launch` sets OMP_NUM_THREADS=1 unless it "
        f"is given). For full speed: `export OMP_NUM_THREADS={per_process}` or `accelerate launch "
        f"--num_cpu_threads_per_process {per_process}`."
    )


def make_optimizer_and_scheduler(args, params, accelerator: Accelerator, num_update_steps_per_epoch: int):
    """AdamW + diffusers' LR schedule (steps counted per process, as diffusers does after `prepare`).

    The fused AdamW kernel is used where torch has one for every parameter's device (CPU and CUDA): the same
    update in one pass over the parameters instead of one per tensor (8.7 vs 34 ms per step for the 7M parameters
    of the shipped cartoon-faces UNet + text encoder on 2 CPU threads). Its state dict is the plain AdamW one, so
    checkpoints resume either way.
    """
    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    # a length in epochs means another number of steps on another number of processes (see rebase_lr_scheduler)
    args.steps_from_epochs = args.max_train_steps is None
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    args.num_train_epochs = -(-args.max_train_steps // num_update_steps_per_epoch)  # ceil
    params = list(params)  # tensors, or parameter-group dicts ({"params": [...], "lr": ...})
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    optimizer = torch.optim.AdamW(
        params,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
        fused=fused or None,
    )
    # the prepared scheduler steps once per process per optimizer step, hence the factors
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
        num_cycles=getattr(args, "lr_num_cycles", 1),  # diffusers' defaults where a caller's args lack them
        power=getattr(args, "lr_power", 1.0),
    )
    return optimizer, lr_scheduler


def delay_param_group(
    lr_scheduler: torch.optim.lr_scheduler.LambdaLR,
    group: int,
    delay_steps: int,
    warmup_steps: int,
    num_processes: int = 1,
) -> None:
    """Hold one parameter group's learning rate at 0 for `delay_steps` optimizer steps, then raise it linearly to
    the schedule's value over `warmup_steps` more; the other groups keep the schedule as it is.

    AdamW with a learning rate of 0 leaves the weights exactly as they are (decoupled weight decay is scaled by
    it too), so the group is frozen without leaving the optimizer: checkpoints, DDP and gradient clipping see the
    same parameters throughout. Works on every diffusers `get_scheduler` schedule (all are `LambdaLR`); steps are
    counted as that schedule counts them after `accelerator.prepare` (`num_processes` per optimizer step).
    """
    if not isinstance(lr_scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise TypeError(f"lr_scheduler must be a LambdaLR (what diffusers' get_scheduler returns), got {lr_scheduler}")
    if delay_steps < 0 or warmup_steps < 0:
        raise ValueError(f"delay_steps and warmup_steps must be >= 0, got {delay_steps} and {warmup_steps}")
    start, ramp = delay_steps * num_processes, max(1, warmup_steps)
    schedule = lr_scheduler.lr_lambdas[group]

    def delayed(step: int) -> float:
        # the ramp counts optimizer steps, so that it is the same with any number of processes
        return 0.0 if step < start else schedule(step) * min(1.0, ((step - start) // num_processes + 1) / ramp)

    lr_scheduler.lr_lambdas[group] = delayed
    param_group = lr_scheduler.optimizer.param_groups[group]
    param_group["lr"] = param_group["initial_lr"] * delayed(lr_scheduler.last_epoch)
    lr_scheduler._last_lr = [g["lr"] for g in lr_scheduler.optimizer.param_groups]


def seed_each_process(accelerator: Accelerator, seed: int) -> None:
    """Call once the models are built (the same initial weights everywhere): every process but the main one draws
    from here on from its own stream (`seed + process index`), so that the processes' batches get their own noise,
    timesteps, flips, crops and caption drops instead of the same ones. The main process keeps its stream, so a
    one-process run is unchanged; checkpoints save each process's RNG state, so runs still resume exactly."""
    if accelerator.process_index > 0:
        set_seed((seed + accelerator.process_index) % 2**32)  # numpy takes seeds below 2**32


RANDOM_STATES_FILE = re.compile(r"random_states_\d+\.pkl")  # accelerate's save_state: one per process


def checkpoint_num_processes(checkpoint: str) -> int:
    """How many processes wrote `checkpoint`: accelerate saves one `random_states_<i>.pkl` per process."""
    return sum(1 for name in os.listdir(checkpoint) if RANDOM_STATES_FILE.fullmatch(name)) or 1


def is_training_checkpoint(folder: str) -> bool:
    """`True` for a folder `accelerator.save_state` wrote (a `checkpoint-<step>` of a training run: its optimizer
    state, or its processes' random states)."""
    if os.path.isfile(os.path.join(folder, "optimizer.bin")):
        return True
    return os.path.isdir(folder) and any(RANDOM_STATES_FILE.fullmatch(name) for name in os.listdir(folder))


def _unwrapped(lr_scheduler):
    return getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's AcceleratedScheduler wraps the LambdaLR


def resume_state(
    accelerator: Accelerator,
    lr_scheduler,
    resume_path: str,
    steps_from_epochs: bool = False,
    load: Optional[Callable[[str], None]] = None,
) -> int:
    """The scripts' resume: `load(resume_path)` (default `accelerator.load_state`), then `rebase_lr_scheduler` with
    the learning rates this run's flags set (`--learning_rate`, `--scale_lr`, `--text_encoder_lr`), read before the
    load replaces them with the checkpoint's. Returns the checkpoint's optimizer step."""
    base_lrs = list(_unwrapped(lr_scheduler).base_lrs)
    (load or accelerator.load_state)(resume_path)
    step = checkpoint_step(resume_path)
    rebase_lr_scheduler(accelerator, lr_scheduler, step, resume_path, base_lrs, steps_from_epochs)
    return step


def rebase_lr_scheduler(
    accelerator: Accelerator,
    lr_scheduler,
    step: int,
    checkpoint: str,
    base_lrs: Optional[list[float]] = None,
    steps_from_epochs: bool = False,
) -> None:
    """After `accelerator.load_state(checkpoint)`: the LR schedule at optimizer step `step` as this run counts it
    (accelerate's prepared scheduler steps once per process per optimizer step, see `make_optimizer_and_scheduler`).
    A checkpoint written by another number of processes saved another count: resumed as it is, a 2-process
    checkpoint would put a 1-process run's schedule twice as far (a linear decay at 0 halfway through the remaining
    steps). With `base_lrs` (read before loading, see `resume_state`), the rates this run's flags set: `load_state`
    restores the checkpoint's, so a resume with another `--learning_rate` (or `--scale_lr` on another number of
    processes) trained at the old rate while the model card stated the new one; the schedule now goes on at the
    flags' rates, with a warning. A checkpoint of as many processes and the same rates is left exactly as saved.

    A run sized by `--num_train_epochs` (`steps_from_epochs`: no `--max_train_steps`) cannot change its number of
    processes: its length in steps is derived from the processes' batches, so the resumed run redefined it (a
    2-process run of 3 steps, resumed on 1 process, went on to 7 and saw 80 samples for a 64-sample epoch, and a
    finished one was trained again). A `ValueError` asks for `--max_train_steps` then."""
    written_by, num_processes = checkpoint_num_processes(checkpoint), accelerator.num_processes
    if written_by != num_processes and steps_from_epochs:
        raise ValueError(
            f"{checkpoint} was written by {written_by} process(es), this run has {num_processes}, and the run's "
            "length is given in epochs (--num_train_epochs, no --max_train_steps): an epoch is another number of "
            "steps on another number of processes. Pass --max_train_steps (optimizer steps in all, counting the "
            f"{step} already taken) to resume it, or resume on {written_by} process(es)."
        )
    scheduler = _unwrapped(lr_scheduler)
    saved = list(scheduler.base_lrs)
    new_rates = base_lrs is not None and any(abs(a - b) > 1e-12 * max(abs(a), abs(b)) for a, b in zip(saved, base_lrs))
    if written_by == num_processes and not new_rates:
        return
    if new_rates:
        if accelerator.is_main_process:
            logger.warning(
                f"{checkpoint} was trained at learning rate(s) {saved}; this run's flags (--learning_rate, "
                f"--scale_lr, --text_encoder_lr) give {list(base_lrs)}: the schedule goes on at the new rate(s)."
            )
        scheduler.base_lrs = list(base_lrs)
        for param_group, base_lr in zip(scheduler.optimizer.param_groups, base_lrs):
            param_group["initial_lr"] = base_lr
    if written_by != num_processes:
        if accelerator.is_main_process:
            logger.warning(
                f"{checkpoint} was written by {written_by} process(es), this run has {num_processes}: the "
                f"learning-rate schedule goes on from step {step}; the data order from here differs from the "
                "writing run's."
            )
        scheduler.last_epoch = step * num_processes
    for param_group, base_lr, lr_lambda in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas
    ):
        param_group["lr"] = base_lr * lr_lambda(scheduler.last_epoch)
    scheduler._last_lr = [param_group["lr"] for param_group in scheduler.optimizer.param_groups]


def enable_transformers_checkpointing(model) -> None:
    """Activation (gradient) checkpointing for a transformers model: `activation_checkpointing_enable` where the
    installed transformers has it (its `gradient_checkpointing_enable` is deprecated there and warns), else the old
    name."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def make_ema(model: torch.nn.Module, decay: float, device: Optional[torch.device] = None) -> EMAModel:
    """diffusers' `EMAModel` with warmup (decay grows as `1 - (1 + step) ** -2/3` up to `decay`), which suits the
    few thousand steps of a CPU run better than a fixed 0.9999. `foreach` updates all tensors in one call.

    Its copy of the weights goes to `device` (the accelerator's), as diffusers' scripts move theirs: the model is
    built on the CPU and accelerate moves only the model, and `step` cannot average CPU copies with GPU weights."""
    ema = EMAModel(model.parameters(), decay=decay, use_ema_warmup=True, power=2 / 3, foreach=True)
    if device is not None:
        ema.to(device=device)
    return ema


class MicroBatchMean:
    """The mean of logged values over the micro-batches of one optimizer step (`--gradient_accumulation_steps`),
    as diffusers logs `train_loss`: `add` at every micro-batch, `pop` when the gradients sync. With one micro-batch
    per step the value comes back exactly as it was added."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.sums[key] = value if key not in self.sums else self.sums[key] + value
        self.count += 1

    def pop(self) -> dict[str, float]:
        means = {key: total / self.count for key, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means
