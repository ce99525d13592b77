"""Sketch-to-image (img2img, SDEdit): a rough drawing plus a prompt -> cartoon faces that follow both.

    python examples/img2img.py --prompt "Cartoon face without glasses, without facial hair, orange hair and with white skin" --output sketch2face.png
    python examples/img2img.py --image my_drawing.png --strength 0.6 --output mine.png

Without `--image` the script draws a sketch itself (flat shapes: hair, face, eyes, mouth). `--strength` is how
much of the drawing is repainted: 0 keeps it, 1 ignores it. The output strip is: the sketch, then the results.
"""

import time

START = time.perf_counter()  # the wall time reported includes the imports below

import argparse  # noqa: E402

from PIL import Image, ImageDraw  # noqa: E402

DEFAULT_PROMPT = "Cartoon face without glasses, without facial hair, orange hair and with white skin"


def draw_sketch(size: int = 64, hair=(240, 120, 30), skin=(255, 226, 204)) -> Image.Image:
    """A child's drawing of a face on a light background: hair blob, face oval, two eyes, a mouth."""
    s = size / 64  # every coordinate below is for a 64x64 canvas
    image = Image.new("RGB", (size, size), (214, 228, 238))
    draw = ImageDraw.Draw(image)
    draw.ellipse([14 * s, 6 * s, 50 * s, 40 * s], fill=hair)  # hair
    draw.ellipse([18 * s, 14 * s, 46 * s, 54 * s], fill=skin, outline=(45, 35, 35))  # face
    for x in (25, 39):
        draw.ellipse([(x - 2) * s, 28 * s, (x + 2) * s, 32 * s], fill=(40, 30, 30))  # eyes
    draw.arc([26 * s, 36 * s, 38 * s, 46 * s], start=20, end=160, fill=(150, 40, 50), width=max(1, round(s)))
    return image


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--image", default=None, help="a drawing to start from (default: one drawn here)")
    parser.add_argument("--strength", type=float, default=0.7, help="0 keeps the image, 1 ignores it")
    parser.add_argument("--num_images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25, help="steps of the full schedule (strength skips some)")
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--scheduler", default="dpm++")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="img2img.png")
    parser.add_argument("--model_path", default=None, help="a pipeline folder or Hub id (default: the shipped model)")
    args = parser.parse_args(argv)
    if not 0 <= args.strength <= 1 or args.steps < 1:  # before the model loads
        raise SystemExit(f"--strength must be in [0, 1] and --steps at least 1, got {args.strength} and {args.steps}")

    import torch

    from sdscratch.demo import check_output_path, check_seed, load_image, load_pipeline, make_grid, save_atomic

    check_output_path(args.output)
    check_seed(args.seed, args.num_images)
    try:  # a missing or unreadable --image fails now, not after the model has loaded
        image = Image.open(args.image) if args.image else None
    except OSError as error:
        raise SystemExit(f"--image {args.image!r} cannot be read as an image: {error}") from None

    pipe = load_pipeline(args.model_path, name="cartoon-faces", scheduler=args.scheduler)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the resolution the model was trained at
    # --image: any mode (16-bit PNGs too), center-cropped to a square as in training, then resized
    sketch = load_image(image, size) if args.image else draw_sketch(size)

    images = pipe(
        args.prompt,
        image=sketch,
        strength=args.strength,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        num_images_per_prompt=args.num_images,
        generator=[torch.Generator().manual_seed(args.seed + i) for i in range(args.num_images)],
    ).images

    path = save_atomic(make_grid([sketch, *images], cols=len(images) + 1), args.output)
    print(
        f"wrote {path} (sketch + {len(images)} images, strength {args.strength}) in {time.perf_counter() - START:.1f} s"
    )
    return path


if __name__ == "__main__":
    main()
