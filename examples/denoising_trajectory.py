"""The denoising trajectory: decoded x_t (top row) and the predicted x_0 (bottom row) at several steps.

    python examples/denoising_trajectory.py --prompt "Cartoon face with glasses, without facial hair, black hair and with white skin" --output trajectory.png
    python examples/denoising_trajectory.py --scheduler ddim --steps 50 --num_snapshots 10

x_t is read in `callback_on_step_end` (the latents after each step). x_0 is the scheduler's own
`pred_original_sample` when its `step` returns one (DDIM, DDPM, Euler, Heun, ...), otherwise it is computed from the
model output: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (DDPM, eq. 15) for epsilon prediction.
"""

import time

START = time.perf_counter()  # the wall time reported includes the imports below

import argparse  # noqa: E402
import math  # noqa: E402

DEFAULT_PROMPT = "Cartoon face with glasses, without facial hair, black hair and with white skin"


def predicted_x0(scheduler, model_output, timestep, sample):
    """x_0 from a DDPM-style (alpha_bar) model output, for schedulers that do not return it."""
    alpha_bar = scheduler.alphas_cumprod.to(sample.device)[int(timestep)]
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (sample - (1 - alpha_bar).sqrt() * model_output) / alpha_bar.sqrt()
    if kind == "v_prediction":
        return alpha_bar.sqrt() * sample - (1 - alpha_bar).sqrt() * model_output
    return model_output  # "sample": the model predicts x_0 itself


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--num_snapshots", type=int, default=6, help="columns: steps shown, first and last included")
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--scheduler", default="dpm++")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="trajectory.png")
    parser.add_argument("--model_path", default=None, help="a pipeline folder or Hub id (default: the shipped model)")
    args = parser.parse_args(argv)
    if args.num_snapshots < 1:
        raise SystemExit(f"--num_snapshots must be at least 1, got {args.num_snapshots}")

    import torch

    from sdscratch.demo import check_output_path, check_seed, load_pipeline, make_grid, save_atomic

    check_output_path(args.output)
    check_seed(args.seed)

    pipe = load_pipeline(args.model_path, name="cartoon-faces", scheduler=args.scheduler)

    # record x_0 predictions by wrapping the scheduler's step (the pipeline calls it with return_dict=False)
    x0_predictions, original_step = [], pipe.scheduler.step

    def step(model_output, timestep, sample, *step_args, **step_kwargs):
        output = original_step(model_output, timestep, sample, *step_args, **{**step_kwargs, "return_dict": False})
        has_x0 = len(output) > 1 and output[1] is not None
        x0_predictions.append(output[1] if has_x0 else predicted_x0(pipe.scheduler, model_output, timestep, sample))
        return output

    pipe.scheduler.step = step
    snapshots = []  # (timestep, x_t latents, x_0 latents)

    def on_step_end(pipe, i, t, callback_kwargs):
        snapshots.append((int(t), callback_kwargs["latents"].clone(), x0_predictions[-1].clone()))
        return callback_kwargs

    pipe(
        args.prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        generator=torch.Generator().manual_seed(args.seed),
        callback_on_step_end=on_step_end,
    )

    # pick evenly spaced steps and decode both rows in one batch
    count = min(args.num_snapshots, len(snapshots))
    picked = [snapshots[round(k * (len(snapshots) - 1) / max(count - 1, 1))] for k in range(count)]
    latents = torch.cat([s[1] for s in picked] + [s[2] for s in picked])  # (2 * count, c, h, w)
    with torch.no_grad():
        if pipe.vae is not None:
            latents = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    images = pipe.image_processor.postprocess(latents, output_type="pil")

    path = save_atomic(make_grid(images, cols=count), args.output)
    ts = ", ".join(str(s[0]) for s in picked)  # per column: the latents after the step from t, and x_0 predicted at t
    print("columns at timesteps:", ts, "(top: latents after that step, bottom: predicted x_0)")
    # second-order schedulers (Heun, KDPM2) call back after each stage: count steps as the pipeline's progress bar
    steps = math.ceil(len(snapshots) / pipe.scheduler.order)
    calls = f", {len(snapshots)} scheduler calls" if steps != len(snapshots) else ""
    print(f"wrote {path} ({count} snapshots of {steps} steps{calls}) in {time.perf_counter() - START:.1f} s")
    return path


if __name__ == "__main__":
    main()
