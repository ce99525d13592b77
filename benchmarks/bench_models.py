"""Benchmark sdscratch's models against diffusers' generic ones, side by side in one process, on the CPU.

    python benchmarks/bench_models.py

Prints one table (about 2.5 minutes on a quiet 2-core machine):
  - SmallUNet (default config) vs the fixed diffusers design of issue 7, a UNet2DConditionModel with
    block_out_channels (64, 128, 192), 1 layer per block, cross-attention at the two lower levels, 64-channel heads
    (parameters within 10%, checked): 16x16x4 latents, text (B, 16, 256).
  - SmallVAE (default) vs an AutoencoderKL with the same levels: 64x64x3 images <-> 16x16x4 latents.
Per model and precision (fp32, bf16 autocast, bf16 weights = `model.to(torch.bfloat16)`, inference only): forward
at batch 8 (VAE: encode + decode) and one AdamW training step at batch 32 (the UNets also at batch 64: wall clock on
2 threads, fp32 and bf16 autocast, best of 2). Two clocks:
  - CPU time of one thread (`time.process_time`, `torch.set_num_threads(1)`), best of N with the two contenders
    alternating (A, B, A, B): steady even when other jobs share the machine. % peak is against the 1-thread
    matmul peak of that precision measured in the same run.
  - wall clock with 2 threads, best of fewer runs (sensitive to other load: the table prints the load average).
FLOPs per sample come from torch.utils.flop_counter (train = forward + backward), with the CPU's fused attention
(`_scaled_dot_product_flash_attention_for_cpu`, which the counter has no formula for) counted as attention.
Peak RSS: each model's warm-up (all precisions, both thread counts) run alone in a fresh process, so one model's
memory (or what the allocator kept of it) never counts toward the other's.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from sdscratch import SmallUNet, SmallVAE
from sdscratch._cpu import load_average_text

LATENT, TEXT_LEN, TEXT_DIM = (4, 16, 16), 16, 256
FORWARD_BATCH, TRAIN_BATCH, LARGE_TRAIN_BATCH = 8, 32, 64  # batch 64: the UNets, wall clock on 2 threads
PRECISIONS = ("fp32", "bf16 autocast", "bf16 weights")


# ---------------------------------------------------------------- measurement helpers
def best_ms(fn, repeats: int, clock=time.process_time) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return 1000 * min(times)


def matmul_peak_gflops(dtype: torch.dtype, clock=time.process_time) -> float:
    a, b = torch.randn(2048, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    return 2 * 2048 * 1024 * 1024 / best_ms(lambda: a @ b, 10, clock) / 1e6


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows: the process's peak working set (psutil comes with accelerate)
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


# torch's counter knows the CUDA attention kernels only: on the CPU, F.scaled_dot_product_attention runs these two
# ops, and without a formula their Q K^T and attention @ V matmuls (forward and backward) would count as 0 FLOPs
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda query, key, value, *args, out_shape=None, **kwargs: sdpa_flop_count(query, key, value)
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad_out, query, key, value, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(
            grad_out, query, key, value
        )
    ),
}


def flops_per_sample(fn, batch: int) -> float:
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------- models
def diffusers_unet_like(unet: SmallUNet) -> UNet2DConditionModel:
    """The same design built from diffusers parts: levels, channels, layers, cross-attention levels, head width.

    A level with only a light cross-attention (``cross_attention_levels``) has no diffusers equivalent (its
    ``CrossAttn*Block2D`` carry a full transformer, several times the work): it becomes a plain level, which
    favours diffusers in the speed comparisons."""
    config = unet.config
    attn = list(config.transformer_levels)
    return UNet2DConditionModel(
        sample_size=config.sample_size,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=config.cross_attention_dim,
        # diffusers' `attention_head_dim` is the number of heads: give it the same wide heads as ours
        attention_head_dim=tuple(max(c // config.attention_head_dim, 1) for c in config.block_out_channels),
        norm_num_groups=config.norm_num_groups,
    )


def diffusers_reference() -> UNet2DConditionModel:
    """The fixed diffusers design of issue 7: (64, 128, 192), 1 layer per block, cross-attention at the two lower
    levels, 64-channel heads (1, 2, 3 heads), text width 256: 11.2M parameters for 16x16x4 latents."""
    return diffusers_unet_like(SmallUNet(block_out_channels=(64, 128, 192), skip_connection="concat"))


def diffusers_vae_like(vae: SmallVAE) -> AutoencoderKL:
    config = vae.config
    blocks = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
    )


def unet_fns(model, batch: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, *LATENT, generator=generator)
    text = torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=generator)
    timestep = torch.randint(0, 1000, (batch,), generator=generator)
    sample_in, text_in = sample.to(dtype), text.to(dtype)
    return lambda: model(sample_in, timestep, text_in).sample, sample


def vae_fns(model, batch: int, dtype=torch.float32):
    images = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images_in = images.to(dtype)

    def run():
        posterior = model.encode(images_in).latent_dist
        return model.decode(posterior.mode()).sample

    return run, images


class Contender:
    """One model with its forward / train-step closures (fp32 weights, and a bf16-weights copy), FLOPs, peak RSS."""

    def __init__(
        self, name: str, model: torch.nn.Module, make_fns, forward_batch=FORWARD_BATCH, train_batch=TRAIN_BATCH
    ):
        self.name, self.model = name, model.eval()
        self.params = sum(p.numel() for p in model.parameters())
        self.forward, _ = make_fns(model, forward_batch)
        self.bf16_model = copy.deepcopy(model).to(torch.bfloat16).eval()
        self.bf16_forward, _ = make_fns(self.bf16_model, forward_batch, torch.bfloat16)
        self.train_forward, self.target = make_fns(model, train_batch)
        self.large_train = None  # (forward, target) at LARGE_TRAIN_BATCH, for the models measured there
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        small_forward, _ = make_fns(model, 2)
        with torch.no_grad():
            self.fwd_flops = flops_per_sample(small_forward, 2)
        model.train()
        self.train_flops = flops_per_sample(lambda: small_forward().float().square().mean().backward(), 2)
        model.zero_grad(set_to_none=True)
        self.times = {}

    def run_forward(self, precision: str) -> None:
        if precision == "bf16 weights":
            with torch.no_grad():
                self.bf16_forward()
            return
        self.model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16 autocast"):
            self.forward()

    def run_train_step(self, precision: str, large: bool = False) -> None:
        self.model.train()
        train_forward, target = self.large_train if large else (self.train_forward, self.target)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16 autocast"):
            out = train_forward()
        loss = F.mse_loss(out.float(), target)  # UNet: as if predicting the noise; VAE: reconstruction
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def warm_up(self) -> None:
        """First calls (oneDNN builds its kernels)."""
        for precision in PRECISIONS:
            self.run_forward(precision)
            if precision != "bf16 weights":
                self.run_train_step(precision)

    def time(self, kind: str, precision: str, clock: str) -> None:
        fn = {
            "fwd": self.run_forward,
            "train": self.run_train_step,
            "train_large": lambda precision: self.run_train_step(precision, large=True),
        }[kind]
        timer = time.process_time if clock == "cpu" else time.perf_counter
        start = timer()
        fn(precision)
        elapsed = 1000 * (timer() - start)
        key = (kind, precision, clock)
        self.times[key] = min(self.times.get(key, float("inf")), elapsed)


def benchmark(pair: list[Contender], fwd_repeats: int, train_repeats: int) -> None:
    """Times the two contenders alternately (A, B, A, B, ...) so that load from elsewhere hits both alike:
    first CPU time on 1 thread, then wall clock on 2 threads (half the repeats)."""
    for clock, threads, scale in (("cpu", 1, 1), ("wall", 2, 2)):
        torch.set_num_threads(threads)
        for contender in pair:
            contender.warm_up()
        for precision in PRECISIONS:
            for kind, repeats in (("fwd", fwd_repeats), ("train", train_repeats)):
                if kind == "train" and precision == "bf16 weights":
                    continue  # pure-bf16 training (no fp32 master weights) is not a fair training setup
                for _ in range(max(1, repeats // scale)):
                    for contender in pair:
                        contender.time(kind, precision, clock)


def benchmark_large_train(pair: list[Contender], make_fns, repeats: int = 2) -> None:
    """Train steps at LARGE_TRAIN_BATCH: wall clock on 2 threads, fp32 and bf16 autocast, alternately, after one
    warm-up step each."""
    torch.set_num_threads(2)
    for contender in pair:
        contender.large_train = make_fns(contender.model, LARGE_TRAIN_BATCH)
    for precision in ("fp32", "bf16 autocast"):
        for contender in pair:
            contender.run_train_step(precision, large=True)
        for _ in range(repeats):
            for contender in pair:
                contender.time("train_large", precision, "wall")


def rows_for(pair: list[Contender], peaks: dict) -> list[dict]:
    rows = []
    for c in pair:
        for precision in PRECISIONS:
            peak = peaks["fp32" if precision == "fp32" else "bf16"]
            fwd, train = c.times[("fwd", precision, "cpu")], c.times.get(("train", precision, "cpu"))
            rows.append(
                dict(
                    model=c.name,
                    params=c.params / 1e6,
                    precision=precision,
                    fwd_gflop=c.fwd_flops / 1e9,
                    fwd_ms=fwd,
                    fwd_sps=FORWARD_BATCH / fwd * 1000,
                    fwd_peak=100 * c.fwd_flops * FORWARD_BATCH / fwd / 1e6 / peak,
                    train_ms=train,
                    train_sps=TRAIN_BATCH / train * 1000 if train else None,
                    train_peak=100 * c.train_flops * TRAIN_BATCH / train / 1e6 / peak if train else None,
                    fwd_wall=c.times[("fwd", precision, "wall")],
                    train_wall=c.times.get(("train", precision, "wall")),
                    large_wall=c.times.get(("train_large", precision, "wall")),
                    large_sps=(
                        LARGE_TRAIN_BATCH / c.times[("train_large", precision, "wall")] * 1000
                        if ("train_large", precision, "wall") in c.times
                        else None
                    ),
                    rss=c.rss,
                )
            )
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], load: tuple) -> None:
    print(f"load average at start / end: {load[0]} / {load[1]} (2 cores)")
    header = (
        "| model | params (M) | precision | GFLOP/sample fwd | fwd b8 CPU ms (1 thr) | fwd samples/s | fwd % peak "
        "| train b32 CPU ms (1 thr) | train samples/s | train % peak | fwd b8 wall ms (2 thr) "
        f"| train b32 wall ms (2 thr) | train b{LARGE_TRAIN_BATCH} wall ms (2 thr) "
        f"| train b{LARGE_TRAIN_BATCH} samples/s (2 thr) | peak RSS MB |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(
            f"| {r['model']} | {r['params']:.2f} | {r['precision']} | {r['fwd_gflop']:.3f} | {r['fwd_ms']:.0f} "
            f"| {r['fwd_sps']:.0f} | {r['fwd_peak']:.0f}% | {_fmt(r['train_ms'], '.0f')} "
            f"| {_fmt(r['train_sps'], '.1f')} | {_fmt(r['train_peak'], '.0f')}{'%' if r['train_peak'] else ''} "
            f"| {r['fwd_wall']:.0f} | {_fmt(r['train_wall'], '.0f')} | {_fmt(r['large_wall'], '.0f')} "
            f"| {_fmt(r['large_sps'], '.1f')} | {r['rss']:.0f} |"
        )


def print_ratios(rows: list[dict], ours: str, theirs: str) -> None:
    def best(model, key):
        return max((r for r in rows if r["model"] == model and r[key]), key=lambda r: r[key])

    measures = [("forward", "fwd_sps", "CPU time"), ("train", "train_sps", "CPU time")]
    if any(r["large_sps"] for r in rows):
        measures.append((f"train batch {LARGE_TRAIN_BATCH}", "large_sps", "wall clock, 2 threads"))
    for kind, key, clock in measures:
        a, b = best(ours, key), best(theirs, key)
        print(
            f"{ours} / {theirs} {kind} samples/s ({clock}), each in its best precision: {a[key] / b[key]:.2f}x "
            f"({a['precision']} vs {b['precision']})"
        )


def reference_vae() -> AutoencoderKL:
    return diffusers_vae_like(SmallVAE())


# name -> (model, input closures): how main() and the peak-RSS processes build each contender
CONTENDERS = {
    "SmallUNet": (SmallUNet, unet_fns),
    "UNet2DConditionModel": (diffusers_reference, unet_fns),
    "SmallVAE": (SmallVAE, vae_fns),
    "AutoencoderKL": (reference_vae, vae_fns),
}


def _peak_rss_alone(name: str, forward_batch: int, train_batch: int, threads: tuple[int, ...]) -> float:
    build, make_fns = CONTENDERS[name]
    contender = Contender(name, build(), make_fns, forward_batch, train_batch)
    for count in threads:
        torch.set_num_threads(count)
        contender.warm_up()
    return peak_rss_mb()


def peak_rss_alone(
    names: list[str], forward_batch=FORWARD_BATCH, train_batch=TRAIN_BATCH, threads=(1, 2)
) -> dict[str, float]:
    """Peak RSS (MB) of each contender's warm-ups as in the timed run (every precision, each thread count), each
    contender in a fresh process (Python + torch + diffusers included).

    Measured in the benchmark's own process, a model's peak would include the models built before it, and the heap
    the allocator kept after them. Processes are spawned (a forked one would inherit this one's memory and
    OpenMP threads), two at a time, one per model."""
    with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
        peaks = pool.starmap(_peak_rss_alone, [(n, forward_batch, train_batch, threads) for n in names], chunksize=1)
    return dict(zip(names, peaks))


def main(argv: list[str] | None = None) -> None:
    # no options; --help describes the run, and a mistyped flag stops before minutes of measuring
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    start = time.perf_counter()
    load_start = load_average_text()
    torch.set_num_threads(1)
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(f"torch {torch.__version__}; 1-thread CPU-time matmul peak (2048x1024 @ 1024x1024): ", end="")
    print(f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")

    torch.manual_seed(0)
    ours, theirs = SmallUNet(), diffusers_reference()
    ratio = sum(p.numel() for p in ours.parameters()) / sum(p.numel() for p in theirs.parameters())
    assert 0.9 <= ratio <= 1.1, f"UNet parameter counts differ by more than 10% (ratio {ratio:.3f})"
    unets = [Contender("SmallUNet", ours, unet_fns), Contender("UNet2DConditionModel", theirs, unet_fns)]
    benchmark(unets, fwd_repeats=6, train_repeats=3)
    benchmark_large_train(unets, unet_fns)
    print("  UNets measured", flush=True)
    vaes = [Contender(name, CONTENDERS[name][0](), CONTENDERS[name][1]) for name in ("SmallVAE", "AutoencoderKL")]
    benchmark(vaes, fwd_repeats=4, train_repeats=2)
    rss = peak_rss_alone([c.name for c in unets + vaes])  # after the timing: the processes do not disturb it
    for c in unets + vaes:
        c.rss = rss[c.name]

    torch.set_num_threads(1)
    peaks_end = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    unet_rows, vae_rows = rows_for(unets, peaks), rows_for(vaes, peaks)
    print()
    print_table(unet_rows + vae_rows, (load_start, load_average_text()))
    print()
    print_ratios(unet_rows, "SmallUNet", "UNet2DConditionModel")
    print_ratios(vae_rows, "SmallVAE", "AutoencoderKL")
    print(
        f"1-thread matmul peak again at the end: fp32 {peaks_end['fp32']:.0f}, bf16 {peaks_end['bf16']:.0f} GFLOP/s; "
        f"VAE forward = encode + decode of 64x64 images; total run {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
