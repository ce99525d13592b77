"""benchmarks/: the scripts whose tables docs/benchmarks.md quotes still run (tiny settings, no timing asserts)."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_loss_curves  # noqa: E402


def test_loss_curves_trains_every_design_on_the_same_batches(tmp_path, capsys, monkeypatch):
    monkeypatch.delattr(os, "getloadavg")  # as on Windows: the table was printed with it, after all the training
    out = tmp_path / "curves.png"
    bench_loss_curves.main(
        ["--steps", "2", "--batch_size", "4", "--num_images", "24", "--num_held_out", "8", "--threads", "1", "--out", str(out),
         "--unet_kwargs", "{}", '{"skip_connection": "add"}']
    )  # fmt: skip
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    names = [line.split(" | ")[0].removeprefix("| ") for line in table[1:]]
    assert names == ["SmallUNet", 'SmallUNet {"skip_connection": "add"}', "UNet2DConditionModel"]
    losses = [float(line.split(" | ")[3]) for line in table[1:]]
    assert all(0 < loss < 10 for loss in losses)
    assert out.stat().st_size > 0


def test_loss_curves_checks_its_arguments_first():
    with pytest.raises(ValueError, match="--num_images"):
        bench_loss_curves.main(["--num_images", "100", "--num_held_out", "90", "--batch_size", "32"])
    with pytest.raises(ValueError):  # bad JSON, before any data is built
        bench_loss_curves.main(["--unet_kwargs", "{not json"])
    for flag in ("--steps", "--batch_size", "--threads"):  # 0 steps divided by zero after building the data
        with pytest.raises(ValueError, match=flag):
            bench_loss_curves.main([flag, "0"])


def test_loss_curves_draws_every_curve_past_the_palette(tmp_path):
    from PIL import Image

    # 12 flat curves at 0..11 (more than the palette): curve i is the horizontal line at its own height
    curves = {f"design {i}": [float(i)] * 20 for i in range(12)}
    out = tmp_path / "curves.png"
    bench_loss_curves.draw_curves(curves, str(out))
    image = Image.open(out).convert("RGB")
    margin, height = 40, image.height - 80
    for i in range(1, 11):  # the first and last lie on the frame
        y = round(margin + height * (11 - i) / 11)
        assert image.getpixel((image.width // 2, y)) != (255, 255, 255), f"curve {i} not drawn"


def test_bench_training_uses_only_the_faces_it_trains_on():
    import bench_training

    args = bench_training.parse_args(["--num_images", "64"])
    command = bench_training.train_command(True, args, "vae", "out")
    assert command[command.index("--dataset_name") + 1] == "builtin:cartoon-faces?num_images=64"
    assert "--max_train_samples" not in command and "--cache_latents" in command
    assert "--no-cache_latents" in bench_training.train_command(False, args, "vae", "out")
    with pytest.raises(ValueError, match="--num_images"):
        bench_training.parse_args(["--num_images", "0"])


def test_bench_training_steady_rate_leaves_out_the_first_step():
    import bench_training

    # train_unet.py's progress bar: samples_per_s is the mean since the cache was built; tqdm prints the previous
    # postfix on update, then the step's own. Steps of batch 16 taking 0.5 s (the first), then 0.25 s each.
    log, elapsed = "\rSteps:   0%|          | 0/3 [00:00<?, ?it/s]", 0.0
    for step, seconds in enumerate((0.5, 0.25, 0.25), start=1):
        log += f"\rSteps: | {step}/3 [00:01<00:01,  4.0it/s]"
        elapsed += seconds
        log += f"\rSteps: | {step}/3 [00:01<00:01,  4.0it/s, loss=0.1, samples_per_s={step * 16 / elapsed:.1f}]"
    assert bench_training.steady_samples_per_s(log, 16) == pytest.approx(64.0, rel=1e-3)  # not the 48.0 mean
    assert bench_training.steady_samples_per_s(log.split("2/3")[0], 16) == 32.0  # one step: its own rate


def test_bench_models_counts_cpu_attention_flops():
    import bench_models
    import torch.nn.functional as F

    q = torch.randn(2, 3, 16, 8, requires_grad=True)  # (batch, heads, tokens, head dim)
    matmuls = 2 * (2 * 2 * 3 * 16 * 16 * 8)  # Q K^T and scores @ V, 2 FLOPs per multiply-add
    assert bench_models.flops_per_sample(lambda: F.scaled_dot_product_attention(q, q, q), 2) == matmuls / 2
    backward = lambda: F.scaled_dot_product_attention(q, q, q).sum().backward()  # noqa: E731
    assert bench_models.flops_per_sample(backward, 2) == (matmuls + 5 * matmuls / 2) / 2  # recompute + 4 grads


def test_bench_models_peak_rss_is_each_models_own():
    import bench_models

    held = torch.ones(256 * 2**20)  # 1 GB held by this process: a fresh process's peak cannot include it
    own = bench_models.peak_rss_alone(["SmallUNet"], forward_batch=1, train_batch=1, threads=(1,))["SmallUNet"]
    assert 0 < own < bench_models.peak_rss_mb() - held.numel() * 4 / 2**20 / 2


def test_bench_models_runs_without_what_windows_lacks(monkeypatch):
    """Windows has no `resource` module (bench_models.py failed to import), no /proc and no os.getloadavg."""
    import importlib
    from types import SimpleNamespace

    import bench_models
    import psutil

    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError
    monkeypatch.delattr(os, "getloadavg")
    bench_models = importlib.reload(bench_models)
    from sdscratch._cpu import load_average_text

    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(bench_models, "open", no_proc, raising=False)
    monkeypatch.setattr(psutil.Process, "memory_info", lambda self: SimpleNamespace(peak_wset=3 * 2**20))
    assert bench_models.peak_rss_mb() == 3 and load_average_text() == "n/a"


def test_bench_models_times_the_unets_train_step_at_the_large_batch(monkeypatch, capsys):
    import bench_models

    from sdscratch import SmallUNet

    monkeypatch.setattr(bench_models, "LARGE_TRAIN_BATCH", 3)
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # 2 threads per xdist worker: oversubscribed
    tiny = dict(block_out_channels=(16, 32), transformer_levels=(False, True), norm_num_groups=8)
    tiny.update(cross_attention_dim=256, attention_head_dim=16)
    pair = [
        bench_models.Contender(name, SmallUNet(**tiny), bench_models.unet_fns, forward_batch=2, train_batch=2)
        for name in ("a", "b")
    ]
    bench_models.benchmark(pair, fwd_repeats=1, train_repeats=1)
    bench_models.benchmark_large_train(pair, bench_models.unet_fns, repeats=1)
    for contender in pair:
        contender.rss = 1.0
        assert {("train_large", "fp32", "wall"), ("train_large", "bf16 autocast", "wall")} <= set(contender.times)
    rows = bench_models.rows_for(pair, {"fp32": 100.0, "bf16": 300.0})
    bench_models.print_table(rows, (0.0, 0.0))
    bench_models.print_ratios(rows, "a", "b")
    out = capsys.readouterr().out
    assert "| train b3 wall ms (2 thr) | train b3 samples/s (2 thr) |" in out
    assert "a / b train batch 3 samples/s (wall clock, 2 threads), each in its best precision: " in out
    assert [r["large_sps"] is None for r in rows] == [False, False, True] * 2  # no bf16-weights training


def test_bench_pipeline_times_the_steps_asked_for(monkeypatch):
    """`bench_pipeline.py --steps 15` times 15-step sampling (the examples' default), not the 25 of the target."""
    import bench_pipeline

    calls = []

    class Pipe:
        def __call__(self, prompt, **kwargs):
            calls.append(kwargs["num_inference_steps"])
            return type("Output", (), {"images": torch.zeros(8, 64, 64, 3).numpy()})()

    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)
    bench_pipeline.timed(Pipe(), bench_pipeline.time.perf_counter, threads=2, repeats=2, steps=15)
    bench_pipeline.timed(Pipe(), bench_pipeline.time.perf_counter, threads=2, repeats=1)
    assert calls == [15, 15, bench_pipeline.STEPS] and bench_pipeline.STEPS == 25
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--steps", "0"])
    with pytest.raises(SystemExit):
        bench_pipeline.main()
