"""Test setup: offline, isolated caches, deterministic, CPU only."""

import os
import tempfile

# Set before diffusers / transformers / datasets are imported anywhere.
_HF_HOME = tempfile.mkdtemp(prefix="sdscratch-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny test models gain nothing from intra-op threads, and pytest-xdist runs one worker per core:
# one torch thread per process avoids oversubscription (measured: 29 s vs 165 s for the pipeline tests).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def windows_text_encoding(monkeypatch):
    """`open()` without an encoding reads and writes cp1252 during the test, as Python on Windows does (the locale's
    code page; UTF-8 becomes the default only in Python 3.15): text must be opened with `encoding="utf-8"` to
    round-trip a model card or a path with non-ASCII characters."""
    import builtins
    import io

    real_open = builtins.open

    def cp1252_open(file, mode="r", buffering=-1, encoding=None, *args, **kwargs):
        if "b" not in mode and encoding in (None, "locale"):  # "locale": pathlib's read_text / write_text default
            encoding = "cp1252"
        return real_open(file, mode, buffering, encoding, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", cp1252_open)
    monkeypatch.setattr(io, "open", cp1252_open)


@pytest.fixture
def randomize():
    """Gives every parameter of a module seeded random values of unit scale: norm weights and biases too (a fresh
    module's are ones and zeros, which hide a swapped or skipped norm), so a parity test sees every weight."""

    def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in module.parameters():
                fan_in = parameter[0].numel() if parameter.ndim > 1 else 1
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
        return module

    return randomize_
