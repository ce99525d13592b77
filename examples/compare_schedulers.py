"""One prompt, one seed, every scheduler: a grid with one column per scheduler, labelled with the time it took.

    python examples/compare_schedulers.py
    python examples/compare_schedulers.py --steps 10 --schedulers dpm++,euler,heun,ddim --output schedulers.png
    python examples/compare_schedulers.py --model_path path/to/pipeline   # a trained pipeline folder

Every scheduler is built with `from_config` on the pipeline's own scheduler config, so they all sample the
schedule the model was trained on. Second-order schedulers (Heun, KDPM2) call the UNet about twice per step:
the table's "UNet calls" column shows it. A scheduler that cannot run here (DPMSolverSDEScheduler without
`torchsde`; a class outside the DDPM family's `compatibles`, e.g. FlowMatchEulerDiscreteScheduler, which the
registry refuses) gets a row saying why and no column. Without shipped weights or --model_path the pipeline is a
tiny random one (a NOTICE says so) and the images are noise: the timings still compare the samplers.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402

from PIL import Image, ImageDraw  # noqa: E402

DEFAULT_PROMPT = "Cartoon face with glasses, without facial hair, black hair and with white skin"


def labelled(image: Image.Image, lines: list[str], width: int = 128) -> Image.Image:
    """`image` scaled (nearest) to `width` pixels wide, with `lines` of text in a strip below it."""
    scale = max(1, width // image.width)
    image = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    tile = Image.new("RGB", (image.width, image.height + 12 * len(lines) + 4), (255, 255, 255))
    tile.paste(image, (0, 0))
    draw = ImageDraw.Draw(tile)
    for i, line in enumerate(lines):
        draw.text((2, image.height + 2 + 12 * i), line, fill=(0, 0, 0))
    return tile


def main(argv=None) -> str:
    from sdscratch.schedulers.registry import SCHEDULER_ALIASES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--schedulers", default=",".join(SCHEDULER_ALIASES),
                        help="comma-separated short names (see sdscratch.schedulers.registry) or diffusers class names")  # fmt: skip
    parser.add_argument("--output", default="compare_schedulers.png")
    parser.add_argument("--model_path", default=None, help="a pipeline folder or Hub id (default: the shipped model)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")

    import torch

    from sdscratch.demo import check_output_path, check_seed, load_pipeline, make_grid, save_atomic
    from sdscratch.schedulers.registry import get_scheduler

    check_output_path(args.output)  # before any sampling
    check_seed(args.seed)
    pipe = load_pipeline(args.model_path, name="cartoon-faces")
    base_config = pipe.scheduler.config
    unet_calls = []
    pipe.unet.register_forward_pre_hook(lambda module, inputs: unet_calls.append(1))
    pipe(args.prompt, num_inference_steps=1)  # warm-up, so the first scheduler's time is not the one-off setup

    rows, tiles = [], []
    for name in [n.strip() for n in args.schedulers.split(",") if n.strip()]:
        unet_calls.clear()
        try:  # only building the scheduler may fail here (torchsde missing, not a DDPM-family class)
            pipe.scheduler = get_scheduler(name, base_config)
        except (ImportError, ValueError) as error:  # a row saying why; an error while sampling is a real one
            rows.append((name, "-", "-", "-", f"skipped: {str(error).strip().splitlines()[0][:90]}"))
            continue
        start = time.perf_counter()
        image = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                     generator=torch.Generator().manual_seed(args.seed)).images[0]  # fmt: skip
        seconds = time.perf_counter() - start
        rows.append((name, type(pipe.scheduler).__name__, str(len(unet_calls)), f"{seconds:.2f}", ""))
        tiles.append(labelled(image, [name, f"{seconds:.2f} s"]))

    header = ("scheduler", "class", "UNet calls", "seconds", "note")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print(f"prompt: {args.prompt!r}, seed {args.seed}, {args.steps} steps, guidance {args.guidance_scale}")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + ("  " + row[4] if row[4] else ""))
    if not tiles:
        raise SystemExit("no scheduler produced an image")
    path = save_atomic(make_grid(tiles, cols=len(tiles)), args.output)
    print(f"wrote {path} ({len(tiles)} schedulers) in {time.perf_counter() - START:.1f} s")
    return path


if __name__ == "__main__":
    main()
