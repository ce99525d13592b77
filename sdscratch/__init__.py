"""sdscratch: small latent text-to-image diffusion models, from scratch, on Hugging Face diffusers.

``import sdscratch`` imports every component module: diffusers 0.42 only loads a non-diffusers component
recorded in ``model_index.json`` (e.g. ``["sdscratch.models.vae", "SmallVAE"]``) when its module is already
imported.
"""

__version__ = "0.1.0"

from . import (
    _cpu,  # noqa: F401  (first: it times the imports below, see set_cpu_threads)
    evaluation,  # metrics (sdscratch.evaluation.load_classifier, evaluate_reconstruction, ...)
)
from .data import (
    cartoon_faces_dataset,
    generate_cartoon_face,
    generate_face,
    load_digits_dataset,
    load_image_caption_dataset,
)
from .models.unet import SmallUNet
from .models.vae import SmallVAE
from .pipelines.pipeline_cartoon_face import CartoonFacePipeline
from .pretrained import PRETRAINED_MODELS, pretrained
from .schedulers import EulerMaruyamaScheduler
from .text import build_text_encoder, build_tokenizer, default_text_encoder_config, load_text_components

__all__ = [
    "PRETRAINED_MODELS",
    "CartoonFacePipeline",
    "EulerMaruyamaScheduler",
    "SmallUNet",
    "SmallVAE",
    "build_text_encoder",
    "build_tokenizer",
    "cartoon_faces_dataset",
    "default_text_encoder_config",
    "evaluation",
    "generate_cartoon_face",
    "generate_face",
    "load_digits_dataset",
    "load_image_caption_dataset",
    "load_text_components",
    "pretrained",
]
