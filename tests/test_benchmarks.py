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
