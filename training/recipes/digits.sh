#!/usr/bin/env bash
# Reproduces the shipped `digits` model (sdscratch/pretrained/digits): train, export in fp16, evaluate into its card.
# Training measured at 32.0 min (the card's wall time: AMD EPYC CPU, one torch thread, bf16; a 2-core machine);
# the export and the evaluation below come on top. Run from the repository root.
set -euo pipefail
OUT=${OUT:-outputs/digits}
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} accelerate launch training/train_unet.py --dataset_name builtin:digits \
    --resolution 16 --unet_config training/configs/digits.json --output_dir "$OUT" --max_train_steps 4000 \
    --train_batch_size 64 --learning_rate 5e-4 --lr_scheduler constant_with_warmup --lr_warmup_steps 200 \
    --use_ema --mixed_precision bf16 --checkpointing_steps 250 --checkpoints_total_limit 2 \
    --validation_steps 1000 --seed 0 --resume_from_checkpoint latest
python training/export_pretrained.py --model_path "$OUT" --name digits
python -m sdscratch.evaluate --model_path sdscratch/pretrained/digits --output_dir "$OUT/eval" --task digits \
    --num_images 500 --num_inference_steps 25 --guidance_scale 3 --scheduler dpm++ --seed 0 --model_card
