"""The `sdscratch` command (installed with the package): generate with a shipped or trained model, list the shipped
models, write the built-in faces as an imagefolder, evaluate a pipeline.

    sdscratch generate --prompt "a smiling cartoon face with red hair" --output faces.png
    sdscratch generate --model digits --prompt eight --output eights.png
    sdscratch generate --model path/to/pipeline --prompt "..."      # e.g. training/train_unet.py's --output_dir
    sdscratch models                                                 # the shipped models and their folders
    sdscratch faces --output_dir data/faces --num_images 1000        # = sdscratch.data.cartoon_faces.main
    sdscratch evaluate --model_path path/to/pipeline --output_dir eval   # = python -m sdscratch.evaluate

`sdscratch generate` is `examples/generate.py` (and `examples/digits.py` with `--model digits`) as a command: same
flags, same images for the same seed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Optional

from .demo import card_validation_prompt  # the default prompt of a folder (shared with the examples)
from .pretrained import PRETRAINED_MODELS, is_available, pretrained

#: The prompt `sdscratch generate` draws when none is given, per shipped model.
DEFAULT_PROMPTS = {
    "cartoon-faces": "Cartoon face with glasses, without facial hair, black hair and with white skin",
    "digits": "8",
}
#: Images in the grid when `--num_images` is not given (as examples/generate.py and examples/digits.py).
DEFAULT_NUM_IMAGES = {"cartoon-faces": 8, "digits": 16}
#: Nearest-neighbour enlargement of the grid when `--scale` is not given: digits are 16x16 pixels.
DEFAULT_SCALES = {"cartoon-faces": 1, "digits": 4}


def _forward_evaluate(argv: list[str]) -> None:
    from .evaluate import main

    main(argv, prog="sdscratch evaluate")


def _forward_faces(argv: list[str]) -> None:
    from .data.cartoon_faces import main

    main(argv, prog="sdscratch faces")


#: Subcommands that are other modules' command lines, passed their arguments unchanged (their own `--help`).
FORWARDED: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "evaluate": (_forward_evaluate, "evaluate a pipeline (adherence, Frechet distance, grid): sdscratch evaluate -h"),
    "faces": (_forward_faces, "write built-in cartoon faces as an imagefolder: sdscratch faces -h"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdscratch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,models,faces,evaluate}")

    generate = commands.add_parser("generate", help="a PNG grid of images for one prompt")
    generate.add_argument(
        "--model",
        default="cartoon-faces",
        help=f"a shipped model ({', '.join(PRETRAINED_MODELS)}) or a pipeline folder, local or a Hub id "
        "(owner/name; offline: the HF cache) (default: cartoon-faces)",
    )
    generate.add_argument(
        "--prompt",
        default=None,
        help="what to draw (default: an example prompt of a shipped model; for a folder, the first validation "
        "prompt its model card names)",
    )
    generate.add_argument("--negative_prompt", default=None, help="what to steer away from")
    generate.add_argument(
        "--num_images", type=int, default=None, help="images in the grid (default: 16 digits, else 8)"
    )
    generate.add_argument(
        "--steps",
        type=int,
        default=15,
        help="denoising steps (default 15: DPM-Solver++ and UniPC reach the 25-step adherence on the shipped "
        "models, docs/evaluation.md; ddpm, ddim and the ancestral samplers want more)",
    )
    generate.add_argument("--guidance_scale", type=float, default=3.0, help="classifier-free guidance; 1 = off")
    generate.add_argument("--scheduler", default="dpm++", help="dpm++, unipc, ddim, euler, euler-a, heun, ...")
    generate.add_argument("--seed", type=int, default=0, help="seed of the first image (image i: seed + i)")
    generate.add_argument("--output", default="out.png", help="PNG to write")
    generate.add_argument("--scale", type=int, default=None, help="enlarge the grid (default: 4 for digits, else 1)")
    generate.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="compute precision; auto = bfloat16 where the CPU has native bf16 matmuls (float32 for the small "
        "digits model), else float32",
    )

    commands.add_parser("models", help="list the models shipped with this installation")
    for name, (_, text) in FORWARDED.items():  # listed in `sdscratch -h`; their arguments are parsed by them
        commands.add_parser(name, help=text, add_help=False)
    return parser


def _check_model(model: str) -> tuple[str, Optional[str]]:
    """`--model` -> (the shipped model to load when no folder is given, the pipeline folder or None). A Hub id gives
    the folder of its snapshot in the HF cache (`sdscratch.hub.snapshot_folder`)."""
    if model in PRETRAINED_MODELS:
        return model, None
    from .hub import PIPELINE_FILES, snapshot_folder

    allowed = f"--model must be one of {list(PRETRAINED_MODELS)} or a pipeline folder with a model_index.json"
    try:
        model = snapshot_folder(model, "--model", PIPELINE_FILES)  # a Hub id: its snapshot in the HF cache
    except ValueError as error:
        raise ValueError(f"{allowed} (a local one, or a Hub id): {error}") from None
    if not os.path.isfile(os.path.join(model, "model_index.json")):
        raise ValueError(f"{allowed}, got {model!r}")
    # a folder of your own gets the digits defaults when it is a 1-channel (grayscale) pixel-space model
    with open(os.path.join(model, "model_index.json"), encoding="utf-8") as f:
        has_vae = json.load(f).get("vae", [None, None])[0] is not None
    unet_config = os.path.join(model, "unet", "config.json")
    in_channels = None
    if os.path.isfile(unet_config):
        with open(unet_config, encoding="utf-8") as f:
            in_channels = json.load(f).get("in_channels")
    return ("digits" if not has_vae and in_channels == 1 else "cartoon-faces"), model


def generate(args: argparse.Namespace) -> tuple[str, int, str]:
    """Runs `sdscratch generate`: checks every flag, loads the model, writes the grid. Returns the PNG's path, the
    number of images and the prompt drawn."""
    if args.num_images is not None and args.num_images < 1:
        raise ValueError(f"--num_images must be at least 1, got {args.num_images}")
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.scale is not None and args.scale < 1:
        raise ValueError(f"--scale must be at least 1, got {args.scale}")
    name, model_path = _check_model(args.model)

    import torch
    from PIL import Image

    from .demo import check_output_path, check_seed, fast_dtype, load_pipeline, make_grid, save_atomic

    check_output_path(args.output)  # before the model runs: a bad --output fails now, not after generating
    check_seed(args.seed, DEFAULT_NUM_IMAGES[name] if args.num_images is None else args.num_images)
    if args.dtype == "auto":  # the digits model is too small to gain from bf16: float32, as examples/digits.py
        dtype = torch.float32 if name == "digits" else fast_dtype()
    else:
        dtype = getattr(torch, args.dtype)
    pipe = load_pipeline(model_path, name=name, scheduler=args.scheduler, dtype=dtype)
    prompt = args.prompt
    if prompt is None:  # a folder of your own: the first prompt its training run validated with, when its card says
        prompt = (model_path and card_validation_prompt(model_path)) or DEFAULT_PROMPTS[name]
    num_images = DEFAULT_NUM_IMAGES[name] if args.num_images is None else args.num_images
    images = pipe(
        prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt,
        num_images_per_prompt=num_images,
        generator=[torch.Generator().manual_seed(args.seed + i) for i in range(num_images)],
    ).images
    scale = DEFAULT_SCALES[name] if args.scale is None else args.scale
    grid = make_grid(images, pad=1 if name == "digits" else 2)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    path = save_atomic(grid, args.output)
    return path, len(images), prompt


def list_models() -> list[str]:
    """Runs `sdscratch models`: one line per shipped model (name, folder or 'not installed', what it is)."""
    lines = []
    for name, description in PRETRAINED_MODELS.items():
        where = pretrained(name) if is_available(name) else "not installed"
        lines.append(f"{name}: {description}\n    {where}")
    return lines


def seconds_since_process_start() -> Optional[float]:
    """Wall time since this process started (Linux: /proc), so that the time printed includes the imports that ran
    before `main` (the console script imports the package first); None where /proc is not there."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `sdscratch` console script (also `python -m sdscratch`). Given `argv` (a call from Python),
    the time printed starts at the call, not at the start of the process that makes it."""
    command_line = argv is None
    start = time.perf_counter() - ((seconds_since_process_start() or 0.0) if command_line else 0.0)
    argv = list(sys.argv[1:] if command_line else argv)
    if argv and argv[0] in FORWARDED:
        try:
            FORWARDED[argv[0]][0](argv[1:])
        except ValueError as error:  # a bad flag its module rejected (e.g. --task): as `generate`, no traceback
            build_parser().exit(2, f"sdscratch {argv[0]}: error: {error}\n")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "models":
        print("\n".join(list_models()))
    elif args.command == "generate":
        try:
            path, num_images, prompt = generate(args)
        except (ValueError, ImportError) as error:  # a bad flag (ours or the library's; a --scheduler whose
            # package is missing), before any heavy work: no traceback
            parser.exit(2, f"sdscratch generate: error: {str(error).strip()}\n")
        except OSError as error:  # a file the model folder (or a Hub id's cached snapshot) lacks, a full disk
            parser.exit(1, f"sdscratch generate: error: {str(error).strip()}\n")
        print(f"wrote {path} ({num_images} images for {prompt!r}) in {time.perf_counter() - start:.1f} s")
        if command_line:  # the process ends now: spare its exit the collection of every torch / diffusers object
            gc.freeze()  # (~1 s, measured; atexit handlers and flushing still run), as examples/generate.py
    return 0


if __name__ == "__main__":
    sys.exit(main())
