"""Interpolation: faces moving smoothly between two prompts and/or two seeds, as a GIF or a PNG strip.

    python examples/interpolate.py --prompt_a "Cartoon face without glasses, without facial hair, black hair and with white skin" \
        --prompt_b "Cartoon face with glasses, with facial hair, orange hair and with dark skin" --output morph.gif
    python examples/interpolate.py --seed_a 0 --seed_b 7 --num_frames 6 --output seeds.png   # same prompt, two seeds

The initial noise is slerped between the seeds and the text embeddings are lerped between the prompts
(`CartoonFacePipeline.interpolate`). An output ending in `.gif` is an animation (played forth and back);
anything else is a strip.
"""

import time

START = time.perf_counter()  # the wall time reported includes the imports below

import argparse  # noqa: E402

PROMPT_A = "Cartoon face without glasses, without facial hair, black hair and with white skin"
PROMPT_B = "Cartoon face with glasses, with facial hair, orange hair and with dark skin"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt_a", default=PROMPT_A)
    parser.add_argument("--prompt_b", default=None, help=f"default: {PROMPT_B!r} (or prompt_a if seeds differ)")
    parser.add_argument("--seed_a", type=int, default=0)
    parser.add_argument("--seed_b", type=int, default=None, help="default: seed_a")
    parser.add_argument("--num_frames", type=int, default=8, help="frames, both ends included (>= 2)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--scheduler", default="dpm++")
    parser.add_argument("--duration_ms", type=int, default=150, help="GIF time per frame (at least 10)")
    parser.add_argument("--output", default="interpolation.gif", help=".gif for an animation, .png for a strip")
    parser.add_argument("--model_path", default=None, help="a pipeline folder or Hub id (default: the shipped model)")
    args = parser.parse_args(argv)
    if args.steps < 1:  # before the model loads
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    if args.num_frames < 2:
        raise SystemExit(f"--num_frames must be at least 2, got {args.num_frames}")
    if args.duration_ms < 10:  # GIF delays count hundredths of a second: below 10 ms PIL writes no delay at all
        raise SystemExit(f"--duration_ms must be at least 10, got {args.duration_ms}")
    if args.prompt_b is None:
        args.prompt_b = args.prompt_a if args.seed_b not in (None, args.seed_a) else PROMPT_B

    from sdscratch.demo import check_output_path, check_seed, load_pipeline, make_grid, save_atomic

    check_output_path(args.output)
    check_seed(args.seed_a, flag="--seed_a")
    if args.seed_b is not None:
        check_seed(args.seed_b, flag="--seed_b")

    pipe = load_pipeline(args.model_path, name="cartoon-faces", scheduler=args.scheduler)
    frames = pipe.interpolate(
        prompt_a=args.prompt_a,
        prompt_b=args.prompt_b,
        seed_a=args.seed_a,
        seed_b=args.seed_b,
        num_images=args.num_frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
    ).images

    if args.output.lower().endswith(".gif"):
        loop = frames + frames[-2:0:-1]  # forth and back, so the animation has no jump
        path = save_atomic(None, args.output, frames=loop, duration_ms=args.duration_ms)
    else:
        path = save_atomic(make_grid(frames, cols=len(frames)), args.output)
    print(f"wrote {path} ({len(frames)} frames) in {time.perf_counter() - START:.1f} s")
    return path


if __name__ == "__main__":
    main()
