"""Train a small CLIP (text encoder + image encoder) from scratch with accelerate: the contrastive loss of
Radford et al. 2021 on a data set's image-caption pairs. Its text encoder then conditions a UNet, frozen, as
Stable Diffusion's does (train_unet.py --pretrained_text_encoder <output_dir>).

Why: a text encoder trained jointly with the UNet only learns the words whose images change the diffusion loss a
lot; the loss barely moves for a smile or an eye colour, so such words get lost. A contrastive loss must tell
each caption's image from the rest of the batch, so every word that names something visible pays off.

One CPU, built-in data, no download:
    python training/train_clip.py --dataset_name "builtin:cartoon-faces?caption_style=mixed" \
        --output_dir outputs/clip --train_batch_size 256 --max_train_steps 1500 --mixed_precision bf16
    accelerate launch training/train_unet.py ... --pretrained_text_encoder outputs/clip
Several processes (the contrastive loss is computed within each process's batch: neither more processes nor
--gradient_accumulation_steps give an image more negatives, only --train_batch_size does). GPUs:
    accelerate launch --num_processes N training/train_clip.py --dataset_name builtin:cartoon-faces ...
CPU (`accelerate launch --num_processes 2` alone starts ONE process on a machine without GPUs; docs/training.md):
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision bf16 --dynamo_backend no training/train_clip.py --dataset_name builtin:cartoon-faces ...

The text tower has the shape of --config's `text_encoder` and `tokenizer` sections (the JSON train_unet.py reads as
--unet_config), its tokenizer is trained on the data set's captions, and the image tower is a small ViT
(`CLIPVisionModel`) on the --resolution images. Writes <output_dir> in the layout of a Hub CLIP repository
(`CLIPModel` weights + config and the tokenizer files at the root, like `openai/clip-vit-base-patch32`),
clip_metrics.json (held-out retrieval accuracy; on cartoon faces also zero-shot attribute accuracy),
checkpoint-<step> folders (resume with --resume_from_checkpoint latest) and a README.md model card.
"""

import argparse
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
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

from sdscratch import default_text_encoder_config
from sdscratch import training_utils as tu
from sdscratch.data import ATTRIBUTES, attribute_probe

logger = get_logger(__name__, log_level="INFO")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "cartoon-faces.json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tu.add_data_args(parser)
    tu.add_optimization_args(parser, learning_rate=1e-3)
    tu.add_output_args(parser, output_dir="outputs/clip", tracker_project_name="train_clip")
    group = parser.add_argument_group("CLIP")
    group.add_argument(
        "--config", type=str, default=DEFAULT_CONFIG, help="train_unet.py's JSON: its text_encoder + tokenizer."
    )
    group.add_argument("--vision_patch_size", type=int, default=8, help="ViT patch size (divides --resolution).")
    group.add_argument("--vision_hidden_size", type=int, default=None, help="Default: the text encoder's width.")
    group.add_argument("--vision_num_hidden_layers", type=int, default=4)
    group.add_argument("--vision_head_dim", type=int, default=64, help="Width of each attention head.")
    group.add_argument("--num_validation_images", type=int, default=512, help="Held out: retrieval, zero-shot.")
    args = parser.parse_args(argv)
    args.command = tu.redacted_command("training/train_clip.py", sys.argv[1:] if argv is None else argv)
    tu.check_common_args(args)
    if args.train_batch_size < 2:  # one pair per batch: the contrastive loss is 0, nothing would train
        raise ValueError(
            f"--train_batch_size must be >= 2 for the contrastive loss (each image's negatives are the rest of its "
            f"batch), got {args.train_batch_size}."
        )
    if args.vision_patch_size < 1 or args.resolution % args.vision_patch_size:
        raise ValueError(
            f"--vision_patch_size must divide --resolution {args.resolution}, got {args.vision_patch_size}."
        )
    for flag in ("vision_num_hidden_layers", "vision_head_dim"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}.")
    if args.vision_hidden_size is not None and args.vision_hidden_size < 1:
        raise ValueError(
            f"--vision_hidden_size must be >= 1 (or left out: the text encoder's width), got {args.vision_hidden_size}."
        )
    tu.check_num_validation_images(args, 2)
    return args


def load_config(path: str) -> dict:
    """The `text_encoder` and `tokenizer` sections of a train_unet.py --unet_config JSON (checked as train_unet.py
    checks them: unknown sections or keys are named before any data is loaded)."""
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    unknown = set(config) - {"unet", "text_encoder", "tokenizer", "scheduler", "description"}
    if unknown:
        raise ValueError(f"--config {path}: unknown sections {sorted(unknown)}.")
    config = {key: dict(config.get(key, {})) for key in ("text_encoder", "tokenizer")}
    tu.check_text_config(config, f"--config {path}")
    return config


def vision_width(args, config: dict) -> int:
    """The ViT's width: --vision_hidden_size, else the text tower's (known from the config alone, before any data);
    --vision_head_dim must divide it."""
    width = args.vision_hidden_size or default_text_encoder_config(16, **config["text_encoder"]).hidden_size
    if width % args.vision_head_dim:
        raise ValueError(f"--vision_head_dim {args.vision_head_dim} must divide the ViT width {width}.")
    return width


def build_clip(args, config: dict, tokenizer) -> CLIPModel:
    """A `CLIPModel`: the text tower as train_unet.py would build it, a small ViT as the image tower."""
    text_config = default_text_encoder_config(
        len(tokenizer), max_position_embeddings=tokenizer.model_max_length, **config["text_encoder"]
    )
    width = vision_width(args, config)
    vision_config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=args.vision_num_hidden_layers,
        num_attention_heads=width // args.vision_head_dim,
        image_size=args.resolution,
        patch_size=args.vision_patch_size,
        num_channels=3,
        projection_dim=text_config.projection_dim,
    )
    clip_config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=text_config.projection_dim,
    )
    return CLIPModel(clip_config)


def contrastive_loss(logits_per_image: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, where all pairs with the same caption are positives: a template caption
    names a few attributes, so many images of a batch share it, and none of them is a wrong answer."""
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)  # symmetric: the same targets in both directions
    logits = logits_per_image.float()
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def tokenize(tokenizer, texts: list) -> torch.Tensor:
    """`(len(texts), model_max_length)` input ids, padded as CartoonFacePipeline pads prompts."""
    return tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def embed(model: CLIPModel, input_ids=None, pixel_values=None, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text (`input_ids`) or image (`pixel_values`) embeddings, in batches."""
    inputs = input_ids if input_ids is not None else pixel_values
    outputs = []
    for chunk in inputs.split(batch_size):
        chunk = chunk.to(model.device)
        features = model.get_text_features(chunk) if input_ids is not None else model.get_image_features(chunk)
        features = getattr(features, "pooler_output", features)  # transformers 5 may return an output object
        outputs.append(F.normalize(features.float(), dim=-1))
    return torch.cat(outputs)


@torch.no_grad()
def evaluate_clip(model: CLIPModel, tokenizer, images: torch.Tensor, captions: list, attributes=None) -> dict:
    """Held-out metrics: top-1 retrieval accuracy in both directions among the held-out pairs (a caption shared by
    several images counts as right for each of them), and with `attributes` (cartoon faces: one dict per image)
    the zero-shot accuracy per attribute: the image's nearest among the prompts that name each value of the
    attribute alone (`attribute_caption`)."""
    was_training = model.training
    model.eval()

    image_embeds = embed(model, pixel_values=images)
    text_embeds = embed(model, input_ids=tokenize(tokenizer, captions))
    similarity = image_embeds @ text_embeds.t()
    index = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([index[caption] for caption in captions])
    same = caption_ids[:, None] == caption_ids[None, :]
    rows = torch.arange(len(captions))
    metrics = {
        "num_images": len(captions),
        "image_to_text_top1": same[rows, similarity.argmax(dim=1)].float().mean().item(),
        "text_to_image_top1": same[similarity.argmax(dim=0), rows].float().mean().item(),
    }
    if attributes is not None:
        probes = {}  # (attribute, image index) -> (values, prompts); the prompts repeat a lot: embed each once
        for name in ATTRIBUTES:
            for index, face in enumerate(attributes):
                if name == "glasses_color" and face["glasses"] == "none":
                    continue  # no frames to colour
                if name == "eye_color" and face["glasses"] == "sunglasses":
                    continue  # hidden
                probes[name, index] = attribute_probe(face, name)
        unique = sorted({prompt for _, prompts in probes.values() for prompt in prompts})
        prompt_embeds = dict(zip(unique, embed(model, input_ids=tokenize(tokenizer, unique))))
        hits = {name: [] for name in ATTRIBUTES}
        for (name, index), (candidates, prompts) in probes.items():
            scores = torch.stack([prompt_embeds[prompt] for prompt in prompts]) @ image_embeds[index]
            hits[name].append(candidates[scores.argmax().item()] == attributes[index][name])
        metrics.update({f"zero_shot_{name}": sum(h) / max(len(h), 1) for name, h in hits.items()})
    model.train(was_training)
    return metrics


def main(args):
    accelerator = tu.make_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    # as diffusers does: create the Hub repo first, so that a logged-out / offline run fails before any work
    repo_id = tu.create_hub_repo(args) if args.push_to_hub and accelerator.is_main_process else None
    set_seed(args.seed)  # same initial weights on every process
    resume_path = tu.resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    tu.check_resume_ema(resume_path, ["clip"], args.use_ema)
    clock = tu.TrainingClock(resume_path)
    config = load_config(args.config)
    vision_width(args, config)  # a bad --vision_head_dim stops here, not after the images are decoded

    # ---- data: every image decoded once (the tensors stay in memory); the last ones held out ----
    dataset = tu.load_train_dataset(args)
    captions = list(dataset["text"])
    num_holdout = min(args.num_validation_images, len(dataset) // 2)
    num_train = len(dataset) - num_holdout
    tu.check_enough_training_images(num_train, args.train_batch_size, accelerator.num_processes, num_holdout)
    transform = tu.image_transform(args, accelerator.process_index)
    logger.info(f"Decoding {len(dataset)} images...")
    crop_watch = tu.RandomCropWatch(transform, args.resolution, args.center_crop)
    images = torch.stack([crop_watch(image) for image in dataset["image"]])
    crop_watch.warn(len(dataset), "train_clip.py decodes every image once", "--center_crop, or square images")
    holdout_attributes = None
    if all(name in dataset.column_names for name in ATTRIBUTES):  # cartoon faces: zero-shot attribute probes
        rows = dataset.select(range(num_train, len(dataset)))
        holdout_attributes = [{name: rows[name][i] for name in ATTRIBUTES} for i in range(num_holdout)]

    # ---- tokenizer (as train_unet.py builds it: on every caption), CLIP, caption ids for the loss ----
    caption_lists = tu.image_caption_lists(dataset)  # several per image: one is drawn each time the image is used
    captions_seen = [caption for image_captions in caption_lists for caption in image_captions]
    tokenizer = tu.build_or_resume_tokenizer(captions_seen, resume_path, **config["tokenizer"])
    model = build_clip(args, config, tokenizer)
    unique_captions, caption_rows, caption_counts = tu.caption_table(caption_lists)
    input_ids = tu.tokenize_captions(tokenizer, unique_captions, "--config")  # (U, L): image i's: caption_rows[i]
    if args.gradient_checkpointing:
        tu.enable_transformers_checkpointing(model)
    tu.check_checkpoints_compatible(args.output_dir, {"clip": model}, resume_path)
    ema = tu.make_ema(model, args.ema_decay, accelerator.device) if args.use_ema else None
    tu.register_checkpoint_hooks(accelerator, {"clip": model}, {"clip": ema} if args.use_ema else None)

    train_dataloader = torch.utils.data.DataLoader(
        torch.arange(num_train),
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),  # keeps the global RNG (saved in checkpoints) untouched
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_num_workers > 0,  # kept: a "spawn" worker (macOS, Windows) starts slowly
    )
    train_dataloader = accelerator.prepare(train_dataloader)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    optimizer, lr_scheduler = tu.make_optimizer_and_scheduler(
        args, model.parameters(), accelerator, num_update_steps_per_epoch
    )
    model_ddp, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    tu.seed_each_process(accelerator, args.seed)  # each process its own flips and caption draws
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, tu.tracker_config(args))

    global_step, first_epoch, skip_batches = 0, 0, 0
    if resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {resume_path}")
        global_step = tu.resume_state(accelerator, lr_scheduler, resume_path, args.steps_from_epochs)
        first_epoch = global_step // num_update_steps_per_epoch
        skip_batches = (global_step % num_update_steps_per_epoch) * args.gradient_accumulation_steps

    if global_step >= args.max_train_steps:  # a finished run started again: no step left to take
        if tu.end_if_finished(accelerator, args, resume_path, global_step, repo_id):  # uploads with --push_to_hub
            return model
        first_epoch = args.num_train_epochs  # interrupted before its final save: write it, without a step
    tu.remove_finished_card(accelerator, args.output_dir)  # written again last, once this run is finished

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"{num_train} training images ({len({c for cs in caption_lists[:num_train] for c in cs})} distinct captions), "
        f"{num_holdout} held out; "
        f"{args.max_train_steps} steps of {total_batch_size}; vocabulary {len(tokenizer)}"
    )
    holdout = (images[num_train:], captions[num_train:], holdout_attributes)

    def validate(step):
        if args.use_ema:
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
        metrics = evaluate_clip(model, tokenizer, *holdout)
        if args.use_ema:
            ema.restore(model.parameters())
        accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
        accelerator.print(
            f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "num_images")
        )
        return metrics

    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    run_start, run_steps = time.time(), 0
    step_loss = tu.MicroBatchMean()  # the logged loss: the mean over the step's accumulated micro-batches
    for epoch in range(first_epoch, args.num_train_epochs):
        model_ddp.train()
        train_dataloader.set_epoch(epoch)
        # a loader that skips batches starts its own workers: only for a run resumed mid-epoch (0 after its first)
        batches = skip_first_batches(train_dataloader, skip_batches) if skip_batches else train_dataloader
        for indices in batches:
            indices = indices.cpu()
            with accelerator.accumulate(model_ddp):
                pixel_values = images[indices].to(accelerator.device)
                if args.random_flip:  # here, so that the RNG state saved in checkpoints covers it
                    flip = torch.rand(pixel_values.shape[0], device=pixel_values.device) < 0.5
                    pixel_values = torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)
                rows = tu.draw_caption_rows(caption_rows, caption_counts, indices)
                outputs = model_ddp(input_ids=input_ids[rows].to(accelerator.device), pixel_values=pixel_values)
                loss = contrastive_loss(outputs.logits_per_image, rows.to(accelerator.device))
                accelerator.backward(loss)
                step_loss.add(loss=accelerator.gather(loss.detach()).mean().item())
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model_ddp.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
                with torch.no_grad():  # CLIP clamps its learnable temperature at 100
                    model.logit_scale.clamp_(0, math.log(100))

            if accelerator.sync_gradients:
                if args.use_ema:
                    ema.step(model.parameters())
                global_step += 1
                run_steps += 1
                logs = {
                    **step_loss.pop(),
                    "logit_scale": model.logit_scale.exp().item(),
                    "lr": lr_scheduler.get_last_lr()[0],
                    "samples_per_s": run_steps * total_batch_size / (time.time() - run_start),
                }
                progress_bar.update(1)
                progress_bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_per_s=f"{logs['samples_per_s']:.1f}")
                accelerator.log(logs, step=global_step)
                if tu.is_checkpoint_step(global_step, args):
                    tu.save_checkpoint(
                        accelerator, args.output_dir, global_step, args.checkpoints_total_limit, clock, tokenizer
                    )
                if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                    validate(global_step)
            if global_step >= args.max_train_steps:
                break
        skip_batches = 0

    # ---- save: the Hub CLIP layout at the root of output_dir, metrics, card ----
    accelerator.wait_for_everyone()
    tu.write_rank_digest(accelerator, {"clip": model})
    if accelerator.is_main_process:
        if args.use_ema:
            ema.copy_to(model.parameters())
        model.eval()
        metrics = evaluate_clip(model, tokenizer, *holdout)
        model.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, "clip_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
        accelerator.print("held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "num_images"))
        body = tu.training_card_body(
            f"A small CLIP trained from scratch (sdscratch) on `{args.dataset_name or args.train_data_dir}`: a "
            f"{model.config.text_config.num_hidden_layers}-layer, {model.config.text_config.hidden_size}-wide text "
            f"encoder with a {len(tokenizer)}-token vocabulary and a {model.config.vision_config.num_hidden_layers}-"
            f"layer ViT on {args.resolution}x{args.resolution} images (patches of {args.vision_patch_size}), "
            "contrastive loss. Its text encoder conditions a UNet frozen, as in Stable Diffusion: "
            "`train_unet.py --pretrained_text_encoder <this folder>`.",
            "from sdscratch import load_text_components\n"
            f'tokenizer, text_encoder = load_text_components("{tu.model_reference(args, repo_id)}")',
            args,
            global_step,
            clock.describe(),
            tu.describe_hardware(accelerator),
            metrics,
            None,
            num_processes=accelerator.num_processes,
        )
        # a transformers CLIPModel folder: the Hub's "use this model" must say transformers, not diffusers
        tu.write_model_card(
            args.output_dir,
            "CLIP (sdscratch)",
            body,
            args.dataset_name,
            ["sdscratch", "clip"],
            library_name="transformers",
        )
        if args.push_to_hub:
            tu.push_folder_to_hub(args.output_dir, repo_id, args.hub_token, args.logging_dir)
    accelerator.end_training()
    return model


if __name__ == "__main__":
    main(parse_args())
