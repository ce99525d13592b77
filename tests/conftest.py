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
