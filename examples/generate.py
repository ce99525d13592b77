"""Text-to-image: a PNG grid of cartoon faces for one prompt, offline, on CPU, in seconds.

    python examples/generate.py --prompt "Cartoon face with glasses, without facial hair, black hair and with white skin" --output faces.png
    python examples/generate.py --prompt "a smiling cartoon face with red hair" --num_images 4 --steps 15 --scheduler unipc
    python examples/generate.py --prompt "..." --model_path path/to/your/pipeline  # e.g. training/train_unet.py output

Uses the model shipped inside the package (`sdscratch.pretrained("cartoon-faces")`) unless `--model_path` is
given. Image i of the grid uses seed `--seed + i`, so any single face can be regenerated alone.
"""

import time

START = time.perf_counter()  # the wall time reported includes the imports below

import argparse  # noqa: E402
import gc  # noqa: E402

DEFAULT_PROMPT = "Cartoon face with glasses, without facial hair, black hair and with white skin"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--prompt",
        default=None,
        help="what to draw (default: a cartoon-face prompt; for a --model_path folder, the first validation prompt "
        "its model card names, as `sdscratch generate`)",
    )
    parser.add_argument("--negative_prompt", default=None, help="what to steer away from")
    parser.add_argument("--num_images", type=int, default=8, help="images in the grid")
    parser.add_argument(
        "--steps",
        type=int,
        default=15,
        help="denoising steps (default 15: DPM-Solver++ and UniPC reach the 25-step adherence on the shipped "
        "models, docs/evaluation.md; ddpm, ddim and the ancestral samplers want more)",
    )
    parser.add_argument("--guidance_scale", type=float, default=3.0, help="classifier-free guidance; 1 = off")
    parser.add_argument("--scheduler", default="dpm++", help="dpm++, unipc, ddim, euler, euler-a, heun, ...")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image")
    parser.add_argument("--output", default="out.png", help="PNG to write")
    parser.add_argument("--model_path", default=None, help="a pipeline folder or Hub id (default: the shipped model)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="compute precision; auto = bfloat16 where the CPU has native bf16 matmuls, else float32",
    )
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.num_images < 1 or args.steps < 1:  # before the model loads
        raise SystemExit(f"--num_images and --steps must be at least 1, got {args.num_images} and {args.steps}")

    # heavy imports only now, so that --help is instant
    import torch

    from sdscratch.demo import (
        card_validation_prompt,
        check_output_path,
        check_seed,
        fast_dtype,
        load_pipeline,
        make_grid,
        save_atomic,
    )

    check_output_path(args.output)  # before the model runs: a bad --output fails now, not after generating
    check_seed(args.seed, args.num_images)

    dtype = fast_dtype() if args.dtype == "auto" else getattr(torch, args.dtype)
    pipe = load_pipeline(args.model_path, name="cartoon-faces", scheduler=args.scheduler, dtype=dtype)
    prompt = args.prompt
    if prompt is None:  # a folder of your own: the first prompt its training run validated with, when its card says
        prompt = (args.model_path and card_validation_prompt(pipe.name_or_path)) or DEFAULT_PROMPT
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(args.num_images)]
    images = pipe(
        prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt,
        num_images_per_prompt=args.num_images,
        generator=generators,
    ).images

    path = save_atomic(make_grid(images), args.output)
    width, height = images[0].size
    print(f"wrote {path} ({args.num_images} images of {width}x{height}) in {time.perf_counter() - START:.1f} s")
    return path


if __name__ == "__main__":
    main()
    # exempt every object from the collections the interpreter's exit runs: with torch and diffusers loaded they
    # take ~1 s after the image is written (measured); atexit handlers and flushing still run
    gc.freeze()
