"""Hub ids without a network (sdscratch/hub.py): small repos of our own tiny models and data laid out exactly as
huggingface_hub caches them (HF_HOME/hub/models--owner--name/{refs/main, snapshots/<commit>/..., blobs/}), then
every command and loader that takes a folder is given the repo id, offline (conftest sets HF_HUB_OFFLINE=1)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import datasets
import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

from sdscratch import CartoonFacePipeline, cli, load_text_components
from sdscratch import evaluate as evaluate_module
from sdscratch import training_utils as tu
from sdscratch.data import generate_face
from sdscratch.data.loading import load_image_caption_dataset
from sdscratch.demo import load_pipeline, tiny_random_pipeline
from sdscratch.hub import TEXT_ENCODER_FILES, cached_snapshot, snapshot_folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
import train_unet  # noqa: E402

NOT_CACHED = r"is not in the local cache .*HF_HUB_OFFLINE=1 is set.*`hf download "


def put_in_hub_cache(folder: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Copies `folder` into the HF cache as huggingface_hub lays out a download of `repo_id`: each file a blob named
    by its sha256 (LFS) or git sha1, linked from `snapshots/<commit>/`, and `refs/main` holding the commit."""
    storage = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
    for path in files:
        data = path.read_bytes()
        lfs = path.suffix in (".safetensors", ".parquet")
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return storage / "snapshots" / commit


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Repos in the HF cache: a pipeline, a VAE as train_vae.py writes it, a CLIP at the root, a parquet data set.
    Returns the local folders they were made from."""
    source = tmp_path_factory.mktemp("hub-sources")
    pipe = tiny_random_pipeline(seed=0)
    pipe.save_pretrained(source / "faces")
    pipe.vae.save_pretrained(source / "vae" / "vae")
    (source / "vae" / "reconstruction_metrics.json").write_text(json.dumps({"psnr": 20.0}))
    pipe.tokenizer.save_pretrained(source / "clip")
    pipe.text_encoder.save_pretrained(source / "clip")
    faces = [generate_face(seed=i)[0] for i in range(4)]
    data = datasets.Dataset.from_dict({"image": faces, "text": [f"face {i}" for i in range(4)]})
    (source / "data" / "data").mkdir(parents=True)
    data.cast_column("image", datasets.Image()).to_parquet(
        str(source / "data" / "data" / "train-00000-of-00001.parquet")
    )
    for name in ("faces", "vae", "clip"):
        put_in_hub_cache(source / name, f"me/{name}")
    put_in_hub_cache(source / "data", "me/data", repo_type="dataset")
    return source


def test_the_cli_and_the_examples_take_a_hub_id(hub, tmp_path, capsys):
    argv = ["--steps", "2", "--num_images", "2"]
    assert cli.main(["generate", "--model", "me/faces", *argv, "--output", str(tmp_path / "hub.png")]) == 0
    cli.main(["generate", "--model", str(hub / "faces"), *argv, "--output", str(tmp_path / "folder.png")])
    assert Image.open(tmp_path / "hub.png").tobytes() == Image.open(tmp_path / "folder.png").tobytes()
    assert isinstance(load_pipeline("me/faces"), CartoonFacePipeline)  # examples/*.py --model_path
    with pytest.raises(SystemExit):
        cli.main(["generate", "--model", "me/missing", "--output", str(tmp_path / "x.png")])
    error = capsys.readouterr().err
    assert "--model must be one of ['cartoon-faces', 'digits'] or a pipeline folder" in error
    assert "Traceback" not in error and "'me/missing' is not in the local cache" in error


def test_evaluate_takes_a_hub_id_but_writes_no_card_into_the_cache(hub, tmp_path):
    argv = ["--output_dir", str(tmp_path / "eval"), "--num_images", "2", "--num_inference_steps", "1"]
    metrics = evaluate_module.main(["--model_path", "me/faces", *argv, "--grid_images", "0"])
    assert metrics["model_path"] == "me/faces"  # not a path under the working folder
    assert evaluate_module.main(["--model_path", "me/vae", *argv, "--grid_images", "0"])["model_type"] == "SmallVAE"
    with pytest.raises(SystemExit):
        evaluate_module.parse_args(["--model_path", "me/faces", *argv, "--model_card"])


def test_training_flags_take_hub_ids(hub, tmp_path):
    vae, folder = tu.load_frozen_vae("me/vae")  # --pretrained_vae_model_name_or_path
    assert type(vae).__name__ == "SmallVAE" and folder.endswith(
        os.path.join("snapshots", Path(folder).parent.name, "vae")
    )
    assert type(tu.load_frozen_vae("me/faces")[0]).__name__ == "SmallVAE"  # a pipeline repo's vae/
    assert len(load_text_components("me/clip")[0]) == len(load_text_components(hub / "clip")[0])
    dataset = load_image_caption_dataset("me/data")  # --dataset_name
    assert dataset["text"] == [f"face {i}" for i in range(4)]
    # a pipeline repo as the frozen text encoder (tokenizer/ + text_encoder/), the VAE of another, Hub data
    out = tmp_path / "run"
    argv = ["--dataset_name", "me/data", "--pretrained_vae_model_name_or_path", "me/vae", "--output_dir", out]
    argv += ["--pretrained_text_encoder", "me/faces", "--unet_config", ROOT / "training" / "configs" / "tiny.json"]
    argv += ["--train_batch_size", 4, "--max_train_steps", 1, "--report_to", "none", "--validation_prompts", "a face"]
    with mock.patch.object(tu, "describe_hardware", return_value="cpu"):
        train_unet.main(train_unet.parse_args([str(a) for a in argv]))
    card = (out / "README.md").read_text()
    assert "datasets:\n- me/data" in card and "frozen text encoder `me/faces`" in card and "| vae psnr | 20 |" in card
    assert CartoonFacePipeline.from_pretrained(out).tokenizer.model_max_length == 24


@pytest.mark.parametrize(
    "load",
    [
        lambda: tu.load_frozen_vae("me/missing"),
        lambda: load_text_components("me/missing"),
        lambda: load_image_caption_dataset("me/missing"),
        lambda: load_pipeline("me/missing"),
        lambda: snapshot_folder("me/missing", "--flag"),
    ],
    ids=["vae", "text", "dataset", "pipeline", "snapshot_folder"],
)
def test_a_hub_id_not_in_the_cache_says_so(hub, load):
    with pytest.raises(ValueError, match=NOT_CACHED):
        load()


def test_without_hf_hub_offline_an_unreachable_hub_fails_or_falls_back_at_once(hub):
    """A user who forgets HF_HUB_OFFLINE=1 on a machine without a network: the cache is used (or its absence
    reported) after one failed request. transformers and datasets alone retry each missing file for ~25 s: 164 s
    for this CLIP, 25 s to fail on the cached data set, 230 s to report the missing CLIP (measured)."""
    code = (
        "from sdscratch import load_text_components\n"
        "from sdscratch.data.loading import load_image_caption_dataset\n"
        "load_text_components('me/clip'); load_image_caption_dataset('me/data')\n"
        "try:\n    load_text_components('me/missing')\nexcept ValueError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens: connection refused, as without a network
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'me/missing' is not in the local cache" in result.stdout and "cannot be reached" in result.stdout
    assert time.perf_counter() - start < 60


def test_push_to_hub_uploads_the_model_folder_without_checkpoints_or_logs(tmp_path):
    for name in ["model_index.json", "unet/config.json", "README.md", "validation/samples-000002.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    for name in ["checkpoint-2/unet/config.json", ".tmp-checkpoint-3/x", "rank_digests/rank0.json", "tb/events"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    uploaded = []

    def upload_folder(folder_path, ignore_patterns, **kwargs):  # huggingface_hub's own filter of upload_folder
        files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        uploaded.extend(filter_repo_objects(files, ignore_patterns=ignore_patterns))

    with mock.patch.object(tu.cards, "upload_folder", upload_folder):
        tu.push_folder_to_hub(str(tmp_path), "me/x", None, logging_dir="tb")
    assert sorted(uploaded) == ["README.md", "model_index.json", "unet/config.json", "validation/samples-000002.png"]


def test_when_the_hub_answers_only_the_files_a_loader_reads_are_downloaded(hub, monkeypatch):
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)
    monkeypatch.setattr("huggingface_hub.HfApi.repo_info", lambda self, repo_id, **kwargs: object())
    downloads = []

    def snapshot_download(repo_id, repo_type, allow_patterns):
        downloads.append((repo_id, repo_type, allow_patterns))
        return str(hub / "clip")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    assert load_text_components("someone/clip")[1].config.model_type == "clip_text_model"
    assert downloads == [
        ("someone/clip", "model", TEXT_ENCODER_FILES)  # no file list from the Hub: the patterns as they are
    ]
    # a data set is left to datasets.load_dataset, which downloads one configuration only
    with mock.patch.object(datasets, "load_dataset", side_effect=RuntimeError("load_dataset")) as load:
        with pytest.raises(RuntimeError, match="load_dataset"):
            load_image_caption_dataset("someone/data")
    assert load.call_args.args[0] == "someone/data" and len(downloads) == 1


def answering_hub(monkeypatch, tmp_path, repos):
    """The Hub answering for `repos` (repo id -> the folder it holds): `repo_info` lists the folder's files, and
    `snapshot_download` copies those that its `allow_patterns` select (huggingface_hub's own filter) into a new
    folder. Returns repo id -> the files downloaded."""
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)

    def files(repo_id):
        return sorted(p.relative_to(repos[repo_id]).as_posix() for p in repos[repo_id].rglob("*") if p.is_file())

    def repo_info(self, repo_id, **kwargs):
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=name) for name in files(repo_id)])

    downloaded = {}

    def snapshot_download(repo_id, repo_type, allow_patterns):
        downloaded[repo_id] = sorted(filter_repo_objects(files(repo_id), allow_patterns=allow_patterns))
        for name in downloaded[repo_id]:
            (tmp_path / repo_id / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repos[repo_id] / name, tmp_path / repo_id / name)
        return str(tmp_path / repo_id)

    monkeypatch.setattr("huggingface_hub.HfApi.repo_info", repo_info)
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    return downloaded


def test_a_pipeline_downloaded_from_the_hub_keeps_its_model_card(hub, tmp_path, monkeypatch, capsys):
    """The card (README.md) comes down with the weights: `sdscratch generate` without --prompt draws the prompt it
    names, as for the same folder given locally (without it, the cartoon-face default was drawn)."""
    repo = tmp_path / "repo"
    shutil.copytree(hub / "faces", repo)
    (repo / "README.md").write_text("# shapes\n\nPrompts, left to right: `a red square`; `a blue circle`\n")
    downloaded = answering_hub(monkeypatch, tmp_path / "cache", {"me/shapes": repo})
    argv = ["generate", "--steps", "1", "--num_images", "1", "--output", str(tmp_path / "x.png")]
    assert cli.main([*argv[:1], "--model", "me/shapes", *argv[1:]]) == 0
    assert "README.md" in downloaded["me/shapes"]
    assert "'a red square'" in capsys.readouterr().out


def test_a_file_given_as_a_folder_is_named_a_file_not_a_hub_id(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match="--model_path .*model_index.json: this is a file; give the folder"):
        snapshot_folder(tmp_path / "model_index.json", "--model_path")


def test_a_clip_repo_without_safetensors_downloads_its_pytorch_weights_and_no_variants(hub, tmp_path, monkeypatch):
    """openai/clip-vit-base-patch32 has only pytorch_model.bin (and TF, Flax) on main: it was downloaded without any
    weights, so the text encoder failed to load; a pipeline repo's fp16 text encoder was downloaded with the fp32."""
    clip = tmp_path / "openai-like"
    shutil.copytree(hub / "clip", clip)
    text_encoder = load_text_components(hub / "clip")[1]
    torch.save(text_encoder.state_dict(), clip / "pytorch_model.bin")
    (clip / "model.safetensors").unlink()
    for name in ("tf_model.h5", "flax_model.msgpack"):
        (clip / name).write_bytes(b"other formats")
    pipeline = tmp_path / "pipeline"
    shutil.copytree(hub / "faces", pipeline)
    shutil.copy(pipeline / "text_encoder" / "model.safetensors", pipeline / "text_encoder" / "model.fp16.safetensors")
    downloaded = answering_hub(monkeypatch, tmp_path / "downloads", {"openai/clip": clip, "someone/sd": pipeline})

    loaded = load_text_components("openai/clip")[1]
    assert "pytorch_model.bin" in downloaded["openai/clip"] and "tf_model.h5" not in downloaded["openai/clip"]
    assert all(torch.equal(value, text_encoder.state_dict()[key]) for key, value in loaded.state_dict().items())
    snapshot_folder("someone/sd", "--pretrained_text_encoder", TEXT_ENCODER_FILES)
    weights = [name for name in downloaded["someone/sd"] if name.endswith((".safetensors", ".bin"))]
    assert weights == ["text_encoder/model.safetensors"]


def test_load_pipeline_leaves_a_hub_id_with_hub_options_to_diffusers(hub, tmp_path):
    """`revision` / `cache_dir` were ignored: the `main` snapshot of the default cache loaded instead, silently."""
    with pytest.raises(OSError, match="not fully cached"):
        load_pipeline("me/faces", revision="v2")
    with pytest.raises(OSError, match="not fully cached"):
        load_pipeline("me/faces", cache_dir=str(tmp_path))
    assert isinstance(load_pipeline("me/faces", local_files_only=True), CartoonFacePipeline)
    with pytest.raises(ValueError, match="no such folder"):
        load_pipeline("./missing/pipeline", revision="v2")


def test_dataset_paths_datasets_resolves_itself_and_local_typos_offline(hub, monkeypatch):
    with pytest.raises(ValueError, match=r"--dataset_name datasets/me/data: no such folder"):  # was datasets' error
        load_image_caption_dataset("datasets/me/data")
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)  # online: were refused as no such folder
    with mock.patch.object(datasets, "load_dataset", side_effect=RuntimeError("load_dataset")) as load:
        for name in ("hf://datasets/me/data", "buckets/me/bucket/images"):
            with pytest.raises(RuntimeError, match="load_dataset"):
                load_image_caption_dataset(name)
            assert load.call_args.args[0] == name


def test_an_empty_ref_is_no_snapshot(hub):
    storage = Path(constants.HF_HUB_CACHE) / "models--me--emptyref"
    (storage / "snapshots").mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text("")
    assert cached_snapshot("me/emptyref") is None  # was snapshots/ itself
    with pytest.raises(ValueError, match=NOT_CACHED):
        snapshot_folder("me/emptyref", "--flag")


def test_a_path_under_an_existing_folder_is_local_not_a_hub_id(tmp_path, monkeypatch):
    """`outputs/clip` while `outputs/` exists is a typo'd local path: named as no such folder, not looked up as the
    Hub repo `outputs/clip` (whose error would send the user to `hf download`)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(ValueError, match=r"--flag outputs/clip: no such folder"):
        snapshot_folder("outputs/clip", "--flag")
    with pytest.raises(ValueError, match=NOT_CACHED):  # no such local folder: a Hub id
        snapshot_folder("elsewhere/clip", "--flag")
