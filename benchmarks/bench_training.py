"""End-to-end training throughput of training/train_unet.py: with vs without latent caching (issue 7, benchmark 4).

    python benchmarks/bench_training.py                  # about 2-3 minutes on a quiet 2-core machine
    python benchmarks/bench_training.py --steps 40 --unet_config training/configs/cartoon-faces.json

Runs the real script twice on built-in cartoon faces (64x64 -> 16x16x4 through a SmallVAE), the same flags except
--cache_latents (the frozen VAE encodes the data set once, then every step reads the cache) vs --no-cache_latents
(the naive loop: every step encodes its batch with the VAE). Steady-state samples/s is the rate of the steps after
the first one (in which oneDNN builds its kernels), read from the script's own progress bar (`samples_per_s`, the
mean rate since the cache was built, at every step); "end to end" divides all
trained samples by the wall time of the whole run (data generation, caching, validation grid and saving
included), so the one-off cost of the cache is not hidden. The VAE is untrained: speed does not depend on it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

from sdscratch import SmallVAE
from sdscratch._cpu import load_average_text, usable_cores

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def train_command(cache: bool, args: argparse.Namespace, vae_dir: str, out_dir: str) -> list[str]:
    """The train_unet.py command line of one run.

    The faces are drawn with the built-in loader's `num_images` option (`builtin:cartoon-faces?num_images=N`), so
    only the `--num_images` faces the run trains on are generated: `--max_train_samples N` would draw all 10,000
    built-in faces first (seconds of one-off work that would dilute the end-to-end comparison).
    """
    return [
        sys.executable, os.path.join(ROOT, "training", "train_unet.py"),
        "--dataset_name", f"builtin:cartoon-faces?num_images={args.num_images}",
        "--pretrained_vae_model_name_or_path", vae_dir, "--output_dir", out_dir,
        "--unet_config", args.unet_config, "--max_train_steps", str(args.steps),
        "--train_batch_size", str(args.batch_size), "--mixed_precision", "bf16",
        "--validation_steps", str(10**9), "--checkpointing_steps", str(10**9),
        "--cache_latents" if cache else "--no-cache_latents",
    ]  # fmt: skip


def run(cache: bool, args: argparse.Namespace, vae_dir: str, out_dir: str) -> tuple[float, float]:
    """-> (steady samples/s from the script's log, end-to-end samples/s)."""
    command = train_command(cache, args, vae_dir, out_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TQDM_MININTERVAL="0")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"train_unet.py failed:\n{result.stderr[-3000:]}")
    return steady_samples_per_s(result.stderr + result.stdout, args.batch_size), args.steps * args.batch_size / wall


def steady_samples_per_s(log: str, batch_size: int) -> float:
    """The rate of the steps after the first, from train_unet.py's progress bar.

    Its `samples_per_s` at step k is the mean rate since the cache was built, k * batch / (time of steps 1..k), first
    step included: the first step also builds oneDNN's kernels (about 1.4x a later step's time here). Steps 2..n
    took n * batch / rate_n - batch / rate_1 seconds. A run of one step gives its own rate."""
    rates = {}  # step -> its samples_per_s (a step's last print: tqdm prints the previous postfix on update first)
    for step, rate in re.findall(r"(\d+)/\d+ \[[^\]]*samples_per_s=([0-9.]+)", log):
        rates[int(step)] = float(rate)
    if not rates:
        raise RuntimeError(f"no samples_per_s in the log:\n{log[-2000:]}")
    first, last = min(rates), max(rates)
    if first == last:
        return rates[last]
    seconds = last * batch_size / rates[last] - first * batch_size / rates[first]
    return (last - first) * batch_size / seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags, checked (every count must be >= 1) before any run starts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--unet_config", type=str, default=os.path.join(ROOT, "training", "configs", "cartoon-faces.json")
    )
    args = parser.parse_args(argv)
    for flag in ("steps", "batch_size", "num_images", "threads"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_start = load_average_text()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        SmallVAE().save_pretrained(os.path.join(tmp, "vae"))
        for cache in (True, False):
            steady, end_to_end = run(cache, args, os.path.join(tmp, "vae"), os.path.join(tmp, f"out-{cache}"))
            rows.append(("--cache_latents" if cache else "--no-cache_latents (naive)", steady, end_to_end))
            print(f"  {rows[-1][0]} measured", flush=True)
    print(
        f"train_unet.py, {args.steps} steps of batch {args.batch_size}, {args.num_images} built-in faces, "
        f"bf16 mixed precision, {args.threads} threads, config {os.path.basename(args.unet_config)}; "
        f"load average {load_start} -> {load_average_text()} "
        f"({usable_cores()} usable cores, {os.cpu_count()} on the machine)"
    )
    print("| latents | steady samples/s | end-to-end samples/s (whole run) |")
    print("|---|---|---|")
    for name, steady, end_to_end in rows:
        print(f"| {name} | {steady:.1f} | {end_to_end:.1f} |")
    print(f"caching speed-up: steady {rows[0][1] / rows[1][1]:.2f}x, end to end {rows[0][2] / rows[1][2]:.2f}x")


if __name__ == "__main__":
    main()
