"""Sampling speed: CartoonFacePipeline vs a diffusers StableDiffusionPipeline assembled from parts of the same size.

    python benchmarks/bench_pipeline.py                 # sizes default + trained, about 2 minutes on a quiet machine
    python benchmarks/bench_pipeline.py --sizes trained     # the 1.5 s target: the shipped model
    python benchmarks/bench_pipeline.py --sizes trained --steps 15  # the examples' default step count

Task: 8 images of 64x64 from one prompt, 25 DPM-Solver++ steps (`--steps`) with classifier-free guidance (one batched UNet
call of 16 per step), numpy output. Both pipelines share the tokenizer, the text encoder weights, the scheduler
config and the prompt; the diffusers side gets a UNet2DConditionModel with the same levels, channels, layers,
cross-attention levels and head width as the SmallUNet, and an AutoencoderKL with the same levels as the
SmallVAE. Sizes: "default" = SmallUNet() (10M), "shipped" = training/configs/cartoon-faces.json (the UNet that
train_unet.py trains), "trained" = the shipped model itself (`sdscratch.pretrained("cartoon-faces")`, its trained
weights loaded by `from_pretrained`; the diffusers side is built like "shipped"). Precisions: fp32, and bf16 weights (`pipe.to(torch.bfloat16)`, no autocast). Clocks: wall
time with 2 threads (what a user sees; best of 2) and, for bf16, CPU time of one thread (steady under load).
"default" and "shipped" use untrained weights (speed does not depend on them); "img diff" is the mean |bf16 - fp32| pixel difference (0-255)
of the same pipeline's images, a closeness check of the bf16 path.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np
import torch
from bench_models import diffusers_unet_like, diffusers_vae_like
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

import sdscratch
from sdscratch import CartoonFacePipeline, SmallUNet, SmallVAE, build_text_encoder, build_tokenizer
from sdscratch._cpu import load_average_text
from sdscratch.data.cartoon_faces import cartoon_faces_dataset
from sdscratch.pipelines.pipeline_utils import default_scheduler_config

SHIPPED_CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "cartoon-faces.json")
SIZES = ("default", "shipped", "trained")
PROMPT = "Cartoon face with glasses, without facial hair, black hair and with white skin"
NUM_IMAGES, STEPS, GUIDANCE = 8, 25, 7.5


def build_pipelines(size: str):
    """-> (ours, theirs) in float32 with the same text encoder, tokenizer and scheduler."""
    with open(SHIPPED_CONFIG) as f:
        shipped = json.load(f)
    scheduler = DPMSolverMultistepScheduler.from_config(
        default_scheduler_config(**shipped["scheduler"]), algorithm_type="dpmsolver++"
    )
    if size == "trained":  # the shipped pipeline, trained weights and all, with the same scheduler
        trained = CartoonFacePipeline.from_pretrained(sdscratch.pretrained("cartoon-faces"))
        tokenizer, text_encoder, unet, vae = trained.tokenizer, trained.text_encoder, trained.unet, trained.vae
    else:
        tokenizer = build_tokenizer(cartoon_faces_dataset(300)["text"], **shipped["tokenizer"])
        torch.manual_seed(0)
        text_encoder = build_text_encoder(tokenizer, **shipped["text_encoder"]).eval()
        unet_kwargs = shipped["unet"] if size == "shipped" else {}
        unet = SmallUNet(**unet_kwargs, cross_attention_dim=text_encoder.config.hidden_size).eval()
        vae = SmallVAE().eval()
    ours = CartoonFacePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    theirs = StableDiffusionPipeline(
        vae=diffusers_vae_like(vae).eval(),
        text_encoder=copy.deepcopy(text_encoder),
        tokenizer=tokenizer,
        unet=diffusers_unet_like(unet).eval(),
        scheduler=copy.deepcopy(scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def sample(pipe, steps: int = STEPS) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    images = pipe(
        PROMPT,
        height=64,
        width=64,
        num_images_per_prompt=NUM_IMAGES,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE,
        generator=generator,
        output_type="np",
    ).images
    return np.asarray(images, dtype=np.float32) * 255


def timed(pipe, clock, threads: int, repeats: int, steps: int = STEPS) -> tuple[float, np.ndarray]:
    """-> (best time in s, the images of the last run)."""
    torch.set_num_threads(threads)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        images = sample(pipe, steps=steps)
        best = min(best, clock() - start)
    return best, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["default", "trained"], choices=SIZES)
    parser.add_argument("--steps", type=int, default=STEPS, help="DPM-Solver++ steps per image (default: 25)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    start, load_start = time.perf_counter(), load_average_text()
    rows = []
    for size in args.sizes:
        ours, theirs = build_pipelines(size)
        params = sum(p.numel() for p in ours.unet.parameters()) / 1e6
        their_params = sum(p.numel() for p in theirs.unet.parameters()) / 1e6
        for name, pipe, unet_params in (
            ("CartoonFacePipeline", ours, params),
            ("StableDiffusionPipeline", theirs, their_params),
        ):
            reference = None
            for precision in ("fp32", "bf16"):
                pipe = pipe.to(torch.float32 if precision == "fp32" else torch.bfloat16)
                torch.set_num_threads(2)
                sample(pipe, steps=2)  # warm-up: oneDNN builds its kernels
                wall, images = timed(pipe, time.perf_counter, threads=2, repeats=2, steps=args.steps)
                cpu = timed(pipe, time.process_time, 1, 1, args.steps)[0] if precision == "bf16" else None
                if reference is None:
                    reference = images
                diff = float(np.abs(images - reference).mean())
                rows.append((size, name, unet_params, precision, wall, cpu, diff))
            print(f"  {size} {name} measured", flush=True)

    print(
        f"load average at start / end: {load_start} / {load_average_text()} (2 cores); torch {torch.__version__}; "
        f"{args.steps} DPM-Solver++ steps"
    )
    print(
        "| UNet size | pipeline | UNet params (M) | precision | 8 images wall s (2 thr) | images/s "
        "| CPU s (1 thr) | img diff vs fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, name, p, precision, wall, cpu, diff in rows:
        cpu_text = "-" if cpu is None else f"{cpu:.2f}"
        print(
            f"| {size} | {name} | {p:.1f} | {precision} | {wall:.2f} | {NUM_IMAGES / wall:.1f} | {cpu_text} | {diff:.1f} |"
        )
    for size in args.sizes:
        best = {
            name: min((r for r in rows if r[0] == size and r[1] == name), key=lambda r: r[4])
            for name in ("CartoonFacePipeline", "StableDiffusionPipeline")
        }
        a, b = best["CartoonFacePipeline"], best["StableDiffusionPipeline"]
        print(
            f"{size}: CartoonFacePipeline / StableDiffusionPipeline images/s, each in its best precision "
            f"(wall, 2 threads): {b[4] / a[4]:.2f}x ({a[3]} vs {b[3]}); ours {a[4]:.2f} s for 8 images"
        )
    print(f"total run {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
