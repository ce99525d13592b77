"""Hub ids (`owner/name`) wherever a folder is accepted, without ever needing the Hub at run time.

`snapshot_folder` turns a Hub id into the local folder of that repo in huggingface_hub's cache
(`HF_HOME/hub/models--owner--name/snapshots/<commit>/`, `datasets--owner--name/...` for data sets): downloaded
(the files of `allow_patterns`) when the Hub answers, else the snapshot already cached, read as it is. The Hub
is asked once, without retries, so that a machine without a network (and without `HF_HUB_OFFLINE=1`) fails or
falls back at once (within the request's 10 s timeout where connections hang): left to themselves, transformers
and datasets retry each file that is not cached for about 25 s when the network is down (measured: 47 s to load
a fully cached CLIP tokenizer and text encoder, 4 minutes to report that one is not cached). Every loader is then
given a local folder and makes no network call.

Example:
    ```py
    >>> from sdscratch.hub import TEXT_ENCODER_FILES, snapshot_folder
    >>> folder = snapshot_folder("openai/clip-vit-base-patch32", "--pretrained_text_encoder", TEXT_ENCODER_FILES)
    ```
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from typing import Optional

#: What `CartoonFacePipeline.from_pretrained` reads from a pipeline folder (configs, tokenizer, weights), and its model
#: card (README.md: the prompt `sdscratch generate` and the examples draw when none is given).
PIPELINE_FILES = ["*.json", "*.txt", "*.safetensors", "README.md"]
#: A SmallVAE at the root of a repo or in its `vae/` subfolder (`train_vae.py`'s output, or a pipeline).
VAE_FILES = [
    "config.json",
    "diffusion_pytorch_model*.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model*.safetensors",
    "reconstruction_metrics.json",
]
#: A CLIP tokenizer and text encoder at the root (a CLIP repo) or in `tokenizer/` + `text_encoder/` (a pipeline):
#: safetensors weights (one file or shards), not a CLIP repo's other formats (TF, Flax: 600 MB each for openai's
#: ViT-B/32) nor a pipeline's variants (`model.fp16.safetensors`, not loaded). Where a folder has no safetensors
#: weights, `snapshot_folder` downloads its `pytorch_model.bin` instead, as transformers would load it (openai's
#: ViT-B/32 has only that on `main`).
TEXT_ENCODER_FILES = [
    "*.json",
    "*.txt",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/model-*-of-*.safetensors",
]
#: The options that make `from_pretrained` resolve a Hub id its own way (another revision, cache or token): a loader
#: given any of them passes the Hub id on instead of `snapshot_folder`'s `main` snapshot in the default cache.
HUB_OPTIONS = frozenset({"revision", "cache_dir", "token", "local_files_only", "force_download", "proxies"})

_HUB_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")


def looks_like_local_path(path: str) -> bool:
    """Whether `path` can only be a local folder, not a Hub repo id (`name` or `owner/name`): absolute or
    relative-dot paths, `~`, more than one `/`, characters a repo id cannot hold, or a first part that is a
    local folder (`outputs/clip` while `outputs/` exists)."""
    path = os.fspath(path)
    if os.path.isabs(path) or path.startswith((".", "~")) or "\\" in path or not _HUB_ID.match(path):
        return True
    return "/" in path and os.path.isdir(path.split("/")[0])


def cached_snapshot(repo_id: str, repo_type: str = "model") -> Optional[str]:
    """The cached snapshot folder of the `main` revision of a Hub repo (`refs/main` -> `snapshots/<commit>`, as
    huggingface_hub resolves it offline), or `None` when the cache holds none. Reads the disk only."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    storage = os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=repo_id, repo_type=repo_type))
    ref = os.path.join(storage, "refs", constants.DEFAULT_REVISION)
    if not os.path.isfile(ref):
        return None
    with open(ref, encoding="utf-8") as f:
        commit = f.read().strip()
    folder = os.path.join(storage, "snapshots", commit)
    return folder if commit and os.path.isdir(folder) else None  # an empty ref is no snapshot (not snapshots/)


def _repo_info(repo_id: str, repo_type: str):
    """`(the Hub's info on repo_id, None)` when the Hub answers, else `(None, why it cannot be used)`:
    `HF_HUB_OFFLINE=1`, no connection (one request with a 10 s timeout, no retries), or an answer that it has no
    such (public) repo."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    if huggingface_hub.is_offline_mode():
        return None, "HF_HUB_OFFLINE=1 is set, so nothing is downloaded"
    try:
        return huggingface_hub.HfApi().repo_info(repo_id, repo_type=repo_type, timeout=10), None
    except RepositoryNotFoundError:
        kind = "data set" if repo_type == "dataset" else "model"
        return None, f"the Hub has no {kind} {repo_id!r} (or it is private or gated: log in with `hf auth login`)"
    except Exception as error:  # no connection, a timeout, the Hub down: the cache is all there is
        return None, f"the Hub cannot be reached ({type(error).__name__}: {error})"


def _with_pickle_weights(allow_patterns: Optional[list[str]], files: Optional[list[str]]) -> Optional[list[str]]:
    """`allow_patterns`, plus `pytorch_model*.bin` for each folder whose transformers weights (`model*.safetensors`
    patterns) match none of the repo's `files`: transformers then loads those, so they must be downloaded."""
    if allow_patterns is None or files is None:
        return allow_patterns
    extra = []
    for pattern in allow_patterns:
        folder, name = posixpath.split(pattern)
        if name.startswith("model") and name.endswith(".safetensors"):
            in_folder = [p for p in allow_patterns if posixpath.split(p)[0] == folder and p.endswith(".safetensors")]
            if not any(fnmatch.fnmatch(file, p) for p in in_folder for file in files):
                extra.append(posixpath.join(folder, "pytorch_" + name[: -len(".safetensors")] + ".bin"))
    return allow_patterns + extra


def snapshot_folder(
    name_or_path: str | os.PathLike,
    flag: str,
    allow_patterns: Optional[list[str]] = None,
    repo_type: str = "model",
    download: bool = True,
) -> Optional[str]:
    """The local folder for `name_or_path`: itself when it is a folder; for a Hub id (`owner/name`), the snapshot
    of that repo's `main` revision in the HF cache, downloaded first (only `allow_patterns`) when the Hub answers.

    Args:
        name_or_path (`str` or `os.PathLike`): A local folder or a Hub repo id.
        flag (`str`): The command-line flag (or argument) that gave it, named in errors.
        allow_patterns (`list[str]`, *optional*): The files to download (`snapshot_download`'s patterns): keeps
            a download to what the caller loads (e.g. not the other weight formats of a CLIP repo). A folder with
            none of the `model*.safetensors` weights asked for gets its `pytorch_model*.bin` instead.
        repo_type (`str`, defaults to `"model"`): `"model"` or `"dataset"`.
        download (`bool`, defaults to `True`): `False`: return `None` for a Hub id when the Hub answers (the
            caller's own loader downloads what it needs, e.g. `datasets.load_dataset` only one configuration).

    Returns:
        `str` (or `None`, see `download`): A local folder. Offline, a cached snapshot is returned as it is (a file
        the Hub repo has but the cache lacks is then reported by the loader, as missing from that folder).

    Raises:
        `ValueError`: naming `flag`, when `name_or_path` is no folder and no Hub id, or a Hub id that is neither
            cached nor downloadable (offline, no connection, no such repo), with the command that caches it.
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):  # not read as a Hub id (offline: "not in the local cache")
        raise ValueError(f"{flag} {path}: this is a file; give the folder that holds it, or a Hub id like owner/name.")
    if looks_like_local_path(path):
        raise ValueError(f"{flag} {path}: no such folder (give an existing folder or a Hub id like owner/name).")
    info, reason = _repo_info(path, repo_type)
    if reason is None:
        if not download:
            return None
        from huggingface_hub import snapshot_download

        files = [sibling.rfilename for sibling in info.siblings] if getattr(info, "siblings", None) else None
        return snapshot_download(path, repo_type=repo_type, allow_patterns=_with_pickle_weights(allow_patterns, files))
    folder = cached_snapshot(path, repo_type)
    if folder is None:
        from huggingface_hub import constants

        kind, option = ("data set", " --repo-type dataset") if repo_type == "dataset" else ("model", "")
        raise ValueError(
            f"{flag} {path}: no such local folder, and the Hub {kind} {path!r} is not in the local cache "
            f"({constants.HF_HUB_CACHE}): {reason}. Download it once where the Hub can be reached (`hf download "
            f"{path}{option}`, with the same HF_HOME), or give a local folder."
        )
    return folder
