"""Handwritten digits from a prompt, as the MNIST seed's `generate.py --prompt 8` did.

    python examples/digits.py --prompt 8 --output eights.png
    python examples/digits.py --prompt eight --scheduler euler-maruyama --steps 50 --output eights_em.png

Uses the digits model shipped inside the package (`sdscratch.pretrained("digits")`: text-conditioned, trained on
scikit-learn's real 8x8 digits upscaled to 16x16) unless `--model_path` is given. Digits are tiny, so the grid is
enlarged `--scale` times (nearest neighbour, pixels stay sharp).
"""

import time

START = time.perf_counter()  # the wall time reported includes the imports below

import argparse  # noqa: E402
import gc  # noqa: E402


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--prompt",
        default=None,
        help='a digit: "8", "eight", ... (default: "8"; for a --model_path folder, the first validation prompt its '
        "model card names, as `sdscratch generate`)",
    )
    parser.add_argument("--num_images", type=int, default=16)
    parser.add_argument(
        "--steps",
        type=int,
        default=15,
        help="denoising steps (default 15: DPM-Solver++ and UniPC reach the 25-step adherence on the shipped "
        "models, docs/evaluation.md; ddpm, ddim and the ancestral samplers want more)",
    )
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--scheduler", default="dpm++", help="dpm++, euler-maruyama, ddim, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=4, help="enlarge the grid this many times")
    parser.add_argument("--output", default="digits.png")
    parser.add_argument("--model_path", default=None, help="a pipeline folder or Hub id (default: the shipped model)")
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.scale < 1 or args.steps < 1:  # before the model loads
        raise SystemExit("--num_images, --scale and --steps must be at least 1")

    import torch
    from PIL import Image

    from sdscratch.demo import (
        card_validation_prompt,
        check_output_path,
        check_seed,
        load_pipeline,
        make_grid,
        save_atomic,
    )

    check_output_path(args.output)
    check_seed(args.seed, args.num_images)

    pipe = load_pipeline(args.model_path, name="digits", scheduler=args.scheduler)
    prompt = args.prompt
    if prompt is None:  # a folder of your own: the first prompt its training run validated with, when its card says
        prompt = (args.model_path and card_validation_prompt(pipe.name_or_path)) or "8"
    images = pipe(
        prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        num_images_per_prompt=args.num_images,
        generator=[torch.Generator().manual_seed(args.seed + i) for i in range(args.num_images)],
    ).images

    grid = make_grid(images, pad=1)
    grid = grid.resize((grid.width * args.scale, grid.height * args.scale), Image.Resampling.NEAREST)
    path = save_atomic(grid, args.output)
    print(f"wrote {path} ({args.num_images} digits for {prompt!r}) in {time.perf_counter() - START:.1f} s")
    return path


if __name__ == "__main__":
    main()
    # exempt every object from the collections the interpreter's exit runs: with torch and diffusers loaded they
    # take ~1 s after the image is written (measured); atexit handlers and flushing still run
    gc.freeze()
