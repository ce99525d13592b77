"""Inpainting: repaint the top of the head (the hair) of a cartoon face with a new hair colour.

    python examples/inpaint.py --hair_color blue --output inpaint.png
    python examples/inpaint.py --image face.png --prompt "Cartoon face with glasses, without facial hair, red hair and with white skin"

Without `--image` the face is one of the built-in procedural faces (`--face_seed`) and the prompt is its own
caption with the hair colour replaced. The mask is white (repaint) over the top `--mask_fraction` of the image
and black (keep) below; outside it the original is kept at every step. The output strip is: the face, the mask,
then the repainted faces.
"""

import time

START = time.perf_counter()  # the wall time reported includes the imports below

import argparse  # noqa: E402

from PIL import Image  # noqa: E402


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=None, help="a face to edit (default: a built-in procedural face)")
    parser.add_argument("--face_seed", type=int, default=4, help="which built-in face, without --image")
    parser.add_argument("--hair_color", default="blue", help="new hair colour, used when no --prompt is given")
    parser.add_argument("--prompt", default=None, help="default: the face's caption with --hair_color")
    parser.add_argument(
        "--mask_fraction",
        type=float,
        default=None,
        help="how much of the top to repaint (at least one row; default: sdscratch.demo.TOP_MASK_FRACTION, 0.42, "
        "as the inpainting evaluation)",
    )
    parser.add_argument("--num_images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--scheduler", default="dpm++")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="inpaint.png")
    parser.add_argument("--model_path", default=None, help="a pipeline folder or Hub id (default: the shipped model)")
    args = parser.parse_args(argv)
    if args.steps < 1:  # before the model loads
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    if args.mask_fraction is not None and not 0 < args.mask_fraction <= 1:
        raise SystemExit(f"--mask_fraction must be in (0, 1], got {args.mask_fraction}")

    import torch

    from sdscratch.data import ATTRIBUTES, generate_face, make_caption
    from sdscratch.demo import (
        TOP_MASK_FRACTION,
        check_output_path,
        check_seed,
        load_image,
        load_pipeline,
        make_grid,
        save_atomic,
        top_mask,  # shared with the inpainting evaluation (imported here: --help stays instant)
    )

    check_output_path(args.output)
    check_seed(args.seed, args.num_images)
    try:  # a missing or unreadable --image fails now, not after the model has loaded
        image = Image.open(args.image) if args.image else None
    except OSError as error:
        raise SystemExit(f"--image {args.image!r} cannot be read as an image: {error}") from None

    if args.prompt is None and args.hair_color not in ATTRIBUTES["hair_color"]:
        raise SystemExit(f"--hair_color must be one of {ATTRIBUTES['hair_color']}, got {args.hair_color!r}")
    pipe = load_pipeline(args.model_path, name="cartoon-faces", scheduler=args.scheduler)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the resolution the model was trained at
    if args.image:
        face = load_image(image, size)  # any mode (16-bit too), center-cropped to a square, resized
        prompt = args.prompt or f"Cartoon face with {args.hair_color} hair"
    else:
        face, attributes = generate_face(args.face_seed, size=size)
        prompt = args.prompt or make_caption({**attributes, "hair_color": args.hair_color})
    mask = top_mask(size, TOP_MASK_FRACTION if args.mask_fraction is None else args.mask_fraction)

    images = pipe(
        prompt,
        image=face,
        mask_image=mask,
        strength=1.0,  # repaint the masked region from pure noise
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        num_images_per_prompt=args.num_images,
        generator=[torch.Generator().manual_seed(args.seed + i) for i in range(args.num_images)],
    ).images

    path = save_atomic(make_grid([face, mask, *images], cols=len(images) + 2), args.output)
    print(f"prompt: {prompt}")
    print(f"wrote {path} (face, mask + {len(images)} repainted) in {time.perf_counter() - START:.1f} s")
    return path


if __name__ == "__main__":
    main()
