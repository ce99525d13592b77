"""Benchmark sdscratch's models against diffusers' generic ones, side by side in one process, on the CPU.

    python benchmarks/bench_models.py

Prints one table (about 2 minutes on 2 cores):
  - SmallUNet (default config, ~10M params) vs a UNet2DConditionModel with the same levels, channels, layers,
    cross-attention levels and head width (params within 10%, checked): 16x16x4 latents, text (B, 16, 256).
  - SmallVAE (default) vs an AutoencoderKL of similar size: 64x64x3 images <-> 16x16x4 latents.
Per model and precision (fp32, bf16 autocast): forward at batch 8 (VAE: encode + decode) and one AdamW training
step at batch 32, best of N wall-clock runs; FLOPs per sample (torch.utils.flop_counter) and the achieved
GFLOP/s as a share of the matmul peak measured at the start of the same run; peak RSS during that model's run.
"""

from __future__ import annotations

import resource
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from sdscratch import SmallUNet

torch.set_num_threads(2)
LATENT, TEXT_LEN, TEXT_DIM = (4, 16, 16), 16, 256
FORWARD_BATCH, TRAIN_BATCH = 8, 32
PRECISIONS = ("fp32", "bf16")


# ---------------------------------------------------------------- measurement helpers
def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def matmul_peak_gflops(dtype: torch.dtype) -> float:
    a, b = torch.randn(2048, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    return 2 * 2048 * 1024 * 1024 / best_ms(lambda: a @ b, 10) / 1e6


def reset_peak_rss() -> None:
    """Resets the kernel's high-water mark (VmHWM) so each model's peak is its own (Linux; no-op elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flops_per_sample(fn, batch: int) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / batch


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


# ---------------------------------------------------------------- models
def diffusers_unet_like(unet: SmallUNet) -> UNet2DConditionModel:
    """The same design built from diffusers parts: levels, channels, layers, cross-attention levels, head width."""
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


def unet_fns(model, batch: int):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, *LATENT, generator=generator)
    text = torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=generator)
    timestep = torch.randint(0, 1000, (batch,), generator=generator)
    return lambda: model(sample, timestep, text).sample, sample


def vae_fns(model, batch: int):
    images = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def run():
        posterior = model.encode(images).latent_dist
        return model.decode(posterior.mode()).sample

    return run, images


class Contender:
    """One model with its forward / train-step closures, FLOP counts and peak RSS."""

    def __init__(self, name: str, model: torch.nn.Module, make_fns):
        self.name, self.model = name, model
        self.params = sum(p.numel() for p in model.parameters())
        self.forward, _ = make_fns(model, FORWARD_BATCH)
        self.train_forward, self.target = make_fns(model, TRAIN_BATCH)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        small_forward, _ = make_fns(model, 2)
        model.eval()
        with torch.no_grad():
            self.fwd_flops = flops_per_sample(small_forward, 2)
        model.train()
        self.train_flops = flops_per_sample(lambda: small_forward().float().square().mean().backward(), 2)
        model.zero_grad(set_to_none=True)
        self.times = {}

    def run_forward(self, precision: str) -> None:
        self.model.eval()
        with torch.no_grad(), autocast(precision):
            self.forward()

    def run_train_step(self, precision: str) -> None:
        self.model.train()
        with autocast(precision):
            out = self.train_forward()
        loss = F.mse_loss(out.float(), self.target)  # UNet: as if predicting the noise; VAE: reconstruction
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def warm_up(self) -> None:
        """First calls (oneDNN builds its kernels), and this model's own peak RSS."""
        reset_peak_rss()
        for precision in PRECISIONS:
            self.run_forward(precision)
            self.run_train_step(precision)
        self.rss = peak_rss_mb()

    def time(self, kind: str, precision: str) -> None:
        fn = self.run_forward if kind == "fwd" else self.run_train_step
        start = time.perf_counter()
        fn(precision)
        elapsed = 1000 * (time.perf_counter() - start)
        key = (kind, precision)
        self.times[key] = min(self.times.get(key, float("inf")), elapsed)


def benchmark(pair: list[Contender], peaks: dict, fwd_repeats: int = 5, train_repeats: int = 2) -> list[dict]:
    """Times the two contenders alternately (A, B, A, B, ...) so that load from elsewhere hits both alike."""
    for contender in pair:
        contender.warm_up()
    for precision in PRECISIONS:
        for kind, repeats in (("fwd", fwd_repeats), ("train", train_repeats)):
            for _ in range(repeats):
                for contender in pair:
                    contender.time(kind, precision)
    rows = []
    for c in pair:
        for precision in PRECISIONS:
            fwd_ms, train_ms = c.times[("fwd", precision)], c.times[("train", precision)]
            rows.append(
                dict(
                    model=c.name,
                    params=c.params / 1e6,
                    precision=precision if precision == "fp32" else "bf16 autocast",
                    fwd_ms=fwd_ms,
                    fwd_sps=FORWARD_BATCH / fwd_ms * 1000,
                    fwd_gflop=c.fwd_flops / 1e9,
                    fwd_peak=100 * c.fwd_flops * FORWARD_BATCH / fwd_ms / 1e6 / peaks[precision],
                    train_ms=train_ms,
                    train_sps=TRAIN_BATCH / train_ms * 1000,
                    train_gflop=c.train_flops / 1e9,
                    train_peak=100 * c.train_flops * TRAIN_BATCH / train_ms / 1e6 / peaks[precision],
                    rss=c.rss,
                )
            )
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        "| model | params (M) | precision | fwd b8 ms | fwd samples/s | fwd GFLOP/sample | fwd % peak "
        "| train b32 ms | train samples/s | train GFLOP/sample | train % peak | peak RSS MB |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(
            f"| {r['model']} | {r['params']:.2f} | {r['precision']} | {r['fwd_ms']:.0f} | {r['fwd_sps']:.1f} "
            f"| {r['fwd_gflop']:.3f} | {r['fwd_peak']:.0f}% | {r['train_ms']:.0f} | {r['train_sps']:.1f} "
            f"| {r['train_gflop']:.3f} | {r['train_peak']:.0f}% | {r['rss']:.0f} |"
        )


def print_ratios(rows: list[dict], ours: str, theirs: str) -> None:
    by_key = {(r["model"], r["precision"]): r for r in rows}
    for precision in ("fp32", "bf16 autocast"):
        a, b = by_key[(ours, precision)], by_key[(theirs, precision)]
        print(
            f"{ours} / {theirs} samples/s, {precision}: forward {a['fwd_sps'] / b['fwd_sps']:.2f}x, "
            f"train {a['train_sps'] / b['train_sps']:.2f}x"
        )
    best = {m: max((r for r in rows if r["model"] == m), key=lambda r: r["train_sps"]) for m in (ours, theirs)}
    best_fwd = {m: max((r for r in rows if r["model"] == m), key=lambda r: r["fwd_sps"]) for m in (ours, theirs)}
    print(
        f"{ours} / {theirs}, each in its best precision: forward "
        f"{best_fwd[ours]['fwd_sps'] / best_fwd[theirs]['fwd_sps']:.2f}x, "
        f"train {best[ours]['train_sps'] / best[theirs]['train_sps']:.2f}x"
    )


def main() -> None:
    start = time.perf_counter()
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"matmul peak (2048x1024 @ 1024x1024): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")

    torch.manual_seed(0)
    ours = SmallUNet()
    theirs = diffusers_unet_like(ours)
    ratio = sum(p.numel() for p in ours.parameters()) / sum(p.numel() for p in theirs.parameters())
    assert 0.9 <= ratio <= 1.1, f"UNet parameter counts differ by more than 10% (ratio {ratio:.3f})"
    rows = benchmark(
        [Contender("SmallUNet", ours, unet_fns), Contender("UNet2DConditionModel", theirs, unet_fns)], peaks
    )
    print("  UNets measured", flush=True)

    vae_rows = []
    try:
        from sdscratch.models.vae import SmallVAE
    except ImportError as error:
        print(f"SmallVAE not available ({error}); skipping the VAE comparison")
    else:
        small_vae = SmallVAE()
        config = small_vae.config
        blocks = len(config.block_out_channels)
        reference_vae = AutoencoderKL(
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
        pair = [Contender("SmallVAE", small_vae, vae_fns), Contender("AutoencoderKL", reference_vae, vae_fns)]
        vae_rows = benchmark(pair, peaks, fwd_repeats=3, train_repeats=1)

    print()
    print_table(rows + vae_rows)
    print()
    print_ratios(rows, "SmallUNet", "UNet2DConditionModel")
    if vae_rows:
        print_ratios(vae_rows, "SmallVAE", "AutoencoderKL")
    peaks_end = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(
        f"matmul peak again at the end: fp32 {peaks_end['fp32']:.0f}, bf16 {peaks_end['bf16']:.0f} GFLOP/s "
        "(a big change means other load on the CPU)"
    )
    print(f"(VAE rows: forward = encode + decode of 64x64 images; total run {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
