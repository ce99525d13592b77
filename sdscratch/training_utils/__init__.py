"""Plumbing shared by `training/train_vae.py` and `training/train_unet.py`, so that the scripts keep only the loop.

Patterns follow diffusers' `examples/text_to_image/train_text_to_image.py`: flag names, `accelerator.save_state`
with save/load hooks that write `save_pretrained` folders, `--checkpoints_total_limit` pruning,
`--resume_from_checkpoint latest`, `EMAModel`, and model cards through `diffusers.utils.hub_utils`.

What is added on top of diffusers' example:
- a checkpoint is written to a temporary folder and renamed to `checkpoint-<step>` once complete, so a crash
  never leaves a half checkpoint that `latest` picks up;
- a checkpoint whose model configs differ from the run being started is refused before training starts.

The code lives in one module per concept; every name is re-exported here, so that the scripts call
`from sdscratch import training_utils as tu; tu.save_checkpoint(...)`:
- `flags`: the command-line flags the scripts share and their checks (`add_*_args`, `check_common_args`, ...);
- `accelerator`: the `Accelerator`, AdamW and the LR schedule, the EMA, per-process seeds, `MicroBatchMean`;
- `checkpoints`: list, resolve, save, prune and resume checkpoints, the hooks that write `save_pretrained` folders;
- `cards`: validation grids, the hardware, model cards and the Hub upload; the card marks a finished run;
- `data`: the training images, their crops, the frozen VAE, every image's captions as token rows;
- `text_to_image`: what only `train_unet.py` needs: its config, text encoder, latent cache, min-SNR weights, the
  text encoder's separation, the checks of its flags and checkpoints.
A name a module looks up is patched in that module (`mock.patch.object(tu.cards, "upload_folder")`): a patch on
this package reaches only the callers that look the name up here (the scripts' `tu.load_train_dataset(...)`).
"""

from .accelerator import (
    MicroBatchMean,
    checkpoint_num_processes,
    delay_param_group,
    enable_transformers_checkpointing,
    idle_cores_message,
    make_accelerator,
    make_ema,
    make_optimizer_and_scheduler,
    rebase_lr_scheduler,
    seed_each_process,
)
from .cards import (
    create_hub_repo,
    describe_hardware,
    end_if_finished,
    final_outputs_written,
    is_hub_dataset_id,
    model_reference,
    push_folder_to_hub,
    remove_finished_card,
    save_validation_grid,
    to_pil,
    training_card_body,
    write_model_card,
    write_unet_card,
)
from .checkpoints import (
    CHECKPOINT_PATTERN,
    TrainingClock,
    _save_ema,  # noqa: F401  (private, kept reachable here as before the split)
    build_or_resume_tokenizer,
    check_checkpoints_compatible,
    check_resume_ema,
    check_resume_frozen,
    checkpoint_step,
    is_checkpoint_step,
    list_checkpoints,
    register_checkpoint_hooks,
    resolve_resume_checkpoint,
    save_checkpoint,
    state_dict_digest,
    weights_fingerprint,
    write_rank_digest,
)
from .data import (
    RandomCropWatch,
    TrainingImages,
    caption_table,
    check_resolution,
    draw_caption_rows,
    image_caption_lists,
    image_generator,
    image_transform,
    load_frozen_vae,
    load_train_dataset,
    stack_pixel_values,
    tokenize_captions,
)
from .flags import (
    _cpu_only,  # noqa: F401  (private, as _save_ema; patch it in .flags, where it is looked up)
    add_data_args,
    add_optimization_args,
    add_output_args,
    check_common_args,
    check_enough_training_images,
    check_mixed_precision,
    check_num_validation_images,
    check_trackers_installed,
    nearest_existing_path,
    redacted_command,
    report_to_trackers,
    tracker_config,
    warn_unused_schedule_flags,
)
from .text_to_image import (
    PREDICTION_TYPES,
    build_latent_cache,
    build_text_components,
    check_resume_text_encoder,
    check_text_config,
    check_text_encoder_args,
    check_unet_resolution,
    delay_text_encoder,
    embed_captions,
    encode_images,
    load_config,
    load_resume_state,
    min_snr_weights,
    pretrained_text_encoder_folder,
    sample_from_cache,
    separation_task,
    text_encoder_param_groups,
    text_encoder_separation_scores,
)

__all__ = [
    "CHECKPOINT_PATTERN",
    "MicroBatchMean",
    "PREDICTION_TYPES",
    "RandomCropWatch",
    "TrainingClock",
    "TrainingImages",
    "add_data_args",
    "add_optimization_args",
    "add_output_args",
    "build_latent_cache",
    "build_or_resume_tokenizer",
    "build_text_components",
    "caption_table",
    "check_checkpoints_compatible",
    "check_resume_frozen",
    "check_common_args",
    "check_enough_training_images",
    "check_mixed_precision",
    "check_num_validation_images",
    "check_resolution",
    "check_resume_ema",
    "check_resume_text_encoder",
    "check_text_encoder_args",
    "check_trackers_installed",
    "check_unet_resolution",
    "checkpoint_num_processes",
    "checkpoint_step",
    "create_hub_repo",
    "delay_param_group",
    "delay_text_encoder",
    "describe_hardware",
    "draw_caption_rows",
    "embed_captions",
    "enable_transformers_checkpointing",
    "encode_images",
    "end_if_finished",
    "final_outputs_written",
    "idle_cores_message",
    "image_caption_lists",
    "image_generator",
    "image_transform",
    "is_checkpoint_step",
    "is_hub_dataset_id",
    "list_checkpoints",
    "load_config",
    "check_text_config",
    "load_frozen_vae",
    "load_resume_state",
    "load_train_dataset",
    "make_accelerator",
    "make_ema",
    "make_optimizer_and_scheduler",
    "min_snr_weights",
    "model_reference",
    "nearest_existing_path",
    "pretrained_text_encoder_folder",
    "push_folder_to_hub",
    "rebase_lr_scheduler",
    "redacted_command",
    "register_checkpoint_hooks",
    "remove_finished_card",
    "report_to_trackers",
    "resolve_resume_checkpoint",
    "sample_from_cache",
    "save_checkpoint",
    "save_validation_grid",
    "seed_each_process",
    "stack_pixel_values",
    "separation_task",
    "state_dict_digest",
    "text_encoder_param_groups",
    "text_encoder_separation_scores",
    "to_pil",
    "tokenize_captions",
    "tracker_config",
    "training_card_body",
    "warn_unused_schedule_flags",
    "write_model_card",
    "weights_fingerprint",
    "write_rank_digest",
    "write_unet_card",
]
