"""Checkpoints: atomic save, prune, resume, and hooks that write `save_pretrained` folders.

As diffusers' `train_text_to_image.py`: `accelerator.save_state` with save/load hooks that write each trained
model (and its EMA) as a `save_pretrained` folder, `--checkpoints_total_limit` pruning, `--resume_from_checkpoint
latest`. On top of it: a checkpoint is written to a temporary folder and renamed to `checkpoint-<step>` once
complete (old ones are pruned only then), a checkpoint whose model configs differ from the run being started is
refused before training starts, and `TrainingClock` carries the run's wall time across resumed runs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Optional

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# config keys that say nothing about the architecture (written by diffusers / transformers on save)
_IGNORED_CONFIG_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values", "architectures")
_IGNORED_CONFIG_KEYS += ("transformers_version", "torch_dtype", "dtype", "_commit_hash")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in `output_dir` as `(step, path)`, oldest first (temporary folders are ignored)."""
    if not os.path.isdir(output_dir):
        return []
    found = [(CHECKPOINT_PATTERN.match(name), name) for name in os.listdir(output_dir)]
    steps = sorted((int(m.group(1)), os.path.join(output_dir, name)) for m, name in found if m)
    return [(step, path) for step, path in steps if os.path.isdir(path)]


def resolve_resume_checkpoint(output_dir: str, resume_from_checkpoint: Optional[str]) -> Optional[str]:
    """The checkpoint folder to resume from: `None` to start fresh.

    `"latest"` with no checkpoint starts fresh (with a message); a path that does not exist is an error. A new run
    (no `--resume_from_checkpoint`) in an `output_dir` that holds checkpoints is an error too: its checkpoints
    would be pruned and numbered among the earlier run's (diffusers mixes them), so that a later `latest` could
    resume the earlier run instead of this one.
    """
    if resume_from_checkpoint is None:
        earlier = [os.path.basename(path) for _, path in list_checkpoints(output_dir)]
        if earlier:
            shown = ", ".join((["..."] if len(earlier) > 3 else []) + earlier[-3:])
            raise ValueError(
                f"--output_dir {output_dir} holds checkpoints of an earlier run ({shown}). Continue it with "
                "--resume_from_checkpoint latest (a finished run then stops without a step), or start this run in "
                "another --output_dir (or delete the checkpoint-* folders)."
            )
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {output_dir}; starting a new run.")
            return None
        return checkpoints[-1][1]
    path = resume_from_checkpoint
    if not os.path.isdir(path) and os.path.isdir(os.path.join(output_dir, path)):
        path = os.path.join(output_dir, path)  # diffusers accepts a bare `checkpoint-500`
    if not os.path.isdir(path) or not CHECKPOINT_PATTERN.match(os.path.basename(os.path.normpath(path))):
        available = [os.path.basename(p) for _, p in list_checkpoints(output_dir)]
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint-<step> folder; "
            f"checkpoints in {output_dir}: {available or 'none'} (or pass `latest`)."
        )
    later = [os.path.basename(p) for step, p in list_checkpoints(output_dir) if step > checkpoint_step(path)]
    if later:  # else `latest` would go back to the run this one replaces
        logger.warning(
            f"Resuming from {os.path.basename(os.path.normpath(path))}: the later checkpoints {later} in {output_dir} "
            "belong to the run this one replaces; they are deleted when this run saves its first checkpoint."
        )
    return path


def check_resume_ema(resume_path: Optional[str], names: list[str], use_ema: bool) -> None:
    """The checkpoint to resume from must hold a folder for each trained model (`<name>/`; else it comes from
    another kind of run, e.g. a VAE's checkpoint given to train_unet.py) and, with `--use_ema`, its EMA
    (`<name>_ema/`, written by `register_checkpoint_hooks`): checked right after the checkpoint is resolved, before
    data and models. (Resuming an EMA checkpoint without `--use_ema` drops the EMA, as diffusers' scripts do.)"""
    if resume_path is None:
        return
    for name in names:
        if not os.path.isdir(os.path.join(resume_path, name)):
            raise ValueError(f"{resume_path} holds no {name}/ folder: it comes from another kind of run. {_FIX}")
        if use_ema and not os.path.isfile(os.path.join(resume_path, f"{name}_ema", "ema_state.json")):
            raise ValueError(
                f"--use_ema: the checkpoint {resume_path} holds no {name}_ema/ (it was written by a run without "
                "--use_ema). Resume it without --use_ema, or start a new run in another --output_dir."
            )


def checkpoint_step(path: str) -> int:
    return int(CHECKPOINT_PATTERN.match(os.path.basename(os.path.normpath(path))).group(1))


def _architecture(config) -> dict:
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in config.items() if k not in _IGNORED_CONFIG_KEYS and not k.startswith("_")}


# the noise scheduler's keys that define what a UNet learns: resuming with others changes its target mid-run
NOISE_SCHEDULER_TRAINING_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
NOISE_SCHEDULER_TRAINING_KEYS += ("prediction_type", "rescale_betas_zero_snr")
_SCHEDULER_FLAGS = '--prediction_type, --num_train_timesteps, --beta_schedule or the config\'s "scheduler" section'


def check_checkpoints_compatible(
    output_dir: str,
    models: dict[str, torch.nn.Module],
    resume_path: Optional[str] = None,
    noise_scheduler=None,
) -> None:
    """Refuses to start when `output_dir` (or the checkpoint to resume from) holds checkpoints of a different
    model config (a previous, incompatible run), so that `latest` can never load mismatched weights.

    With `noise_scheduler`, also when a checkpoint's `noise_scheduler/` (written by `save_checkpoint`) trained
    another target: other `NOISE_SCHEDULER_TRAINING_KEYS` (e.g. `prediction_type` epsilon there, v_prediction now)
    would silently switch what the model learns half-way. Older checkpoints have no `noise_scheduler/`. `models`
    may be `{}`: the noise scheduler alone is checked, before the models are built.
    """
    paths = [path for _, path in list_checkpoints(output_dir)] + ([resume_path] if resume_path else [])
    for path in paths:
        scheduler_file = os.path.join(path, "noise_scheduler", "scheduler_config.json")
        if noise_scheduler is not None and os.path.isfile(scheduler_file):
            with open(scheduler_file, encoding="utf-8") as f:
                saved = json.load(f)
            current = dict(noise_scheduler.config)
            differ = [k for k in NOISE_SCHEDULER_TRAINING_KEYS if k in saved and _differs(saved[k], current.get(k))]
            if differ:
                detail = ", ".join(f"{k}: {saved[k]!r} there vs {current.get(k)!r} now" for k in differ)
                raise ValueError(
                    f"{path} was trained with another noise schedule or target ({detail}); resuming would change "
                    f"what the model learns half-way. Resume with the same {_SCHEDULER_FLAGS}, or: {_FIX}"
                )
        for name, model in models.items():
            config_file = os.path.join(path, name, "config.json")
            if not os.path.isfile(config_file):
                raise ValueError(f"{path} holds no {name}/ folder: it comes from another kind of run. {_FIX}")
            with open(config_file, encoding="utf-8") as f:
                saved = _architecture(json.load(f))
            current = _architecture(model.config)
            # keys on both sides only: transformers saves only non-default values (of nested configs too)
            differ = _differences(saved, current)
            if differ:
                detail = ", ".join(f"{k}: {there!r} there vs {now!r} now" for k, there, now in differ[:5])
                raise ValueError(
                    f"{path} was written by an incompatible run ({name} config differs: {detail}). {_FIX}"
                )


def _json(value):
    return json.loads(json.dumps(value))  # tuples -> lists, as in config.json


def _differs(saved, current) -> bool:
    """Whether two config values differ; nested configs (a CLIP's `text_config`) compare on their shared keys."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return bool(_differences(saved, current))
    return _json(saved) != _json(current)


def _differences(saved: dict, current: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """`(key, saved value, current value)` of the architecture keys on both sides that differ, sorted; a nested
    config (a CLIP's `text_config`) is entered, its keys dotted (`text_config.hidden_size`), so that a message names
    the one differing value instead of printing both whole nested configs."""
    saved, current = _architecture(saved), _architecture(current)
    found = []
    for key in sorted(set(saved) & set(current)):
        if isinstance(saved[key], dict) and isinstance(current[key], dict):
            found += _differences(saved[key], current[key], f"{prefix}{key}.")
        elif _differs(saved[key], current[key]):
            found.append((prefix + key, saved[key], current[key]))
    return found


_FIX = "Use another --output_dir, or delete its checkpoint-* folders."


class TrainingClock:
    """Wall time of a training run across interruptions: every checkpoint stores the total so far
    (`training_time.json`) and a resumed run continues from it, so that a model card states what the whole run
    cost, not its last leg. Time spent on steps that were redone after an interruption is counted too.

    The card's running metrics travel the same way (`log_step`): the losses of the last `RECENT_STEPS` optimizer
    steps and the last samples/s measured, so that a resumed run reports the whole run's final loss, and a run cut
    off between its last checkpoint and its final save, which takes no step when started again, does not report a
    loss and a speed of 0."""

    FILE = "training_time.json"
    RECENT_STEPS = 100

    def __init__(self, resume_path: Optional[str] = None):
        self.start, self.previous_s, self.runs = time.time(), 0.0, 1
        self.recent_losses: list[float] = []
        self.samples_per_s: Optional[float] = None
        if resume_path is not None and os.path.isfile(os.path.join(resume_path, self.FILE)):
            with open(os.path.join(resume_path, self.FILE), encoding="utf-8") as f:
                saved = json.load(f)
            self.previous_s, self.runs = float(saved["wall_time_s"]), int(saved["runs"]) + 1
            # absent from checkpoints written before 2026-11-24
            self.recent_losses = [float(loss) for loss in saved.get("recent_losses", [])]
            self.samples_per_s = saved.get("samples_per_s")

    def total_s(self) -> float:
        return self.previous_s + time.time() - self.start

    def log_step(self, loss: float, samples_per_s: float) -> None:
        """Records an optimizer step's logged loss and the speed measured so far."""
        self.recent_losses = (self.recent_losses + [loss])[-self.RECENT_STEPS :]
        self.samples_per_s = samples_per_s

    def recent_loss(self) -> Optional[float]:
        """The mean loss of the last `RECENT_STEPS` optimizer steps of the whole run (None: no step known)."""
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else None

    def save(self, folder: str) -> None:
        state = {"wall_time_s": self.total_s(), "runs": self.runs, "recent_losses": self.recent_losses}
        with open(os.path.join(folder, self.FILE), "w", encoding="utf-8") as f:
            json.dump({**state, "samples_per_s": self.samples_per_s}, f)

    def describe(self) -> str:
        runs = "" if self.runs == 1 else f" over {self.runs} runs (resumed from checkpoints)"
        return f"{self.total_s() / 60:.1f} min{runs}"


def _remove_folder(path: str) -> None:
    """Deletes a checkpoint folder by first renaming it to `.tmp-<name>-removed` (atomic), so that a run killed
    while deleting never leaves a half `checkpoint-<step>` behind for `latest` or `check_checkpoints_compatible`."""
    trash = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}-removed")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash)


def is_checkpoint_step(global_step: int, args: argparse.Namespace) -> bool:
    """Whether the training state is saved after optimizer step `global_step`: every `--checkpointing_steps`, and
    at the last step (diffusers' scripts save none there), so that a finished run started again with
    `--resume_from_checkpoint latest` resumes at `--max_train_steps` and takes no step instead of training its last
    steps again (the recipes' VAE stages would redo 100 and 200 steps)."""
    return global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps


FROZEN_MODELS_FILE = "frozen_models.json"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of a frozen model's state dict (names and values): the same weights give the same string.
    For a VAE (a model with an `encoder` and a `config.scaling_factor`), only what makes its latents: the encoder,
    `quant_conv` and the scaling / shift factors (a decoder fine-tuned since, as the recipes' decoder stages do,
    decodes the same latents)."""
    state, config = model.state_dict(), getattr(model, "config", None)
    if hasattr(model, "encoder") and hasattr(config, "scaling_factor"):
        state = {k: v for k, v in state.items() if k.startswith(("encoder.", "quant_conv."))}
        return (
            f"{_hash_tensors(state)};scaling_factor={config.scaling_factor};shift_factor={config.get('shift_factor')}"
        )
    return _hash_tensors(state)


def check_resume_frozen(resume_path: Optional[str], frozen: dict[str, Optional[str]], flags: dict) -> None:
    """Refuses to resume with other frozen models than the checkpoint's run used (`frozen_models.json`, written by
    `save_checkpoint(frozen=...)`): another VAE changes the latents the UNet learned, another frozen text encoder
    the embeddings it is conditioned on, half-way through the run. `frozen`: name -> the model's
    `weights_fingerprint` (`None`: the run has none, e.g. pixel space); `flags`: name -> the flag that gave it.
    Checkpoints without the file pass."""
    if resume_path is None or not os.path.isfile(os.path.join(resume_path, FROZEN_MODELS_FILE)):
        return
    with open(os.path.join(resume_path, FROZEN_MODELS_FILE), encoding="utf-8") as f:
        saved = json.load(f)
    for name, now in frozen.items():
        if saved.get(name) != now:
            what = "none" if saved.get(name) is None else "other weights"
            raise ValueError(
                f"{flags[name]}: the frozen {name} differs from the one {resume_path} was trained with ({what}): "
                f"resuming would change what the UNet learns from half-way. Resume with the run's own {flags[name]}, "
                "or start a new run in another --output_dir."
            )


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    step: int,
    total_limit: Optional[int],
    clock: Optional[TrainingClock] = None,
    tokenizer=None,
    noise_scheduler=None,
    frozen: Optional[dict[str, Optional[str]]] = None,
) -> str:
    """`accelerator.save_state` into `.tmp-checkpoint-<step>`, then rename it to `checkpoint-<step>`.

    Every process writes its own RNG state into the folder, so all of them call this; only the main process
    prunes and renames, after everyone is done. `clock`'s total wall time so far is stored with the state, a
    `tokenizer` trained by the run in `tokenizer/` (a resumed run must use that one: `build_or_resume_tokenizer`),
    and the training `noise_scheduler`'s config in `noise_scheduler/` (beside accelerate's LR `scheduler.bin`),
    which `check_checkpoints_compatible` compares, and the `frozen` models' fingerprints (name -> `weights_fingerprint`,
    computed once by the caller, or `None` for none) in `frozen_models.json`, which `check_resume_frozen` compares.
    Old checkpoints beyond `total_limit` are deleted only once the new one is complete (diffusers deletes them
    first, which loses every checkpoint when a run with `--checkpoints_total_limit 1` is killed while saving).
    """
    final_path = os.path.join(output_dir, f"checkpoint-{step}")
    tmp_path = os.path.join(output_dir, f".tmp-checkpoint-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp_path, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp_path)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if clock is not None:
            clock.save(tmp_path)
        if tokenizer is not None:
            tokenizer.save_pretrained(os.path.join(tmp_path, "tokenizer"))
        if noise_scheduler is not None:
            noise_scheduler.save_pretrained(os.path.join(tmp_path, "noise_scheduler"))
        if frozen is not None:
            with open(os.path.join(tmp_path, FROZEN_MODELS_FILE), "w", encoding="utf-8") as f:
                json.dump(frozen, f, indent=2)
        if os.path.isdir(final_path):
            _remove_folder(final_path)
        os.replace(tmp_path, final_path)
        logger.info(f"Saved state to {final_path}")
        for later_step, later in list_checkpoints(output_dir):  # a run resumed from an older checkpoint replaces them
            if later_step > step:
                logger.info(f"Removing {later}: a later checkpoint of the run this resumed run replaces")
                _remove_folder(later)
        if total_limit is not None:
            others = [path for _, path in list_checkpoints(output_dir) if path != final_path]
            for old in others[: max(0, len(others) - total_limit + 1)]:
                logger.info(f"Removing old checkpoint {old}")
                _remove_folder(old)
    accelerator.wait_for_everyone()
    return final_path


def build_or_resume_tokenizer(captions: list[str], resume_path: Optional[str], **tokenizer_config):
    """`build_tokenizer(captions, **tokenizer_config)` for a new run; for a resumed one, the checkpoint's own
    tokenizer (`save_checkpoint(..., tokenizer=...)`), so that the text encoder keeps the ids it learned.

    Raises `ValueError` for a checkpoint without `tokenizer/` (written before 2026-11-23): its run built the
    tokenizer with the `tokenizers` library's trainer, whose ids today's `build_tokenizer` does not reproduce, and a
    text encoder resumed on other ids would train on scrambled words."""
    from transformers import CLIPTokenizer

    from ..text import build_tokenizer

    if resume_path is not None:
        folder = os.path.join(resume_path, "tokenizer")
        if not os.path.isdir(folder):
            raise ValueError(
                f"{resume_path} holds no tokenizer/ (a checkpoint of sdscratch before 2026-11-23), and the tokenizer "
                "cannot be rebuilt with the ids that run's text encoder learned. Copy the run's tokenizer into "
                f"{folder} (e.g. the tokenizer/ of a pipeline folder the same run wrote), or start a new run."
            )
        return CLIPTokenizer.from_pretrained(folder)
    return build_tokenizer(captions, **tokenizer_config)


def _save_ema(ema: EMAModel, model: torch.nn.Module, path: str) -> None:
    # a copy of the model with the EMA weights, saved as a regular `save_pretrained` folder (+ EMA counters)
    ema_model = copy.deepcopy(model)
    ema.copy_to(ema_model.parameters())
    ema_model.save_pretrained(path)
    counters = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    with open(os.path.join(path, "ema_state.json"), "w", encoding="utf-8") as f:
        json.dump(counters, f, indent=2)


def _load_ema(ema: EMAModel, model: torch.nn.Module, path: str) -> None:
    # read on the CPU, then put where the (prepared) model trains, as `make_ema` put the EMA of a new run
    with open(os.path.join(path, "ema_state.json"), encoding="utf-8") as f:
        counters = json.load(f)
    loaded = type(model).from_pretrained(path)
    ema.load_state_dict({**counters, "shadow_params": [p.detach().clone() for p in loaded.parameters()]})
    ema.to(device=next(model.parameters()).device)


def register_checkpoint_hooks(
    accelerator: Accelerator, models: dict[str, torch.nn.Module], emas: Optional[dict[str, EMAModel]] = None
) -> None:
    """Makes `accelerator.save_state` write each trained model as `<name>/` with `save_pretrained` (and each EMA
    as `<name>_ema/`) instead of opaque pickles, and `load_state` read them back.

    Args:
        models: The trained models by folder name (the modules themselves, not a training wrapper around them).
        emas: `EMAModel`s by the name of the model they average.
    """
    emas = emas or {}

    def save_model_hook(prepared_models, weights, output_dir):
        if accelerator.is_main_process:
            for name, model in models.items():
                model.save_pretrained(os.path.join(output_dir, name))
                if name in emas:
                    _save_ema(emas[name], model, os.path.join(output_dir, f"{name}_ema"))
        weights.clear()  # saved above: accelerate must not pickle them again

    def load_model_hook(prepared_models, input_dir):
        for name, model in models.items():
            loaded = type(model).from_pretrained(os.path.join(input_dir, name))
            model.load_state_dict(loaded.state_dict())
            if name in emas:
                _load_ema(emas[name], model, os.path.join(input_dir, f"{name}_ema"))
        prepared_models.clear()  # loaded above

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def _hash_tensors(state: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors (names and float32 values, in name order)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def state_dict_digest(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (tests compare ranks and runs with it)."""
    return _hash_tensors(model.state_dict())[:16]


# Test support: each process writes a digest of its weights when SDSCRATCH_RANK_DIGEST_DIR is set.
def write_rank_digest(accelerator: Accelerator, models: dict[str, torch.nn.Module]) -> None:
    folder = os.environ.get("SDSCRATCH_RANK_DIGEST_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        digests = {name: state_dict_digest(model) for name, model in models.items()}
        with open(os.path.join(folder, f"rank{accelerator.process_index}.json"), "w", encoding="utf-8") as f:
            json.dump(digests, f)
