"""Quality metrics: VAE reconstruction, prompt adherence, Frechet classifier distance, the text encoder's
separation of attribute words, and how well a pipeline edits a face (docs/evaluation.md).

`evaluate_pipeline` runs them all on a pipeline (`evaluate_vae` the VAE's share alone, `evaluate_editing` its
inpainting or img2img), `update_model_card` writes the numbers into its card; `python -m sdscratch.evaluate` is
the command line around them.
"""

from .adherence import (
    adherence_from_predictions,
    build_adherence_prompts,
    evaluate_adherence,
    generate_images,
    measure_adherence,
    unnamed_attribute_balance,
)
from .classifier import AttributeClassifier, AttributeClassifierOutput, load_classifier, pretrained_classifier_path
from .editing import evaluate_editing
from .frechet import feature_statistics, frechet_distance, frechet_distance_from_features
from .grid import captioned_grid
from .model_card import model_card_section, update_editing_card, update_model_card
from .pipeline_evaluation import evaluate_pipeline, evaluate_vae
from .reconstruction import (
    evaluate_reconstruction,
    ms_ssim,
    ms_ssim_num_scales,
    mse,
    psnr,
    reconstruct_images,
    reconstruction_metrics,
    ssim,
)
from .references import balanced_face_attributes, classifier_labels, evaluation_face_sets
from .text_separation import text_encoder_separation

__all__ = [
    "AttributeClassifier",
    "AttributeClassifierOutput",
    "adherence_from_predictions",
    "balanced_face_attributes",
    "build_adherence_prompts",
    "captioned_grid",
    "classifier_labels",
    "evaluate_adherence",
    "evaluate_editing",
    "evaluate_pipeline",
    "evaluate_reconstruction",
    "evaluate_vae",
    "evaluation_face_sets",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "generate_images",
    "load_classifier",
    "measure_adherence",
    "model_card_section",
    "ms_ssim",
    "ms_ssim_num_scales",
    "mse",
    "pretrained_classifier_path",
    "psnr",
    "reconstruct_images",
    "reconstruction_metrics",
    "ssim",
    "text_encoder_separation",
    "unnamed_attribute_balance",
    "update_editing_card",
    "update_model_card",
]
