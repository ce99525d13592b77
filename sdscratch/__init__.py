"""sdscratch: small latent text-to-image diffusion models, from scratch, on Hugging Face diffusers.

``import sdscratch`` imports every component module: diffusers 0.42 only loads a non-diffusers component
recorded in ``model_index.json`` (e.g. ``["sdscratch.models.vae", "SmallVAE"]``) when its module is already
imported.
"""

__version__ = "0.1.0"

from . import evaluation  # metrics (sdscratch.evaluation.load_classifier, evaluate_reconstruction, ...)
from .pretrained import PRETRAINED_MODELS, pretrained

# --- components (each helper/module registers its public names here) ---
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
from .schedulers import EulerMaruyamaScheduler
from .text import build_text_encoder, build_tokenizer, default_text_encoder_config, load_text_components
