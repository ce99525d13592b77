"""Command line: the flags the training scripts share, named as in diffusers' example scripts, and their checks.

`add_data_args`, `add_optimization_args` and `add_output_args` add the shared flag groups; `check_common_args`
refuses, before anything is loaded, every value that cannot work, with a `ValueError` naming the flag;
`check_num_validation_images` (a script's own minimum) and `check_enough_training_images` (once the data set's size
is known) do the same for what the shared checks cannot know. `redacted_command` and `tracker_config` are the run's
command line and flags as model cards and trackers show them, never `--hub_token`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import shlex
from typing import Optional

import torch

logger = logging.getLogger(__name__)


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


def nearest_existing_path(path: str) -> str:
    """`path` made absolute, or its nearest ancestor that exists: what `os.makedirs(path)` would build on."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def check_output_folder(path: str, flag: str = "--output_dir") -> None:
    """Raises a `ValueError` naming `flag` when `path` (or a folder above it) is a file: `os.makedirs` would fail at
    the first save, after the work."""
    existing = nearest_existing_path(path)
    if not os.path.isdir(existing):
        raise ValueError(f"{flag} {path!r} cannot be a folder: {existing!r} is a file.")


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
    check_output_folder(args.output_dir)
    if args.train_data_dir is not None:  # its validation grids would be read as training images by a resumed run
        data_dir, output_dir = os.path.realpath(args.train_data_dir), os.path.realpath(args.output_dir)
        if os.path.commonpath([data_dir, output_dir]) == data_dir:
            raise ValueError(
                f"--output_dir {args.output_dir!r} lies inside --train_data_dir {args.train_data_dir!r}: the images "
                "the run writes there (validation grids) would become training images. Put it outside."
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
    if not 0 < args.learning_rate < math.inf:  # inf (or nan) turns every weight into nan at the first step
        raise ValueError(f"--learning_rate must be > 0 and finite, got {args.learning_rate}.")
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


def report_to_trackers(report_to: Optional[str]) -> Optional[list[str]]:
    """`--report_to` as accelerate's `log_with`: a comma-separated list of trackers (accelerate takes a list, not a
    comma-separated string), `None` for `none`."""
    names = [name.strip() for name in (report_to or "").split(",") if name.strip() not in ("", "none")]
    return names or None


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


def check_enough_training_images(
    num_images: int, train_batch_size: int, num_processes: int, num_held_out: int = 0
) -> None:
    """Every process needs at least one full batch per epoch (the data loaders drop the last partial batch).
    `num_held_out`: the images of the data set kept out of training (train_vae.py's --num_validation_images)."""
    if num_images < train_batch_size * num_processes:
        held_out = ""
        if num_held_out:
            held_out = (
                f" ({num_images + num_held_out} in the data set, {num_held_out} held out for validation by "
                "--num_validation_images, at most half of them)"
            )
        raise ValueError(
            f"{num_images} training image(s){held_out} is fewer than one batch: --train_batch_size "
            f"{train_batch_size} x {num_processes} process(es) = {train_batch_size * num_processes} images per step "
            "(the last partial batch is dropped). Lower --train_batch_size"
            + (" or --num_validation_images" if num_held_out else "")
            + ", or add images."
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
