"""What a run shows and publishes: validation grids, the hardware it ran on, model cards and the Hub upload.

Model cards follow diffusers' conventions (`diffusers.utils.hub_utils.populate_model_card`): `write_model_card`
writes any card, `training_card_body` the sections every training script's card shares, `write_unet_card` the
card of `train_unet.py`'s pipeline folder. The card is written last and marks a finished run: a run resumed with
no step left stops when it is there (`end_if_finished`), and a run that trains on removes it first
(`remove_finished_card`). `create_hub_repo` and `push_folder_to_hub` are `--push_to_hub`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.utils import make_image_grid
from diffusers.utils.hub_utils import populate_model_card
from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder
from PIL import Image

from ..hub import looks_like_local_path

logger = logging.getLogger(__name__)


def save_validation_grid(
    accelerator: Accelerator, images: list[Image.Image], rows: int, output_dir: str, step: int, tag: str
) -> str:
    """Saves `images` as one PNG grid `<output_dir>/validation/<tag>-<step>.png` and sends it to the trackers
    that take images (tensorboard, wandb)."""
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
    for tracker in accelerator.trackers:  # as diffusers' scripts log their validation images
        if tracker.name == "tensorboard":
            tracker.writer.add_images(tag, np.asarray(grid)[None], step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({tag: [grid]}, step=step)
    return path


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`(B, C, H, W)` in [-1, 1] -> list of PIL images."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    images = images.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    return [Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image) for image in images]


def describe_hardware(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    elif accelerator.device.type != "cpu":  # e.g. "mps", the GPU of Apple silicon, which accelerate picks on a Mac
        device = f"{accelerator.device.type.upper()} ({platform.machine()})"
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
    diffusers' scripts do, so that a logged-out or offline run fails before any work (a `ValueError` naming the flag
    and the repo, from huggingface_hub's error: offline mode, no connection, no token)."""
    repo_id = args.hub_model_id or Path(args.output_dir).name
    try:
        return create_repo(repo_id=repo_id, exist_ok=True, token=args.hub_token).repo_id
    except Exception as error:  # noqa: BLE001  (offline, unreachable, unauthorised, bad id: all stop the same way)
        raise ValueError(
            f"--push_to_hub: could not create the Hub repo {repo_id!r} before training ({type(error).__name__}: "
            f"{error}). Log in with `hf auth login` where the Hub can be reached (HF_HUB_OFFLINE unset), or train "
            "without --push_to_hub and upload the output folder later."
        ) from error


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
    num_inference_steps: int = 25,
) -> ModelCard:
    """The model card of a pipeline folder written by `train_unet.py` (plus the VAE's held-out metrics that
    `train_vae.py` wrote next to its `vae/` folder, when found). Its usage snippet loads `repo_id` when the run
    uploads there, else `args.output_dir`, with `num_inference_steps` (at most the model's training timesteps)."""
    pixel_space = vae_folder is None
    vae_metrics = os.path.join(vae_folder or "", "..", "reconstruction_metrics.json")
    if not pixel_space and os.path.isfile(vae_metrics):
        with open(vae_metrics, encoding="utf-8") as f:
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
        f"image = pipe({prompts[0]!r}, num_inference_steps={num_inference_steps}, guidance_scale=3.0,\n"
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
