"""Plumbing shared by `training/train_vae.py` and `training/train_unet.py`, so that the scripts keep only the loop.

Patterns follow diffusers' `examples/text_to_image/train_text_to_image.py`: flag names, `accelerator.save_state`
with save/load hooks that write `save_pretrained` folders, `--checkpoints_total_limit` pruning,
`--resume_from_checkpoint latest`, `EMAModel`, and model cards through `diffusers.utils.hub_utils`.

What is added on top of diffusers' example:
- a checkpoint is written to a temporary folder and renamed to `checkpoint-<step>` once complete, so a crash
  never leaves a half checkpoint that `latest` picks up;
- a checkpoint whose model configs differ from the run being started is refused before training starts.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import platform
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Optional

import diffusers
import numpy as np
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from diffusers.utils.hub_utils import populate_model_card
from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder
from PIL import Image

from .._cpu import omp_threads_from_accelerate_launch, usable_cores
from ..hub import VAE_FILES, looks_like_local_path, snapshot_folder
from ..models.vae import SmallVAE

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# config keys that say nothing about the architecture (written by diffusers / transformers on save)
_IGNORED_CONFIG_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values", "architectures")
_IGNORED_CONFIG_KEYS += ("transformers_version", "torch_dtype", "dtype", "_commit_hash")


# ---------------------------------------------------------------------------------------------------------------
# Command line: the flags both scripts share, named as in diffusers' example scripts.
# ---------------------------------------------------------------------------------------------------------------
def add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A Hub data set (e.g. `Skiittoo/cartoon-faces`), or built-in data without download: "
        "`builtin:cartoon-faces` or `builtin:digits`, options as a query: `builtin:cartoon-faces?num_images=2000`.",
    )
    group.add_argument("--dataset_config_name", type=str, default=None, help="Config of the Hub data set.")
    group.add_argument(
        "--train_data_dir", type=str, default=None, help="A folder of images (+ metadata.jsonl with captions)."
    )
    group.add_argument("--image_column", type=str, default=None, help="Column holding the images (default: image).")
    group.add_argument("--caption_column", type=str, default=None, help="Column holding the captions (default: text).")
    group.add_argument(
        "--cache_dir",
        type=str,
        default=None,
        help="datasets' Arrow cache (the downloaded files themselves go to the HF cache: HF_HOME / HF_HUB_CACHE).",
    )
    group.add_argument(
        "--max_train_samples",
        type=int,
        default=None,
        help="Keep this many rows, a random subset drawn with --seed (debugging, quicker runs).",
    )
    group.add_argument("--resolution", type=int, default=64, help="Images are resized (and cropped) to this size.")
    group.add_argument("--center_crop", action="store_true", help="Center crop instead of random crop.")
    group.add_argument("--random_flip", action="store_true", help="Flip images horizontally at random.")
    group.add_argument("--dataloader_num_workers", type=int, default=0, help="0: load data in the main process.")


def add_optimization_args(parser: argparse.ArgumentParser, learning_rate: float) -> None:
    group = parser.add_argument_group("optimization")
    group.add_argument("--train_batch_size", type=int, default=32, help="Batch size per device.")
    group.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="Micro-batches summed into each optimizer step (one step = this many batches per process).",
    )
    group.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_train_epochs.")
    group.add_argument("--num_train_epochs", type=int, default=10)
    group.add_argument("--learning_rate", type=float, default=learning_rate, help="Peak learning rate.")
    group.add_argument(
        "--scale_lr",
        action="store_true",
        help="Multiply --learning_rate by batch size x accumulation x processes (train_unet.py's --text_encoder_lr "
        "is taken as given, as in diffusers' DreamBooth scripts).",
    )
    group.add_argument(
        "--lr_scheduler",
        type=str,
        default="constant",
        choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
    )
    group.add_argument(
        "--lr_warmup_steps",
        type=int,
        default=0,
        help="Linear warmup from 0 (every schedule but `constant`, which diffusers gives no warmup: use "
        "constant_with_warmup).",
    )
    group.add_argument(
        "--lr_num_cycles", type=int, default=1, help="Number of hard resets of the cosine_with_restarts schedule."
    )
    group.add_argument(
        "--lr_power", type=float, default=1.0, help="Power factor of the polynomial schedule (>= 0; decays to 1e-7)."
    )
    group.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW's beta1, in [0, 1).")
    group.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW's beta2, in [0, 1).")
    group.add_argument("--adam_weight_decay", type=float, default=1e-2, help="AdamW's decoupled weight decay (>= 0).")
    group.add_argument("--adam_epsilon", type=float, default=1e-08, help="AdamW's epsilon (>= 0).")
    group.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="Clip the gradients' global norm to this (> 0; inf: no clip)."
    )
    group.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Defaults to the accelerate config. On CPU use `bf16` (fp16 is refused there: it has no fast path).",
    )
    group.add_argument("--gradient_checkpointing", action="store_true", help="Save memory at the cost of speed.")
    group.add_argument("--use_ema", action="store_true", help="Keep an EMA of the weights and save that.")
    group.add_argument(
        "--ema_decay", type=float, default=0.9999, help="Largest EMA decay, in [0, 1] (reached after warmup)."
    )
    group.add_argument(
        "--seed", type=int, default=0, help="Seed for initialisation, data order and noise, in [0, 2**32 - 1]."
    )


def add_output_args(parser: argparse.ArgumentParser, output_dir: str, tracker_project_name: str) -> None:
    group = parser.add_argument_group("output, logging, checkpoints, Hub")
    group.add_argument("--output_dir", type=str, default=output_dir)
    group.add_argument("--logging_dir", type=str, default="logs", help="Under --output_dir (unless absolute).")
    group.add_argument(
        "--report_to",
        type=str,
        default="tensorboard",
        help='"tensorboard", "wandb", "comet_ml", "mlflow" or any tracker accelerate knows, several separated by '
        'commas; "all" (every one installed) or "none".',
    )
    group.add_argument(
        "--tracker_project_name",
        type=str,
        default=tracker_project_name,
        help="The project name given to the trackers (wandb's project, tensorboard's subfolder of --logging_dir).",
    )
    group.add_argument("--checkpointing_steps", type=int, default=500, help="Save the training state every X steps.")
    group.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many.")
    group.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help='A checkpoint folder (or a checkpoint-<step> name in --output_dir), or "latest" for the last one in '
        "--output_dir (starts fresh when none). Without it, an --output_dir holding checkpoints is refused.",
    )
    group.add_argument("--validation_steps", type=int, default=500, help="Write a validation grid every X steps.")
    group.add_argument("--push_to_hub", action="store_true", help="Upload the final folder to the Hub.")
    group.add_argument("--hub_model_id", type=str, default=None, help="Repo id (default: the output folder name).")
    group.add_argument("--hub_token", type=str, default=None, help="Token for --push_to_hub (default: hf auth).")


def check_common_args(args: argparse.Namespace) -> None:
    """Clear errors for flag combinations that cannot work, before anything is loaded.

    Raises:
        ValueError: naming the flag (and the values it allows) for each bad value.
    """
    if args.dataset_name is None and args.train_data_dir is None:
        raise ValueError("Need either --dataset_name (e.g. builtin:cartoon-faces) or --train_data_dir.")
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError(
            f"Give either --dataset_name or --train_data_dir, not both (got --dataset_name {args.dataset_name!r} "
            f"and --train_data_dir {args.train_data_dir!r})."
        )
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise ValueError(
            f"--max_train_steps must be >= 1 (or left out: --num_train_epochs), got {args.max_train_steps}."
        )
    if args.num_train_epochs < 1:
        raise ValueError(f"--num_train_epochs must be >= 1, got {args.num_train_epochs}.")
    if args.resolution < 1:
        raise ValueError(f"--resolution must be >= 1, got {args.resolution}.")
    if args.max_train_samples is not None and args.max_train_samples < 1:
        raise ValueError(f"--max_train_samples must be >= 1 (or left out: every image), got {args.max_train_samples}.")
    if args.dataloader_num_workers < 0:
        raise ValueError(
            f"--dataloader_num_workers must be >= 0 (0: load in the main process), got {args.dataloader_num_workers}."
        )
    if not args.learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {args.learning_rate}.")
    if args.lr_warmup_steps < 0:
        raise ValueError(f"--lr_warmup_steps must be >= 0, got {args.lr_warmup_steps}.")
    if getattr(args, "lr_num_cycles", 1) < 1:
        raise ValueError(f"--lr_num_cycles must be >= 1, got {args.lr_num_cycles}.")
    if not getattr(args, "lr_power", 1.0) >= 0:  # a negative power raises the LR, then divides by 0 at the last step
        raise ValueError(f"--lr_power must be >= 0, got {args.lr_power}.")
    # torch checks these only when the optimizer is built, after the data, without naming the flags
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {getattr(args, name)}.")
    for name in ("adam_weight_decay", "adam_epsilon"):
        if not getattr(args, name) >= 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}.")
    if not args.max_grad_norm > 0:  # clip_grad_norm_ scales by max_norm / norm: 0 zeroes, < 0 flips every gradient
        raise ValueError(f"--max_grad_norm must be > 0 (inf: no clipping), got {args.max_grad_norm}.")
    if not 0 <= args.ema_decay <= 1:  # EMAModel clamps a negative decay to 0: the "EMA" would be the raw weights
        raise ValueError(f"--ema_decay must be in [0, 1], got {args.ema_decay}.")
    if not 0 <= args.seed < 2**32:  # numpy's limit (accelerate's set_seed seeds numpy too)
        raise ValueError(f"--seed must be in [0, 2**32 - 1], got {args.seed}.")
    if getattr(args, "snr_gamma", None) is not None and not args.snr_gamma > 0:
        # min(SNR, 0) = 0 would weight every timestep's loss by 0: nothing would train
        raise ValueError(f"--snr_gamma must be > 0 (5.0 recommended) or left out, got {args.snr_gamma}.")
    check_mixed_precision(args.mixed_precision)
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be >= 1, got {args.checkpoints_total_limit}.")
    if "wandb" in (report_to_trackers(args.report_to) or []) and args.hub_token is not None:
        raise ValueError("--report_to=wandb with --hub_token would expose the token: use `hf auth login` instead.")
    check_trackers_installed(args.report_to)
    warn_unused_schedule_flags(args)


def warn_unused_schedule_flags(args: argparse.Namespace) -> None:
    """A warning for LR schedule flags that diffusers' `get_scheduler` ignores with the chosen `--lr_scheduler`
    (as diffusers' scripts, the run goes on): `--lr_warmup_steps` with `constant`, `--lr_num_cycles` with anything
    but `cosine_with_restarts`, `--lr_power` with anything but `polynomial`. train_unet.py's
    `--text_encoder_freeze_steps` ramps the text encoder over `--lr_warmup_steps` (when no
    `--text_encoder_warmup_steps` is given), whatever the schedule: that use is not warned about."""
    unused = []
    ramps_text_encoder = getattr(args, "text_encoder_freeze_steps", 0) and args.text_encoder_warmup_steps is None
    if args.lr_scheduler == "constant" and args.lr_warmup_steps > 0 and not ramps_text_encoder:
        unused.append(f"--lr_warmup_steps {args.lr_warmup_steps} (use --lr_scheduler constant_with_warmup)")
    if args.lr_scheduler != "cosine_with_restarts" and getattr(args, "lr_num_cycles", 1) != 1:
        unused.append(f"--lr_num_cycles {args.lr_num_cycles} (only cosine_with_restarts has cycles)")
    if args.lr_scheduler != "polynomial" and getattr(args, "lr_power", 1.0) != 1.0:
        unused.append(f"--lr_power {args.lr_power} (only polynomial has a power)")
    if unused:
        logger.warning(f"--lr_scheduler {args.lr_scheduler} ignores " + "; ".join(unused) + ".")


# the packages each tracker of accelerate's needs (any one of them); a tracker not listed needs its own name
_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX")}


def check_trackers_installed(report_to: Optional[str]) -> None:
    """As diffusers' scripts do: an `ImportError` for a `--report_to` tracker whose package is not installed,
    before any work (accelerate would only warn and train without logging). `all` and `none` are left out (`all`
    logs to whatever is installed); names accelerate does not know are left to accelerate."""
    from accelerate.utils import LoggerType

    known = {tracker.value for tracker in LoggerType} - {"all"}
    for name in (report_to or "").split(","):
        name = name.strip()
        if name not in known:
            continue
        packages = _TRACKER_PACKAGES.get(name, (name,))
        if not any(importlib.util.find_spec(package) is not None for package in packages):
            raise ImportError(
                f"Make sure to install {' or '.join(packages)} if you want to use it for logging during training."
            )


def final_outputs_written(args: argparse.Namespace, resume_path: Optional[str], global_step: int) -> bool:
    """For a run resumed at or past `--max_train_steps` (no step left to take): `True` when its final outputs are
    already in `--output_dir` (the model card, written last), so the caller stops and overwrites nothing (with
    `--push_to_hub` it uploads the folder as it is); `False` when the run was interrupted between its last checkpoint
    and its final save, which the caller then writes."""
    if os.path.isfile(os.path.join(args.output_dir, "README.md")):
        upload = " and uploaded (--push_to_hub)" if getattr(args, "push_to_hub", False) else ""
        logger.warning(
            f"{resume_path} is at step {global_step}, >= --max_train_steps {args.max_train_steps}, and "
            f"{args.output_dir} holds the finished run: left as it is{upload} (raise --max_train_steps to train on)."
        )
        return True
    logger.warning(f"{resume_path} is at step {global_step}: no step left; writing the final outputs from it.")
    return False


def end_if_finished(accelerator, args, resume_path: Optional[str], global_step: int, repo_id: Optional[str]) -> bool:
    """For a run resumed at `global_step >= --max_train_steps`: `True` when its final outputs are written
    (`final_outputs_written`), after uploading them to `repo_id` (--push_to_hub: a run whose upload failed, or
    that was trained without the flag) and ending the accelerator's trackers; the caller then returns. `False` when
    the final save is still to be written (the caller writes it without a step)."""
    if not final_outputs_written(args, resume_path, global_step):
        return False
    if repo_id is not None:
        push_folder_to_hub(args.output_dir, repo_id, args.hub_token, args.logging_dir)
    accelerator.end_training()
    return True


def remove_finished_card(accelerator, output_dir: str) -> None:
    """For a run that goes on to train or to write its final outputs (`end_if_finished` returned `False` or was not
    called): deletes the `README.md` of an earlier run in `output_dir` first. The card marks a finished run
    (`final_outputs_written`); left in place, a run killed after its next checkpoint or during its final save would
    be taken for finished when started again, its half-written model folder and the old card kept as they are."""
    card = os.path.join(output_dir, "README.md")
    if accelerator.is_main_process and os.path.isfile(card):
        os.remove(card)


def check_num_validation_images(args: argparse.Namespace, minimum: int) -> None:
    """`--num_validation_images` (held-out images for grids and metrics) must be at least `minimum`."""
    if args.num_validation_images < minimum:
        raise ValueError(f"--num_validation_images must be >= {minimum}, got {args.num_validation_images}.")


def _cpu_only() -> bool:
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    accelerator_api = getattr(torch, "accelerator", None)
    if accelerator_api is not None and hasattr(accelerator_api, "is_available"):
        return not accelerator_api.is_available()
    return not torch.cuda.is_available()


def check_mixed_precision(mixed_precision: Optional[str]) -> None:
    """fp16 on a CPU-only run is refused: CPUs have no fast fp16 path (bf16 is the one to use there)."""
    mixed_precision = mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION")
    if mixed_precision == "fp16" and _cpu_only():
        raise ValueError(
            "--mixed_precision fp16 on a CPU-only run: fp16 has no fast path on CPU. Use --mixed_precision bf16 "
            "(or no)."
        )


def check_enough_training_images(num_images: int, train_batch_size: int, num_processes: int) -> None:
    """Every process needs at least one full batch per epoch (the data loaders drop the last partial batch)."""
    if num_images < train_batch_size * num_processes:
        raise ValueError(
            f"{num_images} training image(s) is fewer than one batch: --train_batch_size {train_batch_size} x "
            f"{num_processes} process(es) = {train_batch_size * num_processes} images per step (the last partial "
            "batch is dropped). Lower --train_batch_size or add images."
        )


def redacted_command(script: str, argv: list[str]) -> str:
    """The command line of a run, for model cards and logs, with the value of `--hub_token` (in any spelling
    argparse accepts: `--hub_token X`, `--hub_token=X`, an unambiguous prefix such as `--hub_tok X`) as `***`."""
    words, redact_next = [], False
    for item in map(str, argv):
        name, eq, _ = item.partition("=")
        is_token_flag = item.startswith("--") and len(name) > len("--hub_") and "--hub_token".startswith(name)
        if redact_next:
            words.append("***")
            redact_next = False
        elif is_token_flag and eq:
            words.append(f"{name}=***")
        elif is_token_flag:
            words.append(item)
            redact_next = True
        else:
            words.append(shlex.quote(item))
    return f"accelerate launch {script} " + " ".join(words)


def tracker_config(args: argparse.Namespace) -> dict:
    """The flags sent to `accelerator.init_trackers` (tensorboard's hparams.yml, wandb's config): scalars only,
    never `--hub_token`."""
    return {k: v for k, v in vars(args).items() if not isinstance(v, list) and k != "hub_token"}


# ---------------------------------------------------------------------------------------------------------------
# Accelerator, optimizer and schedule
# ---------------------------------------------------------------------------------------------------------------
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
    if not accelerator.is_local_main_process:  # as diffusers' scripts: one copy of each warning, not one per process
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        logging.getLogger(__name__.partition(".")[0]).setLevel(logging.ERROR)  # sdscratch's own modules
    message = idle_cores_message(accelerator)
    if message is not None and accelerator.is_local_main_process:
        logger.warning(message)
    return accelerator


def report_to_trackers(report_to: Optional[str]) -> Optional[list[str]]:
    """`--report_to` as accelerate's `log_with`: a comma-separated list of trackers (accelerate takes a list, not a
    comma-separated string), `None` for `none`."""
    names = [name.strip() for name in (report_to or "").split(",") if name.strip() not in ("", "none")]
    return names or None


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


def checkpoint_num_processes(checkpoint: str) -> int:
    """How many processes wrote `checkpoint`: accelerate saves one `random_states_<i>.pkl` per process."""
    return sum(1 for name in os.listdir(checkpoint) if re.fullmatch(r"random_states_\d+\.pkl", name)) or 1


def rebase_lr_scheduler(accelerator: Accelerator, lr_scheduler, step: int, checkpoint: str) -> None:
    """After `accelerator.load_state(checkpoint)`: the LR schedule at optimizer step `step` as this run counts it
    (accelerate's prepared scheduler steps once per process per optimizer step, see `make_optimizer_and_scheduler`).
    A checkpoint written by another number of processes saved another count: resumed as it is, a 2-process
    checkpoint would put a 1-process run's schedule twice as far (a linear decay at 0 halfway through the remaining
    steps). A checkpoint of as many processes as this run is left exactly as saved."""
    written_by, num_processes = checkpoint_num_processes(checkpoint), accelerator.num_processes
    if written_by == num_processes:
        return
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's AcceleratedScheduler wraps it
    if accelerator.is_main_process:
        logger.warning(
            f"{checkpoint} was written by {written_by} process(es), this run has {num_processes}: the learning-rate "
            f"schedule goes on from step {step}; the data order from here differs from the writing run's."
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


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: atomic save, prune, resume, and hooks that write `save_pretrained` folders.
# ---------------------------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in `output_dir` as `(step, path)`, oldest first (temporary folders are ignored)."""
    if not os.path.isdir(output_dir):
        return []
    found = [(CHECKPOINT_PATTERN.match(name), name) for name in os.listdir(output_dir)]
    steps = sorted((int(m.group(1)), os.path.join(output_dir, name)) for m, name in found if m)
    return [(step, path) for step, path in steps if os.path.isdir(path)]


def resolve_resume_checkpoint(output_dir: str, resume_from_checkpoint: Optional[str]) -> Optional[str]:
    """The checkpoint folder to resume from: `None` to start fresh.

    `"latest"` with no checkpoint starts fresh (with a message); a path that does not exist is an error. A new run
    (no `--resume_from_checkpoint`) in an `output_dir` that holds checkpoints is an error too: its checkpoints
    would be pruned and numbered among the earlier run's (diffusers mixes them), so that a later `latest` could
    resume the earlier run instead of this one.
    """
    if resume_from_checkpoint is None:
        earlier = [os.path.basename(path) for _, path in list_checkpoints(output_dir)]
        if earlier:
            shown = ", ".join((["..."] if len(earlier) > 3 else []) + earlier[-3:])
            raise ValueError(
                f"--output_dir {output_dir} holds checkpoints of an earlier run ({shown}). Continue it with "
                "--resume_from_checkpoint latest (a finished run then stops without a step), or start this run in "
                "another --output_dir (or delete the checkpoint-* folders)."
            )
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {output_dir}; starting a new run.")
            return None
        return checkpoints[-1][1]
    path = resume_from_checkpoint
    if not os.path.isdir(path) and os.path.isdir(os.path.join(output_dir, path)):
        path = os.path.join(output_dir, path)  # diffusers accepts a bare `checkpoint-500`
    if not os.path.isdir(path) or not CHECKPOINT_PATTERN.match(os.path.basename(os.path.normpath(path))):
        available = [os.path.basename(p) for _, p in list_checkpoints(output_dir)]
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint-<step> folder; "
            f"checkpoints in {output_dir}: {available or 'none'} (or pass `latest`)."
        )
    return path


def check_resume_ema(resume_path: Optional[str], names: list[str], use_ema: bool) -> None:
    """The checkpoint to resume from must hold a folder for each trained model (`<name>/`; else it comes from
    another kind of run, e.g. a VAE's checkpoint given to train_unet.py) and, with `--use_ema`, its EMA
    (`<name>_ema/`, written by `register_checkpoint_hooks`): checked right after the checkpoint is resolved, before
    data and models. (Resuming an EMA checkpoint without `--use_ema` drops the EMA, as diffusers' scripts do.)"""
    if resume_path is None:
        return
    for name in names:
        if not os.path.isdir(os.path.join(resume_path, name)):
            raise ValueError(f"{resume_path} holds no {name}/ folder: it comes from another kind of run. {_FIX}")
        if use_ema and not os.path.isfile(os.path.join(resume_path, f"{name}_ema", "ema_state.json")):
            raise ValueError(
                f"--use_ema: the checkpoint {resume_path} holds no {name}_ema/ (it was written by a run without "
                "--use_ema). Resume it without --use_ema, or start a new run in another --output_dir."
            )


def checkpoint_step(path: str) -> int:
    return int(CHECKPOINT_PATTERN.match(os.path.basename(os.path.normpath(path))).group(1))


def _architecture(config) -> dict:
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in config.items() if k not in _IGNORED_CONFIG_KEYS and not k.startswith("_")}


def check_checkpoints_compatible(
    output_dir: str, models: dict[str, torch.nn.Module], resume_path: Optional[str] = None
) -> None:
    """Refuses to start when `output_dir` (or the checkpoint to resume from) holds checkpoints of a different
    model config (a previous, incompatible run), so that `latest` can never load mismatched weights."""
    paths = [path for _, path in list_checkpoints(output_dir)] + ([resume_path] if resume_path else [])
    for path in paths:
        for name, model in models.items():
            config_file = os.path.join(path, name, "config.json")
            if not os.path.isfile(config_file):
                raise ValueError(f"{path} holds no {name}/ folder: it comes from another kind of run. {_FIX}")
            with open(config_file) as f:
                saved = _architecture(json.load(f))
            current = _architecture(model.config)
            # keys on both sides only: transformers saves only non-default values (of nested configs too)
            differ = sorted(k for k in set(saved) & set(current) if _differs(saved[k], current[k]))
            if differ:
                detail = ", ".join(f"{k}: {saved.get(k)!r} there vs {current.get(k)!r} now" for k in differ[:5])
                raise ValueError(
                    f"{path} was written by an incompatible run ({name} config differs: {detail}). {_FIX}"
                )


def _json(value):
    return json.loads(json.dumps(value))  # tuples -> lists, as in config.json


def _differs(saved, current) -> bool:
    """Whether two config values differ; nested configs (a CLIP's `text_config`) compare on their shared keys."""
    if isinstance(saved, dict) and isinstance(current, dict):
        current = _architecture(current)
        return any(_differs(saved[k], current[k]) for k in set(_architecture(saved)) & set(current))
    return _json(saved) != _json(current)


_FIX = "Use another --output_dir, or delete its checkpoint-* folders."


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


class TrainingClock:
    """Wall time of a training run across interruptions: every checkpoint stores the total so far
    (`training_time.json`) and a resumed run continues from it, so that a model card states what the whole run
    cost, not its last leg. Time spent on steps that were redone after an interruption is counted too."""

    FILE = "training_time.json"

    def __init__(self, resume_path: Optional[str] = None):
        self.start, self.previous_s, self.runs = time.time(), 0.0, 1
        if resume_path is not None and os.path.isfile(os.path.join(resume_path, self.FILE)):
            with open(os.path.join(resume_path, self.FILE)) as f:
                saved = json.load(f)
            self.previous_s, self.runs = float(saved["wall_time_s"]), int(saved["runs"]) + 1

    def total_s(self) -> float:
        return self.previous_s + time.time() - self.start

    def save(self, folder: str) -> None:
        with open(os.path.join(folder, self.FILE), "w") as f:
            json.dump({"wall_time_s": self.total_s(), "runs": self.runs}, f)

    def describe(self) -> str:
        runs = "" if self.runs == 1 else f" over {self.runs} runs (resumed from checkpoints)"
        return f"{self.total_s() / 60:.1f} min{runs}"


def _remove_folder(path: str) -> None:
    """Deletes a checkpoint folder by first renaming it to `.tmp-<name>-removed` (atomic), so that a run killed
    while deleting never leaves a half `checkpoint-<step>` behind for `latest` or `check_checkpoints_compatible`."""
    trash = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}-removed")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash)


def is_checkpoint_step(global_step: int, args: argparse.Namespace) -> bool:
    """Whether the training state is saved after optimizer step `global_step`: every `--checkpointing_steps`, and
    at the last step (diffusers' scripts save none there), so that a finished run started again with
    `--resume_from_checkpoint latest` resumes at `--max_train_steps` and takes no step instead of training its last
    steps again (the recipes' VAE stages would redo 100 and 200 steps)."""
    return global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    step: int,
    total_limit: Optional[int],
    clock: Optional[TrainingClock] = None,
    tokenizer=None,
) -> str:
    """`accelerator.save_state` into `.tmp-checkpoint-<step>`, then rename it to `checkpoint-<step>`.

    Every process writes its own RNG state into the folder, so all of them call this; only the main process
    prunes and renames, after everyone is done. `clock`'s total wall time so far is stored with the state, and a
    `tokenizer` trained by the run in `tokenizer/` (a resumed run must use that one: `build_or_resume_tokenizer`).
    Old checkpoints beyond `total_limit` are deleted only once the new one is complete (diffusers deletes them
    first, which loses every checkpoint when a run with `--checkpoints_total_limit 1` is killed while saving).
    """
    final_path = os.path.join(output_dir, f"checkpoint-{step}")
    tmp_path = os.path.join(output_dir, f".tmp-checkpoint-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp_path, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp_path)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if clock is not None:
            clock.save(tmp_path)
        if tokenizer is not None:
            tokenizer.save_pretrained(os.path.join(tmp_path, "tokenizer"))
        if os.path.isdir(final_path):
            _remove_folder(final_path)
        os.replace(tmp_path, final_path)
        logger.info(f"Saved state to {final_path}")
        if total_limit is not None:
            others = [path for _, path in list_checkpoints(output_dir) if path != final_path]
            for old in others[: max(0, len(others) - total_limit + 1)]:
                logger.info(f"Removing old checkpoint {old}")
                _remove_folder(old)
    accelerator.wait_for_everyone()
    return final_path


def build_or_resume_tokenizer(captions: list[str], resume_path: Optional[str], **tokenizer_config):
    """`build_tokenizer(captions, **tokenizer_config)` for a new run; for a resumed one, the checkpoint's own
    tokenizer (`save_checkpoint(..., tokenizer=...)`), so that the text encoder keeps the ids it learned.

    Raises `ValueError` for a checkpoint without `tokenizer/` (written before 2026-11-23): its run built the
    tokenizer with the `tokenizers` library's trainer, whose ids today's `build_tokenizer` does not reproduce, and a
    text encoder resumed on other ids would train on scrambled words."""
    from transformers import CLIPTokenizer

    from ..text import build_tokenizer

    if resume_path is not None:
        folder = os.path.join(resume_path, "tokenizer")
        if not os.path.isdir(folder):
            raise ValueError(
                f"{resume_path} holds no tokenizer/ (a checkpoint of sdscratch before 2026-11-23), and the tokenizer "
                "cannot be rebuilt with the ids that run's text encoder learned. Copy the run's tokenizer into "
                f"{folder} (e.g. the tokenizer/ of a pipeline folder the same run wrote), or start a new run."
            )
        return CLIPTokenizer.from_pretrained(folder)
    return build_tokenizer(captions, **tokenizer_config)


def _save_ema(ema: EMAModel, model: torch.nn.Module, path: str) -> None:
    # a copy of the model with the EMA weights, saved as a regular `save_pretrained` folder (+ EMA counters)
    ema_model = copy.deepcopy(model)
    ema.copy_to(ema_model.parameters())
    ema_model.save_pretrained(path)
    counters = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    with open(os.path.join(path, "ema_state.json"), "w") as f:
        json.dump(counters, f, indent=2)


def _load_ema(ema: EMAModel, model: torch.nn.Module, path: str) -> None:
    # read on the CPU, then put where the (prepared) model trains, as `make_ema` put the EMA of a new run
    with open(os.path.join(path, "ema_state.json")) as f:
        counters = json.load(f)
    loaded = type(model).from_pretrained(path)
    ema.load_state_dict({**counters, "shadow_params": [p.detach().clone() for p in loaded.parameters()]})
    ema.to(device=next(model.parameters()).device)


def register_checkpoint_hooks(
    accelerator: Accelerator, models: dict[str, torch.nn.Module], emas: Optional[dict[str, EMAModel]] = None
) -> None:
    """Makes `accelerator.save_state` write each trained model as `<name>/` with `save_pretrained` (and each EMA
    as `<name>_ema/`) instead of opaque pickles, and `load_state` read them back.

    Args:
        models: The trained models by folder name (the modules themselves, not a training wrapper around them).
        emas: `EMAModel`s by the name of the model they average.
    """
    emas = emas or {}

    def save_model_hook(prepared_models, weights, output_dir):
        if accelerator.is_main_process:
            for name, model in models.items():
                model.save_pretrained(os.path.join(output_dir, name))
                if name in emas:
                    _save_ema(emas[name], model, os.path.join(output_dir, f"{name}_ema"))
        weights.clear()  # saved above: accelerate must not pickle them again

    def load_model_hook(prepared_models, input_dir):
        for name, model in models.items():
            loaded = type(model).from_pretrained(os.path.join(input_dir, name))
            model.load_state_dict(loaded.state_dict())
            if name in emas:
                _load_ema(emas[name], model, os.path.join(input_dir, f"{name}_ema"))
        prepared_models.clear()  # loaded above

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def state_dict_digest(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (tests compare ranks and runs with it)."""
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Validation grids, hardware, model card, Hub
# ---------------------------------------------------------------------------------------------------------------
def save_validation_grid(
    accelerator: Accelerator, images: list[Image.Image], rows: int, output_dir: str, step: int, tag: str
) -> str:
    """Saves `images` as one PNG grid `<output_dir>/validation/<tag>-<step>.png` and sends it to the trackers."""
    grid = make_image_grid(images, rows=rows, cols=len(images) // rows)
    path = os.path.join(output_dir, "validation", f"{tag}-{step:06d}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # under a temporary name first: a grid cut off right after its checkpoint would never be written again (the
    # leading dot sorts it before every grid, so export_pretrained's "last grid" is never a leftover of it)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    try:
        grid.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images(tag, np.asarray(grid)[None], step, dataformats="NHWC")
    return path


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`(B, C, H, W)` in [-1, 1] -> list of PIL images."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    images = images.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    return [Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image) for image in images]


def describe_hardware(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        device = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                device = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        device = f"CPU ({device}, {torch.get_num_threads()} threads per process)"
    return f"{accelerator.num_processes} x {device}, mixed precision {accelerator.mixed_precision}"


def write_model_card(
    folder: str,
    title: str,
    description: str,
    dataset_name: Optional[str],
    tags: list[str],
    pipeline_tag: Optional[str] = None,
    license: str = "apache-2.0",
    library_name: str = "diffusers",
) -> ModelCard:
    """Writes `<folder>/README.md` with diffusers' metadata conventions (`library_name: diffusers`, or the library
    that loads the folder, e.g. `transformers` for a `CLIPModel`; tags, license, the Hub data sets used) and the
    given markdown body, under a temporary name renamed when complete."""
    data = ModelCardData(license=license, library_name=library_name, pipeline_tag=pipeline_tag)
    if is_hub_dataset_id(dataset_name):
        data.datasets = [dataset_name]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{description.strip()}\n")
    card = populate_model_card(card, tags=tags)
    # written last, the card marks a finished run (`final_outputs_written`): never leave a truncated one
    path = os.path.join(folder, "README.md")
    card.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    return card


def is_hub_dataset_id(dataset_name: Optional[str]) -> bool:
    """Whether `--dataset_name` names a Hub data set (`name` or `owner/name`) that a card's `datasets:` metadata
    can link to: not built-in data (`builtin:...`), not a local folder."""
    if dataset_name is None or dataset_name.startswith("builtin:") or os.path.exists(dataset_name):
        return False
    return not looks_like_local_path(dataset_name)


def create_hub_repo(args: argparse.Namespace) -> str:
    """Creates the Hub repo of `--push_to_hub` (if needed) and returns its id; called at the start of training, as
    diffusers' scripts do, so that a logged-out or offline run fails before any work."""
    return create_repo(
        repo_id=args.hub_model_id or Path(args.output_dir).name, exist_ok=True, token=args.hub_token
    ).repo_id


def push_folder_to_hub(folder: str, repo_id: str, token: Optional[str], logging_dir: str = "logs") -> str:
    """Uploads `folder` to the Hub repo `repo_id`, which `create_hub_repo` made when training started (checkpoints
    and the tracker logs in `logging_dir`, relative to `folder` as `--logging_dir` is, left out)."""
    ignore_patterns = ["checkpoint-*", ".tmp-checkpoint-*", "rank_digests/*"]
    logs = os.path.relpath(os.path.join(folder, logging_dir), folder)  # an absolute --logging_dir stays as it is
    if logs != "." and not logs.startswith(".."):
        ignore_patterns.append(Path(logs).as_posix() + "/*")
    upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message="End of training",
        ignore_patterns=ignore_patterns,
        token=token,
    )
    return repo_id


# ---------------------------------------------------------------------------------------------------------------
# Data (thin wrappers over sdscratch.data.loading, so both scripts read the flags the same way)
# ---------------------------------------------------------------------------------------------------------------
def load_train_dataset(args: argparse.Namespace, captions: bool = True):
    """The training images and captions (columns `image`, `text`) named by the data flags; `captions=False` (the
    VAE): images alone, so that a folder of images without captions loads."""
    from ..data.loading import load_image_caption_dataset

    return load_image_caption_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        image_column=args.image_column,
        caption_column=args.caption_column,
        max_samples=args.max_train_samples,
        cache_dir=args.cache_dir,
        seed=args.seed,
        captions=captions,
    )


def image_transform(args: argparse.Namespace, process_index: int = 0, channels: int = 3):
    """PIL image -> `(channels, resolution, resolution)` tensor in [-1, 1] (1 channel = grayscale).

    Flips are left to the training loop, where they draw from the global RNG that checkpoints save. Random crops
    (without --center_crop, for images larger than --resolution) never touch the global RNG: images decoded once
    (caches) draw from a generator of this process (`seed + process_index`); the training loop's images, decoded
    by the data loader, from one per image and epoch (`TrainingImages`), so that a resumed run crops as an
    uninterrupted one.
    """
    from ..data.loading import build_image_transform

    generator = torch.Generator().manual_seed(args.seed + process_index)
    return build_image_transform(
        args.resolution, args.center_crop, random_flip=False, channels=channels, generator=generator
    )


def image_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of image `index`'s random crop in `epoch`: a pure function of the three numbers."""
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence((seed, epoch, index)).generate_state(1, np.uint64)[0])
    )


class TrainingImages(torch.utils.data.Dataset):
    """Row i of a data set -> `{"index": i}`, plus `"pixel_values"`: its image through `transform` (an
    `image_transform`) when one is given (none: a cache holds the images), decoded as the data loader asks.

    Each image's random crop draws from its own generator, seeded by `(seed, epoch, i)` (the training loop calls
    `set_epoch` with the data loader's): a new crop every epoch, as diffusers' scripts draw, and the same one in any
    DataLoader worker, process or run. A generator of the transform's own, or a worker's (seeded by the loader's
    generator), restarts when a run is resumed and sees the batches the resumed run skips shifted between the
    workers: the resumed run would train on other crops than the uninterrupted one.
    """

    def __init__(self, dataset, transform=None, seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:  # one batch decoded at once, as datasets does
        indices = [int(i) for i in indices]
        if self.transform is None:
            return [{"index": i} for i in indices]
        images = self.dataset[indices]["image"]
        return [
            {"index": i, "pixel_values": self.transform(image, generator=image_generator(self.seed, self.epoch, i))}
            for i, image in zip(indices, images)
        ]


class RandomCropWatch:
    """Wraps an `image_transform` to count the images it gives a random crop: non-square after the resize to
    `--resolution` and no `--center_crop`. For caches that decode every image once (`--cache_latents`, CLIP's
    in-memory images), whose crop is then fixed for the whole run; the transform itself is called unchanged."""

    def __init__(self, transform, resolution: int, center_crop: bool):
        self.transform, self.resolution, self.center_crop = transform, resolution, center_crop
        self.random_crops = 0

    def __call__(self, image: Image.Image) -> torch.Tensor:
        from ..data.loading import resized_size

        if not self.center_crop and resized_size(*image.size, self.resolution) != (self.resolution,) * 2:
            self.random_crops += 1
        return self.transform(image)

    def warn(self, num_images: int, cache: str, fix: str) -> None:
        """Logs a warning when any image got a random crop (`cache`: what holds the decoded images; `fix`: the
        flags that give fresh crops every epoch)."""
        if self.random_crops:
            logger.warning(
                f"{self.random_crops} of {num_images} images are not square after the resize to --resolution "
                f"{self.resolution} and get a random crop (no --center_crop), but {cache}: each image's crop is "
                f"drawn once and fixed for the whole run (diffusers draws a new one every epoch). Use {fix}."
            )


def check_resolution(resolution: int, factor: int) -> None:
    """`--resolution` must be a multiple of the VAE's downsampling factor (checked before any training)."""
    if resolution % factor:
        raise ValueError(f"--resolution {resolution} must be divisible by the VAE's downsampling factor {factor}.")


def load_frozen_vae(path: str, flag: str = "--pretrained_vae_model_name_or_path"):
    """The frozen SmallVAE in `path` or `path/vae` (train_vae.py's output), and that folder; `path` may be a Hub id
    (`sdscratch.hub.snapshot_folder`: its cached snapshot offline). A clear error, naming the command-line `flag`
    that gave `path`, for anything else."""
    path = snapshot_folder(path, flag, VAE_FILES)
    folder = path if os.path.isfile(os.path.join(path, "config.json")) else os.path.join(path, "vae")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{flag} {path}: no config.json there or in its vae/ subfolder.")
    with open(os.path.join(folder, "config.json")) as f:
        class_name = json.load(f).get("_class_name")
    if class_name != "SmallVAE":
        raise ValueError(f"{flag} {path} holds a {class_name}, not a SmallVAE.")
    return SmallVAE.from_pretrained(folder).requires_grad_(False).eval(), folder


# ---------------------------------------------------------------------------------------------------------------
# Test support: each process writes a digest of its weights when SDSCRATCH_RANK_DIGEST_DIR is set.
# ---------------------------------------------------------------------------------------------------------------
def write_rank_digest(accelerator: Accelerator, models: dict[str, torch.nn.Module]) -> None:
    folder = os.environ.get("SDSCRATCH_RANK_DIGEST_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        digests = {name: state_dict_digest(model) for name, model in models.items()}
        with open(os.path.join(folder, f"rank{accelerator.process_index}.json"), "w") as f:
            json.dump(digests, f)


# ---------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------
def training_card_body(
    intro: str,
    usage: str,
    args: argparse.Namespace,
    steps: int,
    wall_time: str,
    hardware: str,
    metrics: dict,
    grid_file: Optional[str],
    num_processes: int = 1,
) -> str:
    """Markdown sections shared by the VAE and UNet cards: usage, data, the exact command, settings, metrics, grid.

    The batch size is reported as diffusers' scripts log it: the total per optimizer step (per-process batch x
    `num_processes` x gradient accumulation steps), with its factors."""
    data = f"`{args.dataset_name}`" if args.dataset_name else f"imagefolder `{args.train_data_dir}`"
    lines = [intro.strip(), "", "## Usage", "", "```python", usage.strip(), "```", "", "## Training", ""]
    lines += [f"- Data: {data}" + (f" (config `{args.dataset_config_name}`)" if args.dataset_config_name else "")]
    total_batch_size = args.train_batch_size * num_processes * args.gradient_accumulation_steps
    lines += [
        f"- Steps: {steps} at a total batch size of {total_batch_size} ({args.train_batch_size} per process x "
        f"{num_processes} process(es) x {args.gradient_accumulation_steps} gradient accumulation step(s))",
        f"- Resolution: {args.resolution}, learning rate {args.learning_rate}"
        + (f" (text encoder {args.text_encoder_lr})" if getattr(args, "text_encoder_lr", None) else "")
        + f" ({args.lr_scheduler}), EMA: {args.use_ema}",
        f"- Wall time: {wall_time} on {hardware}",
        "",
        "Command:",
        "",
        "```bash",
        args.command,
        "```",
    ]
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    if grid_file:
        lines += ["", "## Samples", "", f"![validation grid](./{grid_file})"]
    return "\n".join(lines)


def model_reference(args: argparse.Namespace, repo_id: Optional[str]) -> str:
    """What a model card's usage snippet loads: the Hub repo the run uploads to (as diffusers' cards), else the
    output folder."""
    return repo_id if repo_id is not None else args.output_dir


def write_unet_card(
    args: argparse.Namespace,
    metrics: dict,
    steps: int,
    wall_time: str,
    hardware: str,
    grid_path: Optional[str],
    prompts: list[str],
    vae_folder: Optional[str],
    num_processes: int = 1,
    repo_id: Optional[str] = None,
) -> ModelCard:
    """The model card of a pipeline folder written by `train_unet.py` (plus the VAE's held-out metrics that
    `train_vae.py` wrote next to its `vae/` folder, when found). Its usage snippet loads `repo_id` when the run
    uploads there, else `args.output_dir`."""
    pixel_space = vae_folder is None
    vae_metrics = os.path.join(vae_folder or "", "..", "reconstruction_metrics.json")
    if not pixel_space and os.path.isfile(vae_metrics):
        with open(vae_metrics) as f:
            metrics = {**metrics, **{f"vae {k}": v for k, v in json.load(f).items() if isinstance(v, (int, float))}}
    data = args.dataset_name or args.train_data_dir
    space = "pixel space" if pixel_space else "the latent space of a SmallVAE"
    if args.pretrained_text_encoder is None:
        text = "a CLIP text encoder trained from scratch"
    elif getattr(args, "train_text_encoder", False):
        text = f"a text encoder fine-tuned from `{args.pretrained_text_encoder}`"
    else:
        text = f"the frozen text encoder `{args.pretrained_text_encoder}`"
    intro = (
        f"A text-to-image `CartoonFacePipeline` (sdscratch, on diffusers) trained from scratch "
        f"on `{data}` at {args.resolution}x{args.resolution}: a `SmallUNet` denoising in {space}, conditioned on {text}; "
        f"captions dropped with probability {args.conditioning_dropout_prob} so that classifier-free guidance works."
    )
    usage = (
        "import torch\nfrom sdscratch import CartoonFacePipeline\n\n"
        f'pipe = CartoonFacePipeline.from_pretrained("{model_reference(args, repo_id)}")\n'
        f"image = pipe({prompts[0]!r}, num_inference_steps=25, guidance_scale=3.0,\n"
        "             generator=torch.Generator().manual_seed(0)).images[0]"
    )
    grid_file = os.path.relpath(grid_path, args.output_dir) if grid_path else None
    body = training_card_body(
        intro, usage, args, steps, wall_time, hardware, metrics, grid_file, num_processes=num_processes
    )
    if grid_file:
        body += "\n\nPrompts, left to right: " + "; ".join(f"`{p}`" for p in prompts)
    tags = [
        "sdscratch",
        "text-to-image",
        "diffusers-training",
        "pixel-diffusion" if pixel_space else "latent-diffusion",
    ]
    title = f"{os.path.basename(os.path.normpath(args.output_dir))}: text-to-image from scratch"
    return write_model_card(args.output_dir, title, body, args.dataset_name, tags, pipeline_tag="text-to-image")


def image_caption_lists(dataset) -> list[list[str]]:
    """Every image's captions: a data set's `all_captions` column when it has several per image
    (`load_image_caption_dataset`, the built-in faces' `captions_per_image`), else `[text]` per image."""
    from ..data import ALL_CAPTIONS

    if ALL_CAPTIONS in dataset.column_names:
        return dataset[ALL_CAPTIONS]
    return [[caption] for caption in dataset["text"]]


def caption_table(caption_lists: list[list[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Each image's captions as rows of one table of unique captions ("" last: the unconditional caption of CFG).

    Returns `(unique_captions, caption_rows, caption_counts)`: `caption_rows` `(N, K)` holds image i's
    `caption_counts[i]` rows first, padded with its first row up to K, the most captions of an image."""
    unique_captions = sorted({caption for captions in caption_lists for caption in captions} - {""}) + [""]
    row_of = {caption: i for i, caption in enumerate(unique_captions)}
    counts = torch.tensor([len(captions) for captions in caption_lists], dtype=torch.long)
    if (counts < 1).any():
        raise ValueError(f"image {int((counts < 1).nonzero()[0])} has no caption")
    width = int(counts.max()) if len(caption_lists) else 1
    rows = [
        [row_of[c] for c in captions] + [row_of[captions[0]]] * (width - len(captions)) for captions in caption_lists
    ]
    return unique_captions, torch.tensor(rows, dtype=torch.long).reshape(len(caption_lists), width), counts


def tokenize_captions(tokenizer, captions: list[str], config_flag: str = "--unet_config") -> torch.Tensor:
    """`(len(captions), model_max_length)` input ids, padded and truncated exactly as `CartoonFacePipeline` tokenizes
    prompts (diffusers' `tokenize_captions`). The pipeline warns when it truncates a prompt; so does this, once for
    all the captions: the text encoder and the UNet never see what lies beyond `model_max_length` (`config_flag`: the
    flag naming the JSON whose "tokenizer" section sets it)."""
    max_length = tokenizer.model_max_length
    tokens = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    full = [i for i, n in enumerate(tokens.attention_mask.sum(dim=1).tolist()) if n == max_length]  # fit or cut
    # one token more than fits is enough to tell (and keeps transformers' 'indexing errors' warning away)
    cut = [
        captions[i]
        for i in full
        if len(tokenizer(captions[i], truncation=True, max_length=max_length + 1).input_ids) > max_length
    ]
    if cut:
        logger.warning(
            f"{len(cut)} of {len(captions)} distinct captions are longer than the tokenizer's model_max_length="
            f"{max_length} tokens (<|startoftext|> and <|endoftext|> included) and are truncated, so the model never "
            f"sees their end, e.g. {cut[0]!r}: shorten them, or (a tokenizer trained by the script) raise "
            f'"model_max_length" in the "tokenizer" section of {config_flag}.'
        )
    return tokens.input_ids


def draw_caption_rows(caption_rows: torch.Tensor, caption_counts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The caption row of each image in `index` (B,): with one caption per image, that one (no random draw, so
    runs on single-caption data keep their random stream); else one of the image's captions, uniformly, drawn
    from torch's global RNG (checkpointed: a resumed run draws what the uninterrupted one would)."""
    if caption_rows.shape[1] == 1:
        return caption_rows[index, 0]
    return caption_rows[index, (torch.rand(index.shape[0]) * caption_counts[index]).long()]
