"""Text to image: the helpers only `training/train_unet.py` needs, so that the script keeps its flags and its loop.

- the run's config and flags: `load_config` (the --unet_config JSON with the flag overrides; `PREDICTION_TYPES`, the
  targets the loop trains), `check_text_encoder_args` and `check_unet_resolution`, checked before any work;
- the text encoder, trained from scratch, frozen pretrained, or pretrained and fine-tuned:
  `pretrained_text_encoder_folder`, `build_text_components`, `embed_captions` (a frozen one's hidden states, once),
  `text_encoder_param_groups` and `delay_text_encoder` (its own optimizer parameter group, on request);
- resume: `check_resume_text_encoder` and `load_resume_state` refuse a checkpoint of other text-encoder flags;
- the latent cache, the data set encoded once by the frozen VAE: `encode_images`, `build_latent_cache`,
  `sample_from_cache`;
- the loss and the validation: `min_snr_weights` (min-SNR-gamma), `separation_task` and
  `text_encoder_separation_scores` (how well the text encoder tells the built-in attribute words apart).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
from typing import Optional

import torch
from accelerate import Accelerator

from ..evaluation.text_separation import TASKS as SEPARATION_TASKS
from ..evaluation.text_separation import text_encoder_separation
from ..hub import TEXT_ENCODER_FILES, snapshot_folder
from ..models.unet import SmallUNet
from ..text import build_text_encoder, load_text_components
from .accelerator import delay_param_group
from .checkpoints import build_or_resume_tokenizer
from .data import RandomCropWatch

PREDICTION_TYPES = ("epsilon", "v_prediction")


def load_config(args) -> dict:
    """The --unet_config JSON ({"unet", "text_encoder", "tokenizer", "scheduler"} sections) with flag overrides."""
    try:
        with open(args.unet_config, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as error:  # named: a bare FileNotFoundError / JSONDecodeError was not
        raise ValueError(f"--unet_config {args.unet_config}: cannot be read as JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"--unet_config {args.unet_config}: must hold a JSON object, got {type(config).__name__}.")
    unknown = set(config) - {"unet", "text_encoder", "tokenizer", "scheduler", "description"}
    if unknown:
        raise ValueError(f"--unet_config {args.unet_config}: unknown sections {sorted(unknown)}.")
    config = {key: dict(config.get(key, {})) for key in ("unet", "text_encoder", "tokenizer", "scheduler")}
    check_text_config(config, f"--unet_config {args.unet_config}")
    check_unet_config_keys(config, f"--unet_config {args.unet_config}")
    for key in ("block_out_channels", "layers_per_block"):
        if getattr(args, key) is not None:
            config["unet"][key] = getattr(args, key)
    for key in ("num_train_timesteps", "beta_schedule", "prediction_type"):
        if getattr(args, key) is not None:
            config["scheduler"][key] = getattr(args, key)
    num_train_timesteps = config["scheduler"].get("num_train_timesteps", 1000)
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        source = f"--unet_config {args.unet_config}: scheduler num_train_timesteps"
        source = "--num_train_timesteps" if args.num_train_timesteps is not None else source
        raise ValueError(f"{source} must be an integer >= 1, got {num_train_timesteps!r}.")
    prediction_type = config["scheduler"].get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:  # the loop has a target for these two only
        raise ValueError(
            f"--unet_config {args.unet_config}: scheduler prediction_type {prediction_type!r} is not trained by "
            f"train_unet.py; use one of {list(PREDICTION_TYPES)} (or --prediction_type)."
        )
    return config


def check_text_config(config: dict, source: str) -> None:
    """Raises a `ValueError` naming `source` (e.g. "--unet_config <path>") for a key of the config's `tokenizer` or
    `text_encoder` section that `build_tokenizer` / `CLIPTextConfig` does not take: a `CLIPTextConfig` keeps any
    unknown key without a word (a typo such as "hidden_sise" trained the default 256-wide encoder), and an unknown
    tokenizer key failed with a bare TypeError only once the data was loaded. Then the values, as `build_tokenizer`
    and `default_text_encoder_config` would check them once the data is loaded."""
    import inspect

    from transformers import CLIPTextConfig

    from ..text import build_tokenizer, check_tokenizer_settings, default_text_encoder_config

    for section, function, skip in (
        ("tokenizer", build_tokenizer, {"captions"}),
        ("text_encoder", CLIPTextConfig.__init__, {"self"}),
    ):
        parameters = inspect.signature(function).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue  # takes any key: nothing to check against
        allowed = sorted(set(parameters) - skip)
        unknown = sorted(set(config.get(section, {})) - set(allowed))
        if unknown:
            raise ValueError(f"{source}: unknown {section} keys {unknown}; allowed: {allowed}.")
    from_tokenizer = sorted({"vocab_size", "max_position_embeddings"} & set(config.get("text_encoder", {})))
    if from_tokenizer:
        raise ValueError(
            f"{source}: text_encoder keys {from_tokenizer} come from the trained tokenizer (its length and "
            "model_max_length); set the tokenizer section's vocab_size / model_max_length instead."
        )
    # the values too, now: a hidden_size of 0 or an unknown hidden_act failed only after the data was decoded,
    # and train_clip.py trained a projection_dim of 0 (a constant loss) to the end
    tokenizer = config.get("tokenizer", {})
    try:
        check_tokenizer_settings(**tokenizer)
        default_text_encoder_config(
            tokenizer.get("vocab_size", 1024),
            max_position_embeddings=tokenizer.get("model_max_length", 32),
            **config.get("text_encoder", {}),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from None


def check_unet_config_keys(config: dict, source: str) -> None:
    """Raises a `ValueError` naming `source` for a key of the config's `unet` section that `SmallUNet` does not take
    (a bare TypeError once the data had been loaded and the tokenizer trained), or of its `scheduler` section that
    neither the training `DDPMScheduler` nor the pipeline's `DPMSolverMultistepScheduler` takes (diffusers ignores
    those with a log line: a "prediction_typ" trained epsilon and was written into the saved scheduler config)."""
    import inspect

    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    from ..models.unet import SmallUNet
    from ..pipelines.pipeline_utils import default_scheduler_config

    scheduler_keys = set(default_scheduler_config())
    for scheduler_class in (DDPMScheduler, DPMSolverMultistepScheduler):
        scheduler_keys |= set(inspect.signature(scheduler_class.__init__).parameters) - {"self"}
    for section, allowed in (
        ("unet", set(inspect.signature(SmallUNet.__init__).parameters) - {"self"}),
        ("scheduler", scheduler_keys),
    ):
        unknown = sorted(set(config.get(section, {})) - allowed)
        if unknown:
            raise ValueError(f"{source}: unknown {section} keys {unknown}; allowed: {sorted(allowed)}.")


def check_text_encoder_args(args: argparse.Namespace) -> None:
    """The text-encoder flags of train_unet.py: --text_encoder_lr and --text_encoder_freeze_steps need a trained
    text encoder, and take sensible values (called from its `parse_args`)."""
    for flag, given in (
        ("--text_encoder_lr", args.text_encoder_lr is not None),
        ("--text_encoder_freeze_steps", args.text_encoder_freeze_steps != 0),
    ):
        if given and args.pretrained_text_encoder is not None and not args.train_text_encoder:
            raise ValueError(
                f"{flag} needs a text encoder to train; --pretrained_text_encoder is frozen unless "
                "--train_text_encoder is given."
            )
    if args.text_encoder_freeze_steps < 0:
        raise ValueError(f"--text_encoder_freeze_steps must be >= 0, got {args.text_encoder_freeze_steps}.")
    if args.text_encoder_warmup_steps is not None and (
        args.text_encoder_warmup_steps < 0 or not args.text_encoder_freeze_steps
    ):
        raise ValueError(
            f"--text_encoder_warmup_steps must be >= 0 and comes with --text_encoder_freeze_steps, got "
            f"{args.text_encoder_warmup_steps} with --text_encoder_freeze_steps {args.text_encoder_freeze_steps}."
        )
    if args.text_encoder_lr is not None and not 0 < args.text_encoder_lr < math.inf:
        raise ValueError(f"--text_encoder_lr must be positive and finite, got {args.text_encoder_lr}.")


def check_unet_resolution(resolution: int, vae_factor: Optional[int], block_out_channels=None) -> None:
    """`--resolution` must be a multiple of the VAE's downsampling factor `vae_factor` (None in pixel space) times
    the UNet's 2 ** (len(block_out_channels) - 1) (None: SmallUNet's default): the UNet halves the (latent) image
    len(block_out_channels) - 1 times. Checked before the data is loaded."""
    if block_out_channels is None:
        block_out_channels = inspect.signature(SmallUNet).parameters["block_out_channels"].default
    factor = vae_factor if vae_factor is not None else 1
    multiple = factor * 2 ** (len(block_out_channels) - 1)
    if resolution % multiple:
        nearest = sorted({max(multiple, resolution // multiple * multiple), (resolution // multiple + 1) * multiple})
        raise ValueError(
            f"--resolution {resolution} must be divisible by {multiple}, "
            + (f"the VAE's downsampling factor {factor} x " if vae_factor is not None else "in pixel space ")
            + f"the UNet's 2 ** (len(block_out_channels) - 1) with block_out_channels={list(block_out_channels)}: e.g. "
            + " or ".join(map(str, nearest))
            + "."
        )


def pretrained_text_encoder_folder(args: argparse.Namespace) -> Optional[str]:
    """The local folder of --pretrained_text_encoder (None without it): a Hub id becomes its snapshot in the HF cache
    (downloaded, or the cached one offline), anything else not found is a clear error."""
    if args.pretrained_text_encoder is None:
        return None
    folder = snapshot_folder(args.pretrained_text_encoder, "--pretrained_text_encoder", TEXT_ENCODER_FILES)
    for sub_tokenizer, sub_encoder in (("", ""), ("tokenizer", "text_encoder")):  # a CLIP repo, or a pipeline
        vocabulary = [os.path.join(folder, sub_tokenizer, name) for name in ("tokenizer.json", "vocab.json")]
        if any(map(os.path.isfile, vocabulary)) and os.path.isfile(os.path.join(folder, sub_encoder, "config.json")):
            return folder
    # (load_text_components said "No CLIP vocabulary found", without the flag, once the data had been decoded)
    raise ValueError(
        f"--pretrained_text_encoder {args.pretrained_text_encoder}: no CLIP tokenizer and text encoder there: "
        "expected tokenizer.json or vocab.json + merges.txt beside a text encoder's config.json (a CLIP repo), or "
        "a pipeline's tokenizer/ and text_encoder/ subfolders."
    )


def build_text_components(args, config, captions, resume_path=None, device=None, pretrained_path=None):
    """A tokenizer trained on the captions (or the resumed checkpoint's) + a fresh CLIPTextModel (default), or a
    pretrained pair (its text encoder frozen unless --train_text_encoder) from `pretrained_path`, the local folder of
    --pretrained_text_encoder (default: found here, a Hub id's snapshot in the HF cache). A frozen text encoder goes
    to `device`: accelerate places only the models it prepares, and the validation pipeline runs on the UNet's
    device."""
    if args.pretrained_text_encoder is None:
        tokenizer = build_or_resume_tokenizer(captions, resume_path, **config["tokenizer"])
        return tokenizer, build_text_encoder(tokenizer, **config["text_encoder"])
    pretrained_path = pretrained_path or snapshot_folder(
        args.pretrained_text_encoder, "--pretrained_text_encoder", TEXT_ENCODER_FILES
    )
    subfolders = os.path.isdir(os.path.join(pretrained_path, "text_encoder"))  # a pipeline folder
    tokenizer, text_encoder = load_text_components(
        pretrained_path,
        tokenizer_subfolder="tokenizer" if subfolders else None,
        text_encoder_subfolder="text_encoder" if subfolders else None,
    )
    text_encoder.requires_grad_(args.train_text_encoder)
    return tokenizer, (text_encoder if args.train_text_encoder or device is None else text_encoder.to(device))


@torch.no_grad()
def embed_captions(text_encoder, caption_input_ids: torch.Tensor, device) -> torch.Tensor:
    """The hidden states `(U, L, D)` of a frozen text encoder for the caption ids `(U, L)`, computed once on
    `device` in chunks of 256 and kept on the CPU."""
    return torch.cat([text_encoder(ids.to(device))[0].cpu() for ids in caption_input_ids.split(256)])


def text_encoder_param_groups(args: argparse.Namespace, unet, text_encoder, params: list):
    """The optimizer's parameters: `params` as one group, unless --text_encoder_lr or --text_encoder_freeze_steps
    give the trained text encoder its own group (the second, after the UNet's)."""
    groups = params  # one parameter group, unless the text encoder gets its own learning rate or delay
    if args.text_encoder_lr is not None or args.text_encoder_freeze_steps:
        text_group = {"params": list(text_encoder.parameters())}
        if args.text_encoder_lr is not None:
            text_group["lr"] = args.text_encoder_lr
        groups = [{"params": list(unet.parameters())}, text_group]
    return groups


def delay_text_encoder(args: argparse.Namespace, lr_scheduler, num_processes: int) -> None:
    """--text_encoder_freeze_steps: hold the text encoder's parameter group (the second of
    `text_encoder_param_groups`) at a learning rate of 0, then ramp it up over --text_encoder_warmup_steps (default:
    --lr_warmup_steps); `delay_param_group`. Nothing without the flag."""
    if args.text_encoder_freeze_steps:
        delay_param_group(
            lr_scheduler,
            1,
            args.text_encoder_freeze_steps,
            args.lr_warmup_steps if args.text_encoder_warmup_steps is None else args.text_encoder_warmup_steps,
            num_processes,
        )


def check_resume_text_encoder(args, resume_path) -> None:
    """A checkpoint resumes only with its run's choice of text encoder, told by the folders it holds: trained from
    scratch (`text_encoder/` + `tokenizer/`), --pretrained_text_encoder with --train_text_encoder (`text_encoder/`
    alone) or frozen (neither). Checked before any work: another choice would fail in the optimizer's state after
    the data and the latents (torch's bare "parameter group that doesn't match the size"), or train the fine-tuned
    encoder on another tokenizer's ids. Checkpoints of another kind of run (no `unet/`) are left to
    `check_resume_ema`, and a from-scratch run on a checkpoint without `tokenizer/` to `build_or_resume_tokenizer`."""
    if resume_path is None or not os.path.isdir(os.path.join(resume_path, "unet")):
        return
    has_encoder = os.path.isdir(os.path.join(resume_path, "text_encoder"))
    has_tokenizer = os.path.isdir(os.path.join(resume_path, "tokenizer"))
    if not has_encoder:
        then = "frozen (--pretrained_text_encoder without --train_text_encoder)"
    elif has_tokenizer:
        then = "trained from scratch (no --pretrained_text_encoder)"
    else:
        then = "fine-tuned (--pretrained_text_encoder with --train_text_encoder)"
    if args.pretrained_text_encoder is None:
        now, same = "trained from scratch (no --pretrained_text_encoder)", has_encoder
    elif args.train_text_encoder:
        now, same = (
            "fine-tuned (--pretrained_text_encoder with --train_text_encoder)",
            has_encoder and not has_tokenizer,
        )
    else:
        now, same = "frozen (--pretrained_text_encoder without --train_text_encoder)", not has_encoder
    if not same:
        raise ValueError(
            f"{resume_path} was written by a run whose text encoder was {then}; this run's is {now}. Resume with "
            "the text-encoder flags of the run that wrote the checkpoint, or start a new run in another --output_dir."
        )


def load_resume_state(accelerator: Accelerator, resume_path: str, optimizer: torch.optim.Optimizer) -> None:
    """`accelerator.load_state(resume_path)`, with accelerate's "different number of parameter groups" error told as
    the flags that make it: --text_encoder_lr / --text_encoder_freeze_steps give the text encoder its own group."""
    try:
        accelerator.load_state(resume_path)
    except ValueError as error:
        if "different number of parameter groups" not in str(error):
            raise
        own_group = len(optimizer.param_groups) == 2  # --text_encoder_lr / --text_encoder_freeze_steps
        raise ValueError(
            f"{resume_path} was written {'without' if own_group else 'with'} --text_encoder_lr / "
            f"--text_encoder_freeze_steps (an optimizer with {1 if own_group else 2} parameter group(s)), this "
            f"run {'gives' if own_group else 'gives neither of'} them ({len(optimizer.param_groups)} group(s)): "
            "resume with the same choice as the run that wrote the checkpoint, or start a new run in another "
            "--output_dir."
        ) from error


@torch.no_grad()
def encode_images(vae, dataset, transform, flip: bool, batch_size: int = 64):
    """Posterior mean and std `(N, C, h, w)` of every image (pixels and no std in pixel space). Run once: the VAE
    is frozen, so per-step sampling `mean + std * noise` costs nothing."""
    means, stds = [], []
    for start in range(0, len(dataset), batch_size):
        images = dataset[start : start + batch_size]["image"]
        pixels = torch.stack([transform(image) for image in images])  # (B, C, H, W)
        pixels = pixels.flip(-1) if flip else pixels
        if vae is None:
            means.append(pixels)
        else:
            posterior = vae.encode(pixels.to(vae.device)).latent_dist
            means.append(posterior.mean.cpu())
            stds.append(posterior.std.cpu())
    return torch.cat(means), (torch.cat(stds) if stds else None)


def build_latent_cache(vae, dataset, transform, resolution: int, center_crop: bool, random_flip: bool) -> dict:
    """The latent cache of --cache_latents: `{"plain": (mean, std)}` of `encode_images` for every image, and
    `"flipped"` for the mirrored images with `random_flip` (`sample_from_cache` draws from it). Warns when random
    crops (no `center_crop`) are drawn once here and kept for the whole run."""
    crop_watch = RandomCropWatch(transform, resolution, center_crop)
    cache = {"plain": encode_images(vae, dataset, crop_watch, flip=False)}
    if random_flip:
        cache["flipped"] = encode_images(vae, dataset, transform, flip=True)
    crop_watch.warn(
        len(dataset),
        "--cache_latents (the default) encodes every image once"
        + (" (with --random_flip, the flipped copy is another random window, not the mirror)" if random_flip else ""),
        "--center_crop, or --no-cache_latents for a fresh random crop of each image every epoch",
    )
    return cache


def sample_from_cache(cache, index, flip):
    """x_0 ~ q(z|x) for rows `index` `(B,)` of the cache, from the flipped images where `flip` `(B,)` is set."""
    mean, std = cache["plain"]
    mean, std = mean[index], (None if std is None else std[index])
    if "flipped" in cache:
        flipped_mean, flipped_std = cache["flipped"]
        mean = torch.where(flip[:, None, None, None], flipped_mean[index], mean)
        std = None if std is None else torch.where(flip[:, None, None, None], flipped_std[index], std)
    return mean if std is None else mean + std * torch.randn_like(std)


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, arXiv:2303.09556, section 3.4 / 4.2) `(B,)` of the per-sample
    MSE, for the SNR `(B,)` of each timestep: min(SNR, gamma) / SNR on the noise (epsilon), min(SNR, gamma) /
    (SNR + 1) on v, as diffusers' train_text_to_image.py; where SNR = 0 (zero terminal SNR, `rescale_betas_zero_snr`)
    the epsilon weight is its limit 1, not diffusers' 0 / 0 = NaN (which makes the whole batch's loss NaN)."""
    weights = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return torch.where(snr == 0, 1.0, weights / snr)
    return weights / (snr + 1)


def separation_task(dataset_name: Optional[str]) -> Optional[str]:
    """The task of `sdscratch.evaluation.text_encoder_separation` for a built-in data set (`builtin:cartoon-faces`,
    `builtin:digits`, with or without options), None for other data."""
    return next((t for t in SEPARATION_TASKS if (dataset_name or "").startswith(f"builtin:{t}")), None)


def text_encoder_separation_scores(tokenizer, text_encoder, task: str) -> dict:
    """How well the text encoder tells each attribute's words apart on the built-in data (docs/evaluation.md, "Text
    encoder separation"), `{attribute: separation}`: a word it maps like another one, the UNet cannot follow."""
    result = text_encoder_separation(tokenizer, text_encoder, task=task, num_faces=8, random_init_reference=False)
    return result["separation"]
