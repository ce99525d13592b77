"""Train a SmallVAE (KL autoencoder) from scratch with accelerate: reconstruction + weighted KL.

One CPU, built-in data, no download:
    python training/train_vae.py --dataset_name builtin:cartoon-faces --output_dir outputs/vae \
        --max_train_steps 3000 --train_batch_size 32 --learning_rate 1e-3 --use_ema --mixed_precision bf16
Several processes (the same script; accelerate runs DDP underneath). GPUs:
    accelerate launch --num_processes N training/train_vae.py --dataset_name builtin:cartoon-faces ...
CPU (`accelerate launch --num_processes 2` alone starts ONE process on a machine without GPUs; docs/training.md):
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision bf16 --dynamo_backend no training/train_vae.py --dataset_name builtin:cartoon-faces ...
Then sharpen the decoder alone (the latents, and a UNet trained on them, stay valid):
    python training/train_vae.py --pretrained_vae_model_name_or_path outputs/vae --train_decoder_only \
        --dataset_name builtin:cartoon-faces --output_dir outputs/vae-decoder --max_train_steps 1000 ...
Your own images (a folder of images; no metadata.jsonl needed: the VAE reads no captions) or a Hub data set:
    python training/train_vae.py --train_data_dir path/to/images ...
    python training/train_vae.py --dataset_name Skiittoo/cartoon-faces --resolution 64 --center_crop ...

Writes <output_dir>/vae (save_pretrained, with `scaling_factor = 1 / std(latents)` measured on training images),
reconstruction_metrics.json (held-out MSE / PSNR / SSIM), validation grids (originals over reconstructions),
checkpoint-<step> folders (resume with --resume_from_checkpoint latest) and a README.md model card.
"""

import argparse
import inspect
import json
import logging
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from accelerate import skip_first_batches
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from sdscratch import SmallVAE
from sdscratch import training_utils as tu
from sdscratch.evaluation.reconstruction import evaluate_reconstruction, similarity_text

logger = get_logger(__name__, log_level="INFO")
SCALING_FACTOR_IMAGES = 1024  # training images used to measure std(latents)
ARCHITECTURE_FLAGS = ("block_out_channels", "layers_per_block", "latent_channels")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tu.add_data_args(parser)
    tu.add_optimization_args(parser, learning_rate=1e-3)
    tu.add_output_args(parser, output_dir="outputs/vae", tracker_project_name="train_vae")
    group = parser.add_argument_group("VAE")
    group.add_argument(
        "--pretrained_vae_model_name_or_path",
        type=str,
        default=None,
        help="Start from this trained SmallVAE (a folder, or an output folder with vae/; or the Hub id of one) "
        "instead of random weights.",
    )
    group.add_argument(
        "--train_decoder_only",
        action="store_true",
        help="Freeze the encoder and fine-tune the decoder only (as Stable Diffusion's ft-MSE VAE was): latents, "
        "scaling_factor and any UNet trained on them stay valid. Needs --pretrained_vae_model_name_or_path.",
    )
    group.add_argument("--vae_config", type=str, default=None, help="A SmallVAE config.json; flags below override.")
    group.add_argument("--block_out_channels", type=int, nargs="+", default=None, help="e.g. 32 64 128")
    group.add_argument("--layers_per_block", type=int, default=None)
    group.add_argument("--latent_channels", type=int, default=None)
    group.add_argument("--reconstruction_loss", type=str, default="l1+mse", choices=["l1", "mse", "l1+mse"])
    group.add_argument("--kl_weight", type=float, default=1e-6, help="Weight of KL per pixel (LDM's scale).")
    group.add_argument("--num_validation_images", type=int, default=16, help="Held out: grids and metrics.")
    group.add_argument(
        "--crop_size",
        type=int,
        default=None,
        help="Train on one random crop_size x crop_size window of each --resolution image (the VAE is fully "
        "convolutional; Stable Diffusion's VAE was trained on 256x256 crops): about (resolution / crop_size)^2 "
        "cheaper steps. Validation, metrics and scaling_factor stay at --resolution.",
    )
    args = parser.parse_args(argv)
    args.command = tu.redacted_command("training/train_vae.py", sys.argv[1:] if argv is None else argv)
    tu.check_common_args(args)
    tu.check_num_validation_images(args, 1)
    architecture = [f"--{k}" for k in ARCHITECTURE_FLAGS + ("vae_config",) if getattr(args, k) is not None]
    if args.pretrained_vae_model_name_or_path is not None and architecture:
        raise ValueError(f"--pretrained_vae_model_name_or_path sets the architecture; drop {', '.join(architecture)}.")
    if args.crop_size is not None and not 0 < args.crop_size <= args.resolution:
        raise ValueError(f"--crop_size must be in [1, --resolution={args.resolution}], got {args.crop_size}.")
    if args.train_decoder_only and args.pretrained_vae_model_name_or_path is None:
        raise ValueError("--train_decoder_only fine-tunes a trained VAE: give --pretrained_vae_model_name_or_path.")
    if not 0 <= args.kl_weight < math.inf:  # a negative weight would reward a posterior far from N(0, I)
        raise ValueError(f"--kl_weight must be >= 0 and finite, got {args.kl_weight}.")
    if args.vae_config is not None:
        read_vae_config(args.vae_config)  # checked here, before any work; read again by build_vae
    return args


def read_vae_config(path: str) -> dict:
    """The SmallVAE keys of --vae_config (a config.json; `_`-prefixed keys dropped), checked before any work."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"--vae_config {path}: cannot read a JSON config ({error}).") from error
    if not isinstance(config, dict):
        raise ValueError(f"--vae_config {path}: expected a JSON object of SmallVAE config keys.")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    known = set(inspect.signature(SmallVAE.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"--vae_config {path} is not a SmallVAE config: unknown keys {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})."
        )
    if config.get("out_channels", 3) != config.get("in_channels", 3):
        raise ValueError(
            f"--vae_config {path}: out_channels {config.get('out_channels', 3)} must equal in_channels "
            f"{config.get('in_channels', 3)} (the VAE reconstructs its input)."
        )
    return config


class VAEWithPosterior(torch.nn.Module):
    """Encode + decode in one `forward`: DDP only synchronises gradients of what runs inside `forward`."""

    def __init__(self, vae: SmallVAE):
        super().__init__()
        self.vae = vae

    def forward(self, pixel_values):
        posterior = self.vae.encode(pixel_values).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        return reconstruction, posterior.kl()  # (B, C, H, W), (B,) KL summed over latent elements


def build_vae(args) -> SmallVAE:
    """A new SmallVAE from --vae_config and the flags, or the trained one in --pretrained_vae_model_name_or_path
    (with its encoder frozen under --train_decoder_only)."""
    if args.pretrained_vae_model_name_or_path is not None:
        vae, _ = tu.load_frozen_vae(args.pretrained_vae_model_name_or_path)
        vae.train().requires_grad_(not args.train_decoder_only)
        vae.post_quant_conv.requires_grad_(True)  # the decoder side: post_quant_conv + decoder
        vae.decoder.requires_grad_(True)
        tu.check_resolution(args.resolution, vae.downsample_factor)
        return vae
    config = read_vae_config(args.vae_config) if args.vae_config is not None else {}
    for key in ARCHITECTURE_FLAGS:
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config["sample_size"] = args.resolution
    tu.check_resolution(
        args.resolution, 2 ** (len(config.get("block_out_channels", SmallVAE().config.block_out_channels)) - 1)
    )
    return SmallVAE(**config)


def random_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """One random `size` x `size` window of every image `(B, C, H, W)` -> `(B, C, size, size)`. Offsets come from
    torch's global RNG, which checkpoints save, so a resumed run crops as the uninterrupted one would."""
    batch, _, height, width = images.shape
    top = torch.randint(0, height - size + 1, (batch,)).tolist()
    left = torch.randint(0, width - size + 1, (batch,)).tolist()
    return torch.stack([image[:, y : y + size, x : x + size] for image, y, x in zip(images, top, left)])


def reconstruction_loss(reconstruction, target, kind: str):
    loss = 0.0
    if "l1" in kind:
        loss = loss + F.l1_loss(reconstruction.float(), target.float())
    if "mse" in kind:
        loss = loss + F.mse_loss(reconstruction.float(), target.float())
    return loss


@torch.no_grad()
def measure_scaling_factor(vae: SmallVAE, images: torch.Tensor, batch_size: int = 64) -> float:
    """`1 / std` of posterior samples on training images, so that scaled latents have unit variance (LDM D.1)."""
    generator = torch.Generator().manual_seed(0)
    latents = [
        vae.encode(images[i : i + batch_size].to(vae.device)).latent_dist.sample(generator=generator)
        for i in range(0, len(images), batch_size)
    ]
    return 1.0 / torch.cat(latents).float().std().item()


def main(args):
    accelerator = tu.make_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    # as diffusers does: create the Hub repo first, so that a logged-out / offline run fails before any work
    repo_id = tu.create_hub_repo(args) if args.push_to_hub and accelerator.is_main_process else None
    set_seed(args.seed)  # same initial weights on every process
    resume_path = tu.resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    tu.check_resume_ema(resume_path, ["vae"], args.use_ema)
    clock = tu.TrainingClock(resume_path)  # wall time of the whole run, across resumes

    # ---- model first (its errors come before any data work; building it draws on the global RNG only) ----
    vae = build_vae(args)
    if args.crop_size is not None and args.crop_size % vae.downsample_factor:
        raise ValueError(
            f"--crop_size {args.crop_size} must be divisible by the VAE's downsampling factor {vae.downsample_factor}."
        )

    # ---- data: held-out images for grids/metrics, the rest for training ----
    dataset = tu.load_train_dataset(args, captions=False)  # images alone: a folder without captions trains too
    if len(dataset) < 2:  # one held out for the grids and metrics, one to train on
        raise ValueError(
            f"train_vae.py needs at least 2 images (one is held out for the validation grids and metrics), the data "
            f"set has {len(dataset)}."
        )
    num_holdout = min(args.num_validation_images, len(dataset) // 2)
    train_images = dataset.select(range(len(dataset) - num_holdout))
    tu.check_enough_training_images(len(train_images), args.train_batch_size, accelerator.num_processes, num_holdout)
    transform = tu.image_transform(args, accelerator.process_index, channels=vae.config.in_channels)
    holdout_images = torch.stack(
        [transform(image) for image in dataset.select(range(len(train_images), len(dataset)))["image"]]
    )
    train_data = tu.TrainingImages(train_images, transform, args.seed)  # each image's crop: (seed, epoch, row)
    train_dataloader = torch.utils.data.DataLoader(
        train_data,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),  # keeps the global RNG (saved in checkpoints) untouched
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_num_workers > 0,  # kept: a "spawn" worker (macOS, Windows) starts slowly
        collate_fn=tu.stack_pixel_values,
    )

    # ---- EMA, optimizer ----
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    tu.check_checkpoints_compatible(args.output_dir, {"vae": vae}, resume_path)
    ema_vae = tu.make_ema(vae, args.ema_decay, accelerator.device) if args.use_ema else None
    tu.register_checkpoint_hooks(accelerator, {"vae": vae}, {"vae": ema_vae} if args.use_ema else None)
    train_dataloader = accelerator.prepare(train_dataloader)  # shards the batches: its length is per process
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    optimizer, lr_scheduler = tu.make_optimizer_and_scheduler(
        args, [p for p in vae.parameters() if p.requires_grad], accelerator, num_update_steps_per_epoch
    )
    model, optimizer, lr_scheduler = accelerator.prepare(VAEWithPosterior(vae), optimizer, lr_scheduler)
    tu.seed_each_process(accelerator, args.seed)  # each process its own posterior samples, flips and crops
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, tu.tracker_config(args))

    # ---- resume: same step count, LR schedule, EMA, RNG and data order ----
    global_step, first_epoch, skip_batches = 0, 0, 0
    if resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {resume_path}")
        global_step = tu.resume_state(accelerator, lr_scheduler, resume_path, args.steps_from_epochs)
        first_epoch = global_step // num_update_steps_per_epoch
        skip_batches = (global_step % num_update_steps_per_epoch) * args.gradient_accumulation_steps

    if global_step >= args.max_train_steps:  # a finished run started again: no step left to take
        if tu.end_if_finished(accelerator, args, resume_path, global_step, repo_id):  # uploads with --push_to_hub
            return vae
        first_epoch = args.num_train_epochs  # interrupted before its final save: write it, without a step
    tu.remove_finished_card(accelerator, args.output_dir)  # written again last, once this run is finished

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"{len(train_images)} training images, {num_holdout} held out; {args.max_train_steps} steps of {total_batch_size}"
    )
    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    run_start, run_steps = time.time(), 0
    step_losses = tu.MicroBatchMean()  # the logged losses: means over the step's accumulated micro-batches

    def validation_grid(step):
        if args.use_ema:
            ema_vae.store(vae.parameters())
            ema_vae.copy_to(vae.parameters())
        vae.eval()
        with torch.no_grad():
            originals = holdout_images[:8].to(accelerator.device)
            reconstructions = vae(originals).sample
        vae.train()
        if args.use_ema:
            ema_vae.restore(vae.parameters())
        images = tu.to_pil(torch.cat([originals, reconstructions]))
        return tu.save_validation_grid(accelerator, images, 2, args.output_dir, step, "reconstructions")

    for epoch in range(first_epoch, args.num_train_epochs):
        model.train()
        train_dataloader.set_epoch(epoch)  # the shuffle order is a function of (seed, epoch)
        train_data.set_epoch(epoch)  # so are the random crops
        # a loader that skips batches starts its own workers: only for a run resumed mid-epoch (0 after its first)
        batches = skip_first_batches(train_dataloader, skip_batches) if skip_batches else train_dataloader
        for pixel_values in batches:  # (B, C, H, W) in [-1, 1]
            with accelerator.accumulate(model):
                # augment here, not in the data loader, so the RNG state saved in checkpoints covers it
                if args.random_flip:
                    flip = torch.rand(pixel_values.shape[0], device=pixel_values.device) < 0.5
                    pixel_values = torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)
                if args.crop_size is not None and args.crop_size < pixel_values.shape[-1]:
                    pixel_values = random_crops(pixel_values, args.crop_size)
                # encode, sample z ~ q(z|x), decode
                reconstruction, kl = model(pixel_values)
                rec_loss = reconstruction_loss(reconstruction, pixel_values, args.reconstruction_loss)
                # KL per pixel, so that --kl_weight means what it means in latent diffusion (sum / sum)
                kl_loss = kl.mean() / pixel_values[0].numel()
                loss = rec_loss + args.kl_weight * kl_loss
                accelerator.backward(loss)
                # all three averaged over the processes (rec_loss and kl were process 0's: loss != rec_loss + w * kl)
                gathered = accelerator.gather(torch.stack([loss, rec_loss, kl_loss]).detach()[None]).mean(0).tolist()
                step_losses.add(loss=gathered[0], rec_loss=gathered[1], kl=gathered[2])
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            if accelerator.sync_gradients:
                if args.use_ema:
                    ema_vae.step(vae.parameters())
                global_step += 1
                run_steps += 1
                logs = {
                    **step_losses.pop(),
                    "lr": lr_scheduler.get_last_lr()[0],
                    "samples_per_s": run_steps * total_batch_size / (time.time() - run_start),
                }
                progress_bar.update(1)
                progress_bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_per_s=f"{logs['samples_per_s']:.1f}")
                accelerator.log(logs, step=global_step)
                if tu.is_checkpoint_step(global_step, args):
                    tu.save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit, clock)
                if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                    validation_grid(global_step)
            if global_step >= args.max_train_steps:
                break
        skip_batches = 0

    # ---- save: EMA weights, scaling factor, held-out metrics, card ----
    accelerator.wait_for_everyone()
    tu.write_rank_digest(accelerator, {"vae": vae})
    if accelerator.is_main_process:
        grid_path = validation_grid(global_step)
        if args.use_ema:
            ema_vae.copy_to(vae.parameters())
        vae.eval()
        downsample = vae.downsample_factor
        if not args.train_decoder_only:  # a frozen encoder keeps the latents, hence the scaling factor, unchanged
            num_scaling = min(SCALING_FACTOR_IMAGES, len(train_images))
            scaling_images = torch.stack(
                [transform(image) for image in train_images.select(range(num_scaling))["image"]]
            )
            vae.register_to_config(scaling_factor=measure_scaling_factor(vae, scaling_images))
        vae.save_pretrained(os.path.join(args.output_dir, "vae"))
        # images on the CPU: the VAE runs on its device, the metrics in float64 on the CPU (Apple's MPS has none)
        metrics = evaluate_reconstruction(vae, holdout_images)
        metrics["scaling_factor"] = vae.config.scaling_factor
        with open(os.path.join(args.output_dir, "reconstruction_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
        accelerator.print(
            f"held-out reconstruction ({metrics['num_images']} images): MSE {metrics['mse']:.5f}, "
            f"PSNR {metrics['psnr']:.2f} dB, SSIM {similarity_text(metrics['ssim'])}, MS-SSIM "
            f"{similarity_text(metrics['ms_ssim'])} ({metrics['ms_ssim_scales']} scales); scaling_factor "
            f"{vae.config.scaling_factor:.4f}"
        )
        if args.pretrained_vae_model_name_or_path is None:
            origin = "trained from scratch"
        else:
            part = "decoder fine-tuned, encoder frozen" if args.train_decoder_only else "fine-tuned"
            origin = f"{part} from `{args.pretrained_vae_model_name_or_path}`"
        body = tu.training_card_body(
            f"A `SmallVAE` (sdscratch) {origin} on `{args.dataset_name or args.train_data_dir}`: "
            f"{args.resolution}x{args.resolution} images <-> latents {downsample}x smaller per side, "
            f"`scaling_factor` {vae.config.scaling_factor:.4f} (= 1 / std of training latents).",
            "import sdscratch\n"
            f'vae = sdscratch.SmallVAE.from_pretrained("{tu.model_reference(args, repo_id)}", subfolder="vae")',
            args,
            global_step,
            clock.describe(),
            tu.describe_hardware(accelerator),
            metrics,
            os.path.relpath(grid_path, args.output_dir),
            num_processes=accelerator.num_processes,
        )
        tags = ["sdscratch", "autoencoder", "vae", "diffusers-training"]
        tu.write_model_card(args.output_dir, "SmallVAE", body, args.dataset_name, tags)
        if args.push_to_hub:
            tu.push_folder_to_hub(args.output_dir, repo_id, args.hub_token, args.logging_dir)
    accelerator.end_training()
    return vae


if __name__ == "__main__":
    main(parse_args())
