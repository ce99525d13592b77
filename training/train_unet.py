"""Train a text-to-image SmallUNet (and its CLIP text encoder) from scratch with accelerate -> CartoonFacePipeline.

One CPU, built-in data, a VAE from train_vae.py, no download:
    python training/train_unet.py --dataset_name builtin:cartoon-faces --pretrained_vae_model_name_or_path outputs/vae \
        --output_dir outputs/cartoon-faces --max_train_steps 5000 --train_batch_size 64 --learning_rate 3e-4 --use_ema
Pixel space (no VAE), e.g. 16x16 digits:
    python training/train_unet.py --dataset_name builtin:digits --resolution 16 \
        --unet_config training/configs/digits.json --output_dir outputs/digits
Several processes (the same script; accelerate runs DDP underneath). GPUs:
    accelerate launch --num_processes N training/train_unet.py --dataset_name builtin:cartoon-faces ...
CPU (`accelerate launch --num_processes 2` alone starts ONE process on a machine without GPUs; docs/training.md):
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision bf16 --dynamo_backend no training/train_unet.py --dataset_name builtin:cartoon-faces ...

The frozen VAE encodes the whole data set once (--cache_latents, the default; both flips with --random_flip), the
diffusers DDPMScheduler adds noise, the UNet predicts it (or v) with min-SNR weighting optional, captions are
dropped with --conditioning_dropout_prob so that classifier-free guidance works. The text encoder is a CLIPTextModel
trained from scratch with a tokenizer built from the training captions, or a frozen pretrained one
(--pretrained_text_encoder) whose embeddings are computed once, or a pretrained one fine-tuned with the UNet
(--pretrained_text_encoder with --train_text_encoder). At the end <output_dir> is a complete
CartoonFacePipeline folder (EMA weights with --use_ema, DPM-Solver++ scheduler) with a README.md model card.
"""

import argparse
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
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.training_utils import compute_snr
from tqdm.auto import tqdm

from sdscratch import CartoonFacePipeline, SmallUNet
from sdscratch import training_utils as tu
from sdscratch.pipelines.pipeline_utils import default_scheduler_config

logger = get_logger(__name__, log_level="INFO")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "cartoon-faces.json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tu.add_data_args(parser)
    tu.add_optimization_args(parser, learning_rate=3e-4)
    tu.add_output_args(parser, output_dir="outputs/unet", tracker_project_name="train_unet")
    group = parser.add_argument_group("models and diffusion")
    group.add_argument(
        "--pretrained_vae_model_name_or_path",
        type=str,
        default=None,
        help="A SmallVAE folder (train_vae.py's output or its vae/ subfolder), or the Hub id of one; none = "
        "diffusion in pixel space.",
    )
    group.add_argument(
        "--pretrained_text_encoder",
        type=str,
        default=None,
        help="A frozen CLIP text encoder: Hub id (e.g. openai/clip-vit-base-patch32) or folder, a CLIP or a "
        "pipeline (tokenizer/ + text_encoder/); default: train one.",
    )
    group.add_argument(
        "--train_text_encoder",
        action="store_true",
        help="Fine-tune the --pretrained_text_encoder together with the UNet (its weights are the start) instead of "
        "keeping it frozen. A text encoder trained from scratch (no --pretrained_text_encoder) is always trained.",
    )
    group.add_argument("--unet_config", type=str, default=DEFAULT_CONFIG, help="JSON: unet/text_encoder/scheduler.")
    group.add_argument("--block_out_channels", type=int, nargs="+", default=None, help="Overrides the config.")
    group.add_argument("--layers_per_block", type=int, default=None, help="Overrides the config.")
    group.add_argument("--num_train_timesteps", type=int, default=None, help="Overrides the config.")
    group.add_argument(
        "--beta_schedule", type=str, default=None, choices=["linear", "scaled_linear", "squaredcos_cap_v2"]
    )
    group.add_argument(
        "--prediction_type", type=str, default=None, choices=tu.PREDICTION_TYPES, help="Overrides the config."
    )
    group.add_argument(
        "--cache_latents",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Encode the data set once with the frozen VAE (--no-cache_latents: encode every step).",
    )
    group.add_argument("--conditioning_dropout_prob", type=float, default=0.1, help="Caption -> '' (for CFG).")
    group.add_argument(
        "--text_encoder_lr",
        type=float,
        default=None,
        help="Peak learning rate of the trained text encoder (default: --learning_rate). A checkpoint "
        "resumes only with the same choice (one optimizer parameter group, or two).",
    )
    group.add_argument(
        "--text_encoder_freeze_steps",
        type=int,
        default=0,
        help="Hold the trained text encoder's learning rate at 0 for this many optimizer steps, then raise it "
        "linearly to its scheduled value over --lr_warmup_steps, so the UNet first learns to read the fresh "
        "encoder's features (measured on cartoon faces: 1,000 steps delayed, not prevented, the collapse of the "
        "words the UNet does not use, and lifted glasses colour to 96-98%%; the shipped recipe uses 1000; "
        "docs/evaluation.md). Like --text_encoder_lr, it gives the text encoder "
        "its own optimizer parameter group: a checkpoint resumes only with the same choice.",
    )
    group.add_argument(
        "--text_encoder_warmup_steps",
        type=int,
        default=None,
        help="With --text_encoder_freeze_steps: raise the text encoder's learning rate from 0 to its scheduled "
        "value over this many steps after the freeze (default: --lr_warmup_steps; measured on cartoon faces: 3000 "
        "kept the rare words apart and lifted free-form eye colour from 54%% to 83%%; the shipped recipe uses 3000).",
    )
    group.add_argument("--snr_gamma", type=float, default=None, help="Min-SNR weighting gamma (5.0 recommended).")
    group.add_argument("--noise_offset", type=float, default=0.0, help="Offset noise scale (e.g. 0.05).")
    group.add_argument(
        "--input_perturbation",
        type=float,
        default=0.0,
        help="Input perturbation scale (Ning et al. 2023; 0.1 recommended): the UNet's input is noised with "
        "noise + scale * extra noise, its target stays the unperturbed noise (or v).",
    )
    group.add_argument("--validation_prompts", type=str, nargs="+", default=None, help="Default: 8 training captions.")
    args = parser.parse_args(argv)
    args.command = tu.redacted_command("training/train_unet.py", sys.argv[1:] if argv is None else argv)
    tu.check_common_args(args)
    if not 0.0 <= args.conditioning_dropout_prob < 1.0:
        raise ValueError(f"--conditioning_dropout_prob must be in [0, 1), got {args.conditioning_dropout_prob}.")
    if not 0 <= args.input_perturbation < math.inf:
        raise ValueError(
            f"--input_perturbation must be >= 0 and finite (0.1 recommended), got {args.input_perturbation}."
        )
    if not math.isfinite(args.noise_offset):  # nan / inf noise: every weight nan at the first step
        raise ValueError(f"--noise_offset must be finite (e.g. 0.05), got {args.noise_offset}.")
    tu.check_text_encoder_args(args)
    return args


def main(args):
    # here, not in parse_args: recipes are parse-checked before the folders they name exist. A Hub id becomes its
    # snapshot in the HF cache (downloaded, or the cached one offline) before any work
    text_encoder_path = tu.pretrained_text_encoder_folder(args)
    accelerator = tu.make_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    # as diffusers does: create the Hub repo first, so that a logged-out / offline run fails before any work
    repo_id = tu.create_hub_repo(args) if args.push_to_hub and accelerator.is_main_process else None
    set_seed(args.seed)  # same initial weights on every process
    resume_path = tu.resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    train_text_encoder = args.pretrained_text_encoder is None or args.train_text_encoder
    tu.check_resume_text_encoder(args, resume_path)
    tu.check_resume_ema(resume_path, ["unet"] + (["text_encoder"] if train_text_encoder else []), args.use_ema)
    # a finished run started again (the recipes re-run every stage): stop before the data and the latent cache
    if resume_path is not None and args.max_train_steps is not None:
        step = tu.checkpoint_step(resume_path)
        if step >= args.max_train_steps and os.path.isfile(os.path.join(args.output_dir, "README.md")):
            tu.end_if_finished(accelerator, args, resume_path, step, repo_id)  # uploads with --push_to_hub
            return
    clock = tu.TrainingClock(resume_path)  # wall time of the whole run, across resumes
    config = tu.load_config(args)
    noise_scheduler = DDPMScheduler.from_config(default_scheduler_config(**config["scheduler"]))
    # a checkpoint of another noise schedule or target: refused now, before the VAE, the data and the text encoder
    tu.check_checkpoints_compatible(args.output_dir, {}, resume_path, noise_scheduler)

    # ---- frozen VAE (or pixel space) and data ----
    vae, vae_folder = (
        tu.load_frozen_vae(args.pretrained_vae_model_name_or_path)
        if args.pretrained_vae_model_name_or_path
        else (None, None)
    )
    frozen_flags = {"vae": "--pretrained_vae_model_name_or_path", "text_encoder": "--pretrained_text_encoder"}
    # the frozen models' fingerprints, computed once: checked against the checkpoint now, saved with each checkpoint
    frozen = {"vae": None if vae is None else tu.weights_fingerprint(vae)}
    tu.check_resume_frozen(resume_path, frozen, frozen_flags)  # another latent space: refused before the data
    if vae is not None:
        vae.to(accelerator.device)
    factor = vae.downsample_factor if vae is not None else 1
    tu.check_resolution(args.resolution, factor)
    # the UNet halves the (latent) image len(block_out_channels) - 1 times: checked before the data is loaded
    levels = config["unet"].get("block_out_channels")  # None: SmallUNet's default
    tu.check_unet_resolution(args.resolution, factor if vae is not None else None, levels)
    scaling_factor = vae.config.scaling_factor if vae is not None else 1.0
    dataset = tu.load_train_dataset(args)
    tu.check_enough_training_images(len(dataset), args.train_batch_size, accelerator.num_processes)
    caption_lists = tu.image_caption_lists(dataset)  # several per image: one is drawn each time the image is used
    captions = [caption for image_captions in caption_lists for caption in image_captions]
    # image channels: the VAE's, or in pixel space the UNet config's (e.g. 1 for grayscale digits)
    image_channels = vae.config.in_channels if vae is not None else config["unet"].get("in_channels", 3)
    transform = tu.image_transform(args, accelerator.process_index, channels=image_channels)

    unique_captions, caption_rows, caption_counts = tu.caption_table(caption_lists)
    empty_row = len(unique_captions) - 1

    # ---- text encoder: trained from scratch (default), frozen pretrained, or pretrained and fine-tuned ----
    tokenizer, text_encoder = tu.build_text_components(
        args, config, captions, resume_path, accelerator.device, text_encoder_path
    )
    if not train_text_encoder:  # and other embeddings
        frozen["text_encoder"] = tu.weights_fingerprint(text_encoder)
        tu.check_resume_frozen(resume_path, frozen, frozen_flags)
    caption_input_ids = tu.tokenize_captions(tokenizer, unique_captions)  # (U, L), as CartoonFacePipeline tokenizes
    if not train_text_encoder:  # frozen: (U, L, D) hidden states computed once, kept on the CPU
        caption_embeds = tu.embed_captions(text_encoder, caption_input_ids, accelerator.device)

    # ---- UNet: architecture from the config, shapes from the data / VAE / text encoder ----
    in_channels = vae.config.latent_channels if vae is not None else image_channels
    unet_config = {**config["unet"], "sample_size": args.resolution // factor}
    unet_config.update(in_channels=in_channels, out_channels=in_channels)
    unet_config["cross_attention_dim"] = text_encoder.config.hidden_size
    unet = SmallUNet(**unet_config)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if train_text_encoder:
            tu.enable_transformers_checkpointing(text_encoder)

    trained = {"unet": unet, "text_encoder": text_encoder} if train_text_encoder else {"unet": unet}
    tu.check_checkpoints_compatible(args.output_dir, trained, resume_path)
    emas = {}  # EMA copies on the accelerator's device, where prepare() puts the models
    if args.use_ema:
        emas = {name: tu.make_ema(model, args.ema_decay, accelerator.device) for name, model in trained.items()}
    tu.register_checkpoint_hooks(accelerator, trained, emas)

    # ---- latent cache: the whole data set encoded once (both flips with --random_flip) ----
    cache = None
    if args.cache_latents:
        logger.info(f"Encoding {len(dataset)} images once ({'VAE' if vae is not None else 'pixel space'})...")
        cache = tu.build_latent_cache(vae, dataset, transform, args.resolution, args.center_crop, args.random_flip)
    # rows {"index"} (+ "pixel_values" decoded by the loader, each crop seeded by (seed, epoch, row), without a cache)
    train_data = tu.TrainingImages(dataset, None if args.cache_latents else transform, args.seed)
    train_dataloader = torch.utils.data.DataLoader(
        train_data,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_num_workers > 0,  # kept: a "spawn" worker (macOS, Windows) starts slowly
        generator=torch.Generator().manual_seed(args.seed),  # keeps the global RNG (saved in checkpoints) untouched
    )
    train_dataloader = accelerator.prepare(train_dataloader)  # shards the batches: its length is per process
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    params = [p for model in trained.values() for p in model.parameters()]
    groups = tu.text_encoder_param_groups(args, unet, text_encoder, params)  # 1 group, or 2: the text encoder's
    optimizer, lr_scheduler = tu.make_optimizer_and_scheduler(args, groups, accelerator, num_update_steps_per_epoch)
    tu.delay_text_encoder(args, lr_scheduler, accelerator.num_processes)  # --text_encoder_freeze_steps
    prepared = accelerator.prepare(*trained.values(), optimizer, lr_scheduler)
    unet_ddp, text_encoder_ddp = prepared[0], (prepared[1] if train_text_encoder else text_encoder)
    optimizer, lr_scheduler = prepared[-2:]
    tu.seed_each_process(accelerator, args.seed)  # each process its own noise, timesteps, flips and caption drops
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, tu.tracker_config(args))

    # ---- resume: same step count, LR schedule, EMA, RNG and data order ----
    global_step, first_epoch, skip_batches = 0, 0, 0
    if resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {resume_path}")
        global_step = tu.resume_state(  # names the flags if the parameter groups differ
            accelerator, lr_scheduler, resume_path, args.steps_from_epochs,
            load=lambda path: tu.load_resume_state(accelerator, path, optimizer),
        )  # fmt: skip
        first_epoch = global_step // num_update_steps_per_epoch
        skip_batches = (global_step % num_update_steps_per_epoch) * args.gradient_accumulation_steps

    if global_step >= args.max_train_steps:  # a finished run started again: no step left to take
        if tu.end_if_finished(accelerator, args, resume_path, global_step, repo_id):  # uploads with --push_to_hub
            return
        first_epoch = args.num_train_epochs  # interrupted before its final save: write it, without a step
    tu.remove_finished_card(accelerator, args.output_dir)  # written again last, once this run is finished

    validation_prompts = args.validation_prompts or unique_captions[:-1][:8]
    prediction_type = noise_scheduler.config.prediction_type
    # DPM-Solver takes no more steps than the training timesteps: beyond them it steps between equal timesteps
    # (nan images) or past the end of its schedule (IndexError)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps

    def make_pipeline():
        scheduler = DPMSolverMultistepScheduler.from_config(default_scheduler_config(**config["scheduler"]))
        return CartoonFacePipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )

    # Built-in data: how well the text encoder tells each attribute's words apart, logged at every validation
    # (docs/evaluation.md, "Text encoder separation"): a word it maps like another one, the UNet cannot follow.
    separation_task = tu.separation_task(args.dataset_name)
    separation = {}

    def validation_grid(step):
        for name, ema in emas.items():  # sample with the EMA weights
            ema.store(trained[name].parameters())
            ema.copy_to(trained[name].parameters())
        unet.eval()
        text_encoder.eval()
        if separation_task is not None:
            separation.update(tu.text_encoder_separation_scores(tokenizer, text_encoder, separation_task))
            accelerator.log({f"text_encoder_separation/{k}": v for k, v in separation.items()}, step=step)
            logger.info("text encoder separation: " + ", ".join(f"{k} {v:.3f}" for k, v in separation.items()))
        pipeline = make_pipeline()
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(args.seed)
        steps = min(20, num_train_timesteps)
        images = pipeline(validation_prompts, num_inference_steps=steps, generator=generator).images
        unet.train()
        text_encoder.train(train_text_encoder)
        for name, ema in emas.items():
            ema.restore(trained[name].parameters())
        return tu.save_validation_grid(accelerator, images, 1, args.output_dir, step, "samples")

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"{len(dataset)} images ({caption_rows.shape[1]} captions each at most), {len(unique_captions) - 1} distinct "
        f"captions; {args.max_train_steps} steps of {total_batch_size}"
    )
    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    run_start, run_steps = time.time(), 0
    step_loss = tu.MicroBatchMean()  # the logged loss: the mean over the step's accumulated micro-batches

    for epoch in range(first_epoch, args.num_train_epochs):
        unet_ddp.train()
        text_encoder_ddp.train(train_text_encoder)
        train_dataloader.set_epoch(epoch)  # the shuffle order is a function of (seed, epoch)
        train_data.set_epoch(epoch)  # so are the random crops
        # a loader that skips batches starts its own workers: only for a run resumed mid-epoch (0 after its first)
        batches = skip_first_batches(train_dataloader, skip_batches) if skip_batches else train_dataloader
        for batch in batches:
            with accelerator.accumulate(*prepared[: len(trained)]):
                index = batch["index"].cpu()  # (B,) rows of the data set; the cache and the RNG draws live on the CPU
                bsz = index.shape[0]
                # 1. latents x_0 ~ q(z|x) * scaling_factor; a random horizontal flip per image
                flip = torch.rand(bsz) < 0.5 if args.random_flip else torch.zeros(bsz, dtype=torch.bool)
                if cache is not None:
                    latents = tu.sample_from_cache(cache, index, flip)
                else:  # the naive loop: encode every step
                    pixel_values = batch["pixel_values"].cpu()  # (B, C, H, W)
                    pixel_values = torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)
                    pixel_values = pixel_values.to(accelerator.device)
                    with torch.no_grad():
                        latents = pixel_values if vae is None else vae.encode(pixel_values).latent_dist.sample()
                latents = latents.to(accelerator.device) * scaling_factor  # (B, C, h, w)

                # 2. captions, dropped to "" with probability p so that the model also learns p(x) (for CFG)
                rows = tu.draw_caption_rows(caption_rows, caption_counts, index)
                rows = torch.where(torch.rand(bsz) < args.conditioning_dropout_prob, empty_row, rows)
                if train_text_encoder:
                    input_ids = caption_input_ids[rows].to(accelerator.device)  # (B, L)
                    encoder_hidden_states = text_encoder_ddp(input_ids)[0]  # (B, L, D)
                else:
                    encoder_hidden_states = caption_embeds[rows].to(accelerator.device)

                # 3. forward diffusion: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t uniform
                noise = torch.randn_like(latents)
                if args.noise_offset:  # https://www.crosslabs.org//blog/diffusion-with-offset-noise
                    noise += args.noise_offset * torch.randn((bsz, latents.shape[1], 1, 1), device=latents.device)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)
                input_noise = noise  # --input_perturbation: the input gets more noise than the target says
                if args.input_perturbation:  # https://arxiv.org/abs/2301.11706
                    input_noise = noise + args.input_perturbation * torch.randn_like(noise)
                noisy_latents = noise_scheduler.add_noise(latents, input_noise, timesteps)
                target = (
                    noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
                )

                # 4. predict the noise (or v) and regress onto it
                model_pred = unet_ddp(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                if args.snr_gamma is None:
                    loss = F.mse_loss(model_pred.float(), target.float())
                else:  # min-SNR weighting, Hang et al. 2023 (arXiv:2303.09556), section 3.4 / 4.2
                    snr = compute_snr(noise_scheduler, timesteps)  # (B,)
                    weights = tu.min_snr_weights(snr, args.snr_gamma, prediction_type)
                    loss = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                    loss = (loss * weights).mean()

                accelerator.backward(loss)
                step_loss.add(loss=accelerator.gather(loss.detach()).mean().item())
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            if accelerator.sync_gradients:
                for name, ema in emas.items():
                    ema.step(trained[name].parameters())
                global_step += 1
                run_steps += 1
                last_lr = lr_scheduler.get_last_lr()  # one per parameter group: [unet(+text encoder), text encoder]
                logs = {
                    **step_loss.pop(),
                    "lr": last_lr[0],
                    "samples_per_s": run_steps * total_batch_size / (time.time() - run_start),
                }
                if len(last_lr) == 2:
                    logs["text_encoder_lr"] = last_lr[1]
                clock.log_step(logs["loss"], logs["samples_per_s"])  # the card's final loss and speed, resumed too
                progress_bar.update(1)
                progress_bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_per_s=f"{logs['samples_per_s']:.1f}")
                accelerator.log(logs, step=global_step)
                if tu.is_checkpoint_step(global_step, args):
                    tu.save_checkpoint(
                        accelerator,
                        args.output_dir,
                        global_step,
                        args.checkpoints_total_limit,
                        clock,
                        tokenizer=tokenizer if args.pretrained_text_encoder is None else None,
                        noise_scheduler=noise_scheduler,
                        frozen=frozen,
                    )
                if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                    validation_grid(global_step)
            if global_step >= args.max_train_steps:
                break
        skip_batches = 0

    # ---- save: the pipeline folder (EMA weights), a grid, the model card; optionally push ----
    accelerator.wait_for_everyone()
    tu.write_rank_digest(accelerator, trained)
    if accelerator.is_main_process:
        if run_steps:  # else (started again after its last checkpoint): the checkpoint's
            clock.samples_per_s = run_steps * total_batch_size / (time.time() - run_start)
        metrics = {
            "final_train_loss (mean of last 100 steps)": clock.recent_loss(),
            "train samples/s": clock.samples_per_s,
        }
        metrics = {name: value for name, value in metrics.items() if value is not None}  # unknown: older checkpoint
        wall_time, hardware = clock.describe(), tu.describe_hardware(accelerator)
        grid_path = validation_grid(global_step)
        metrics.update({f"text encoder separation {k}": v for k, v in separation.items()})
        for name, ema in emas.items():
            ema.copy_to(trained[name].parameters())
        make_pipeline().save_pretrained(args.output_dir, safe_serialization=True)
        tu.write_unet_card(
            args,
            metrics,
            global_step,
            wall_time,
            hardware,
            grid_path,
            validation_prompts,
            vae_folder,
            num_processes=accelerator.num_processes,
            repo_id=repo_id,
            num_inference_steps=min(25, num_train_timesteps),
        )
        if args.push_to_hub:
            tu.push_folder_to_hub(args.output_dir, repo_id, args.hub_token, args.logging_dir)
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
