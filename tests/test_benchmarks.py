"""benchmarks/: the scripts whose tables docs/benchmarks.md quotes still run (tiny settings, no timing asserts)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_loss_curves  # noqa: E402


def test_loss_curves_trains_every_design_on_the_same_batches(tmp_path, capsys):
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
