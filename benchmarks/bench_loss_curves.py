"""Equal-steps quality check: SmallUNet vs UNet2DConditionModel trained on the same cached latents.

    python benchmarks/bench_loss_curves.py                       # 120 steps of batch 32, about 2.5 minutes
    python benchmarks/bench_loss_curves.py --steps 600 --out docs/loss_curves.png
    python benchmarks/bench_loss_curves.py --vae sdscratch/pretrained/cartoon-faces/vae --steps 400 \
        --unet_kwargs '{}' '{"skip_connection": "add"}'      # several SmallUNet designs in one run

Every UNet sees exactly the same batches, noise, timesteps and caption embeddings, in the precision each trains
in best here (bf16 autocast), with AdamW at the same learning rate. Data: built-in cartoon faces (64x64) encoded
once into 16x16x4 latents by a frozen SmallVAE (a trained one with --vae, else a seeded random one: its latents
are a fixed smooth function of the image, which is all an equal-footing comparison needs), scaled to unit std.
Captions become (B, 16, 256) embeddings through a frozen random word-embedding table (a stand-in text encoder
that both models share). Prints one table (train loss over the last 20% of steps, held-out loss on a fixed
noised batch) and writes the curves as a PNG.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image, ImageDraw

from sdscratch import SmallUNet, SmallVAE
from sdscratch._cpu import load_average_text
from sdscratch.data.cartoon_faces import cartoon_faces_dataset

TEXT_LEN, TEXT_DIM = 16, 256


def build_data(num_images: int, vae_path: str | None, seed: int = 0):
    """-> latents (N, 4, 16, 16) with unit std, caption embeddings (N, 16, 256)."""
    dataset = cartoon_faces_dataset(num_images, size=64, seed=seed)
    pixels = torch.stack([torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1) for img in dataset["image"]])
    pixels = pixels.float() / 127.5 - 1.0  # (N, 3, 64, 64) in [-1, 1]
    torch.manual_seed(seed)
    vae = SmallVAE.from_pretrained(vae_path) if vae_path else SmallVAE()
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(128)])
    latents = latents / latents.std()
    # frozen stand-in text encoder: word -> fixed random vector, padded / cut to TEXT_LEN tokens
    words = sorted({w for text in dataset["text"] for w in text.lower().replace(",", " ").split()})
    table = torch.randn(len(words) + 1, TEXT_DIM, generator=torch.Generator().manual_seed(seed))
    index = {w: i + 1 for i, w in enumerate(words)}
    ids = torch.zeros(num_images, TEXT_LEN, dtype=torch.long)
    for row, text in enumerate(dataset["text"]):
        tokens = [index[w] for w in text.lower().replace(",", " ").split()][:TEXT_LEN]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return latents, table[ids]


def reference_unet():
    """The diffusers design issue 7 compares against (see bench_models.py)."""
    from bench_models import diffusers_reference

    return diffusers_reference()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_images", type=int, default=1280, help="The last --num_held_out are held out.")
    parser.add_argument(
        "--num_held_out", type=int, default=256, help="Held-out latents: the held-out loss averages this many."
    )
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--vae", type=str, default=None, help="A trained SmallVAE folder (default: seeded random).")
    parser.add_argument("--out", type=str, default="loss_curves.png")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--unet_kwargs", type=str, nargs="+", default=["{}"],
        help="SmallUNet config overrides, JSON; several = several SmallUNets, each trained on the same batches.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for flag in ("steps", "batch_size", "threads"):
        if getattr(args, flag) < 1:
            raise ValueError(f"`--{flag}` must be >= 1, got {getattr(args, flag)}.")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    designs = [json.loads(kwargs) for kwargs in args.unet_kwargs]  # bad JSON fails before any work
    if args.num_held_out < 1 or args.num_images < args.num_held_out + args.batch_size:
        raise ValueError(
            f"`--num_images` must be at least --num_held_out + --batch_size = {args.num_held_out + args.batch_size} "
            f"and `--num_held_out` at least 1, got {args.num_images} and {args.num_held_out}."
        )
    contenders = {}
    for kwargs in designs:
        torch.manual_seed(0)
        contenders["SmallUNet" + (f" {json.dumps(kwargs)}" if kwargs else "")] = SmallUNet(**kwargs)
    torch.manual_seed(0)
    contenders["UNet2DConditionModel"] = reference_unet()

    latents, text = build_data(args.num_images, args.vae)  # seeds itself: the models' draws are unaffected
    held_out = slice(args.num_images - args.num_held_out, args.num_images)  # never trained on
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(1)
    eval_noise = torch.randn(args.num_held_out, 4, 16, 16, generator=g)
    eval_t = torch.randint(0, 1000, (args.num_held_out,), generator=g)
    eval_x = scheduler.add_noise(latents[held_out], eval_noise, eval_t)

    torch.manual_seed(0)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=args.learning_rate) for k, m in contenders.items()}
    curves = {k: [] for k in contenders}
    seconds = dict.fromkeys(contenders, 0.0)
    for _ in range(args.steps):
        # one batch for both: rows, noise, timesteps (forward diffusion x_t = sqrt(a) x_0 + sqrt(1 - a) eps)
        rows = torch.randint(0, args.num_images - args.num_held_out, (args.batch_size,), generator=g)
        noise = torch.randn(args.batch_size, 4, 16, 16, generator=g)
        timesteps = torch.randint(0, 1000, (args.batch_size,), generator=g)
        noisy = scheduler.add_noise(latents[rows], noise, timesteps)
        for name, model in contenders.items():
            tick = time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pred = model(noisy, timesteps, text[rows]).sample
            loss = F.mse_loss(pred.float(), noise)  # predict the noise
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            seconds[name] += time.process_time() - tick
            curves[name].append(loss.item())

    rows_out = []
    for name, model in contenders.items():
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            held = F.mse_loss(model(eval_x, eval_t, text[held_out]).sample.float(), eval_noise).item()
        tail = curves[name][-max(1, args.steps // 5) :]
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows_out.append((name, params, sum(tail) / len(tail), held, seconds[name]))
    print(
        f"{args.steps} steps of batch {args.batch_size}, lr {args.learning_rate}, bf16 autocast, "
        f"{args.threads} threads, load {load_average_text()}"
    )
    print(
        f"| model | params (M) | train loss, last 20% of steps | held-out loss ({args.num_held_out} fixed noised latents) "
        "| CPU s |"
    )
    print("|---|---|---|---|---|")
    for name, params, tail, held, secs in rows_out:
        print(f"| {name} | {params:.2f} | {tail:.4f} | {held:.4f} | {secs:.0f} |")
    draw_curves(curves, args.out)
    print(f"curves -> {args.out}; total {time.perf_counter() - start:.0f} s")


CURVE_COLORS = ("red", "blue", "green", "orange", "purple", "brown", "magenta", "teal", "olive", "navy")


def draw_curves(curves: dict[str, list[float]], path: str, size=(640, 360), window: int = 10) -> None:
    """Moving-average loss curves as a PNG (PIL only: no plotting dependency).

    Every curve is drawn, however many `--unet_kwargs` designs there are: the colours (`CURVE_COLORS`) repeat
    after the tenth, and each curve keeps its own legend line.
    """
    smooth = {
        k: [sum(v[max(0, i - window + 1) : i + 1]) / len(v[max(0, i - window + 1) : i + 1]) for i in range(len(v))]
        for k, v in curves.items()
    }
    values = [x for v in smooth.values() for x in v]
    low, high = min(values), max(values)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    margin = 40
    width, height = size[0] - 2 * margin, size[1] - 2 * margin
    draw.rectangle([margin, margin, margin + width, margin + height], outline="black")
    for row, (color, (name, curve)) in enumerate(zip(itertools.cycle(CURVE_COLORS), smooth.items())):
        points = [
            (margin + width * i / max(1, len(curve) - 1), margin + height * (high - y) / max(high - low, 1e-9))
            for i, y in enumerate(curve)
        ]
        draw.line(points, fill=color, width=2)
        draw.text((margin + 10, margin + 10 + 14 * row), f"{name}", fill=color)
    draw.text((margin, size[1] - margin + 8), f"steps 0..{len(next(iter(curves.values())))}", fill="black")
    draw.text((margin, 8), f"train loss (moving average of {window}): {low:.3f} .. {high:.3f}", fill="black")
    image.save(path)


if __name__ == "__main__":
    main()
