"""`CartoonFacePipeline`: text-to-image, img2img, inpainting and interpolation for small latent (or pixel) models.

A diffusers pipeline in the shape of `StableDiffusionPipeline` (same argument names and order, same numbered
phases), for the models this project trains: a `SmallVAE` (or none: pixel-space diffusion), a CLIP text
encoder + tokenizer (or none: unconditional), a `SmallUNet` and any compatible diffusers scheduler.
Stock diffusers parts (`AutoencoderKL`, `UNet2DConditionModel`, `UNet2DModel`) plug in unchanged.

img2img and inpainting are arguments of the one class (`image`, `strength`, `mask_image`, at the end of
`__call__`) rather than sibling classes, so a loaded pipeline does all of it without `from_pipe`.

Example:
    ```py
    >>> import sdscratch
    >>> pipe = sdscratch.CartoonFacePipeline.from_pretrained(sdscratch.pretrained("cartoon-faces"))
    >>> face = pipe("Cartoon face with glasses, without facial hair, black hair and with white skin").images[0]
    >>> drawing, _ = sdscratch.generate_face(seed=7)  # any PIL image: a photo, a rough sketch
    >>> sketch2img = pipe("Cartoon face without glasses, with facial hair, orange hair and with dark skin",
    ...                   image=drawing, strength=0.7).images[0]
    >>> from PIL import Image, ImageDraw
    >>> mask = Image.new("L", face.size, 0)  # white = repaint: the top of the head
    >>> ImageDraw.Draw(mask).rectangle([0, 0, face.width - 1, face.height * 2 // 5], fill=255)
    >>> repainted = pipe("Cartoon face with glasses, without facial hair, blue hair and with white skin",
    ...                  image=face, mask_image=mask, strength=1.0).images[0]
    ```
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    ImagePipelineOutput,
    SchedulerMixin,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, PreTrainedTokenizerBase

from ..models.unet import SmallUNet
from ..models.vae import SmallVAE
from .image_inputs import as_float_images, image_layout
from .input_checks import check_clip_skip, check_inputs, check_seed, is_integer, is_real_number
from .pipeline_utils import (
    clip_final_layer_norm,
    rescale_noise_cfg,
    retrieve_latents,
    retrieve_timesteps,
    slerp,
    start_schedule_at,
)

logger = logging.get_logger(__name__)


class CartoonFacePipeline(DiffusionPipeline):
    r"""Text-to-image diffusion with classifier-free guidance, img2img, inpainting and interpolation.

    Args:
        vae (`SmallVAE` or `AutoencoderKL`, *optional*): Image <-> latent autoencoder; `None` = pixel space.
        text_encoder (`CLIPTextModel`, *optional*): Prompt encoder; `None` = unconditional model (or
            `prompt_embeds` only).
        tokenizer (`CLIPTokenizer`-like, *optional*): Tokenizer of `text_encoder`.
        unet (`SmallUNet`, `UNet2DConditionModel` or `UNet2DModel`): The denoiser; `config.cross_attention_dim`
            `None` (or absent) means it takes no text.
        scheduler (`SchedulerMixin`): Any scheduler of `scheduler.compatibles` (sdscratch ships DPM-Solver++).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae", "text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> CartoonFacePipeline:
        """Loads a saved `CartoonFacePipeline` (as `DiffusionPipeline.from_pretrained` does for diffusers' own
        pipelines), computing in float32 unless `torch_dtype` says otherwise.

        Call it on this class: `CartoonFacePipeline.from_pretrained(folder)`. `DiffusionPipeline.from_pretrained`
        cannot load the folder, because diffusers looks the `_class_name` of `model_index.json` up in the diffusers
        module, where this class is not.

        Half-precision files are storage (the shipped models are fp16 to stay small): they are upcast on load,
        because most CPUs have no fast float16 path (about 1 GFLOP/s here). Pass `torch_dtype=torch.bfloat16` (or
        `dtype=`, diffusers 0.42's name; both work here without its deprecation warning) for bf16 inference, or
        `torch.float16` on a GPU.
        """
        if kwargs.get("torch_dtype") is None and kwargs.get("dtype") is None:
            kwargs.pop("torch_dtype", None)
            kwargs["dtype"] = torch.float32  # diffusers 0.42 name (`torch_dtype` still works, deprecated)
        elif kwargs.get("dtype") is None:  # both names work here; diffusers gets the one it no longer warns about
            kwargs["dtype"] = kwargs.pop("torch_dtype")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def __init__(
        self,
        vae: SmallVAE | AutoencoderKL | None,
        text_encoder: CLIPTextModel | None,
        tokenizer: PreTrainedTokenizerBase | None,
        unet: SmallUNet | UNet2DConditionModel | UNet2DModel,
        scheduler: SchedulerMixin,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = self._vae_factor(vae)
        channels = vae.config.in_channels if vae is not None else unet.config.in_channels
        processor_kwargs = {"vae_scale_factor": self.vae_scale_factor, "vae_latent_channels": 0}  # 0: never latents
        self.image_processor = VaeImageProcessor(
            **processor_kwargs, do_convert_rgb=channels == 3, do_convert_grayscale=channels == 1
        )
        self.mask_processor = VaeImageProcessor(
            **processor_kwargs, do_normalize=False, do_binarize=True, do_convert_grayscale=True
        )

    @staticmethod
    def _vae_factor(vae) -> int:
        """Pixels per latent along one side: the VAE's `downsample_factor`, or 1 in pixel space."""
        if vae is None:
            return 1
        factor = getattr(vae, "downsample_factor", None)  # SmallVAE
        return factor if factor is not None else 2 ** (len(vae.config.block_out_channels) - 1)  # AutoencoderKL

    @property
    def unet_scale_factor(self) -> int:
        """How much the UNet downsamples: latent sides must be divisible by it."""
        factor = getattr(self.unet, "downsample_factor", None)
        return factor if factor is not None else 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def is_text_conditioned(self) -> bool:
        """Whether the UNet takes `encoder_hidden_states` (cross-attention)."""
        return getattr(self.unet.config, "cross_attention_dim", None) is not None

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        # guidance_scale is w of eq. (2) in Imagen (arXiv:2205.11487); w <= 1 means no guidance.
        return self._guidance_scale > 1 and self.is_text_conditioned

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device,
        num_images_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        clip_skip: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""Encodes the prompt into text encoder hidden states, as `StableDiffusionPipeline.encode_prompt`.

        Args:
            prompt (`str` or `list[str]`, *optional*): The prompt(s); ignored when `prompt_embeds` is given.
            device (`torch.device`): Where the embeddings go.
            num_images_per_prompt (`int`): Images per prompt (embeddings are repeated this many times).
            do_classifier_free_guidance (`bool`): Whether to also return the negative (unconditional) embeddings.
            negative_prompt (`str` or `list[str]`, *optional*): What to guide away from; default `""`.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): Precomputed
                `(batch, seq_len, hidden)` embeddings.
            clip_skip (`int`, *optional*): Layers to skip from the end of the CLIP text encoder: the embeddings are
                the output of layer `num_hidden_layers - clip_skip` through the final layer norm (1 = the
                penultimate layer). Applied to the prompt and the negative prompt alike (diffusers'
                `StableDiffusionPipeline` applies it to the prompt only).

        Returns:
            `tuple[torch.Tensor, torch.Tensor | None]`: `prompt_embeds` and `negative_prompt_embeds`, each
            `(batch * num_images_per_prompt, seq_len, hidden)`; the second is `None` without guidance.
        """
        if prompt_embeds is not None:
            batch_size = prompt_embeds.shape[0]
        elif isinstance(prompt, (str, list)):
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        else:
            raise ValueError(
                f"Pass `prompt` (a string or a list of strings) or `prompt_embeds`, got prompt={prompt!r}."
            )
        if do_classifier_free_guidance and negative_prompt_embeds is None and negative_prompt is not None:
            # checked before any text is encoded, as diffusers' `encode_prompt`
            if prompt is not None and type(prompt) is not type(negative_prompt):
                raise TypeError(
                    f"`negative_prompt` should be the same type to `prompt`, but got {type(negative_prompt)} != "
                    f"{type(prompt)}."
                )
            if isinstance(negative_prompt, list) and len(negative_prompt) != batch_size:
                raise ValueError(
                    f"`negative_prompt`: {negative_prompt} has batch size {len(negative_prompt)}, but `prompt`: "
                    f"{prompt if prompt_embeds is None else 'prompt_embeds'} has batch size {batch_size}. Please make "
                    "sure that passed `negative_prompt` matches the batch size of `prompt`."
                )
        if clip_skip is not None:
            check_clip_skip(self.text_encoder, clip_skip)
        if prompt_embeds is None:
            prompt_embeds = self._encode_text(prompt, device, clip_skip)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            if negative_prompt is None:
                negative_prompt = [""] * batch_size
            elif isinstance(negative_prompt, str):
                negative_prompt = [negative_prompt] * batch_size
            negative_prompt_embeds = self._encode_text(negative_prompt, device, clip_skip)

        dtype = self.text_encoder.dtype if self.text_encoder is not None else self.unet.dtype
        # (batch, L, D) -> (batch * num_images_per_prompt, L, D), each prompt's copies next to each other
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, dim=0)
        if do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        return prompt_embeds, negative_prompt_embeds

    def _encode_text(self, text: str | list[str], device: torch.device, clip_skip: int | None = None) -> torch.Tensor:
        """Tokenizes (padded to `model_max_length`, as the model was trained) and encodes -> `(B, L, D)`; with
        `clip_skip`, the hidden states `clip_skip` layers before the last, through the final layer norm (as
        `StableDiffusionPipeline.encode_prompt`).

        Text beyond `model_max_length` tokens is truncated, with a warning (as `StableDiffusionPipeline`).
        """
        text_inputs = self.tokenizer(
            text,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        # each prompt's untruncated [bos, tokens..., eos]: truncation dropped its tokens from position max_length - 1
        # on (only the prompts that lost some are named, not the padding of a batch's shorter ones)
        max_length = self.tokenizer.model_max_length
        untruncated = self.tokenizer(text, padding="longest", return_tensors="pt")
        removed_text = [
            self.tokenizer.decode(ids[mask.bool()][max_length - 1 : -1])
            for ids, mask in zip(untruncated.input_ids, untruncated.attention_mask)
            if mask.sum() > max_length
        ]
        if removed_text:
            logger.warning(
                "The following part of your input was truncated because CLIP can only handle sequences up to"
                f" {self.tokenizer.model_max_length} tokens: {removed_text}"
            )
        # As Stable Diffusion: CLIP's causal mask + EOS pooling make the attention mask unnecessary, and the UNet
        # was trained attending over the padded sequence, so no mask goes to either.
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = text_inputs.attention_mask.to(device)
        input_ids = text_inputs.input_ids.to(device)
        if clip_skip is None:
            return self.text_encoder(input_ids, attention_mask=attention_mask)[0]
        outputs = self.text_encoder(
            input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True
        )
        hidden_states = outputs.hidden_states  # (by name: with output_attentions set, [-1] would be the attentions)
        return clip_final_layer_norm(self.text_encoder)(hidden_states[-(clip_skip + 1)])

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """`eta` (DDIM's eta, arXiv:2010.02502) and `generator` for the schedulers whose `step` takes them."""
        parameters = set(inspect.signature(self.scheduler.step).parameters)
        extra_step_kwargs = {}
        if "eta" in parameters:
            extra_step_kwargs["eta"] = eta
        if "generator" in parameters:
            extra_step_kwargs["generator"] = generator
        return extra_step_kwargs

    def get_timesteps(self, num_inference_steps: int, strength: float) -> tuple[torch.Tensor, int]:
        """SDEdit (arXiv:2108.01073): skip the first `1 - strength` of the schedule, as diffusers' img2img (see
        `start_schedule_at` for the LMS and PNDM schedulers); `strength` 0 runs no step."""
        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        if init_timestep == 0:  # PNDM lists one timestep more than its steps: slicing would leave it one
            return self.scheduler.timesteps[:0], 0
        t_start = max(num_inference_steps - init_timestep, 0)
        return start_schedule_at(self.scheduler, t_start), num_inference_steps - t_start

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Images `(B, C, H, W)` in [-1, 1] -> scaled latents `(B, c, H / f, W / f)` (the image itself in pixel space).

        Uses the posterior mean, not a sample (diffusers samples): `strength=0` is then an exact VAE round trip and
        the seed's noise is the same as in text-to-image, so `strength=1` gives the text-to-image result.
        """
        if self.vae is None:
            return image
        with self._vae_upcast_if_forced():
            latents = retrieve_latents(self.vae.encode(image.to(self.vae.dtype)), sample_mode="argmax")
        return (latents * self.vae.config.scaling_factor).to(image.dtype)

    @contextlib.contextmanager
    def _vae_upcast_if_forced(self) -> Iterator[None]:
        """Runs the VAE in float32 while inside, when it is stored in float16 and its config says `force_upcast`
        (as `StableDiffusionXLPipeline` does: a float16 VAE can overflow, and float16 has no fast path on most
        CPUs); it goes back to float16 after."""
        upcast = self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        if upcast:
            self.vae.to(torch.float32)
        try:
            yield
        finally:
            if upcast:
                self.vae.to(torch.float16)

    def prepare_latents(
        self, batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None,
        image_latents=None, timestep=None, is_strength_max=True,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Initial latents `(batch, c, height / f, width / f)` and the unscaled noise they came from.

        Text-to-image (or `strength == 1`): noise times `scheduler.init_noise_sigma`. img2img: the image latents
        noised to `timestep` with `scheduler.add_noise` (or unchanged when there is no step left to run).
        """
        shape = (batch_size, num_channels_latents, height // self.vae_scale_factor, width // self.vae_scale_factor)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype) if latents is None else latents
        noise = noise.to(device=device, dtype=dtype)
        if image_latents is None or is_strength_max:
            latents = noise * self.scheduler.init_noise_sigma
        elif timestep is None:  # strength 0: zero steps, the (encoded) image is the answer
            latents = image_latents
        else:
            latents = self.scheduler.add_noise(image_latents, noise, timestep)
        return latents, noise

    def _default_height_width(
        self, height: int | None, width: int | None, image: PipelineImageInput | None = None
    ) -> tuple[int, int]:
        """Output size: `height` / `width` if given, else the size of `image`, else the UNet's sample size.

        The size of `image` is read as `VaeImageProcessor.preprocess` reads it (lists, `(H, W, C)` / `(H, W)` numpy
        arrays, `(C, H, W)` tensors, ...: see `image_layout`) and rounded down to a multiple of the VAE factor x the
        UNet factor (preprocessing resizes the image to it). Without an image:
        `unet.config.sample_size * vae_scale_factor`.
        """
        if image is not None and (height is None or width is None):
            grayscale = self.image_processor.config.do_convert_grayscale
            _, _, image_height, image_width = image_layout(image, "image", grayscale)
            factor = self.vae_scale_factor * self.unet_scale_factor
            if (height is None and image_height < factor) or (width is None and image_width < factor):
                raise ValueError(
                    f"`image` is {image_height}x{image_width} (H x W) pixels, smaller than the multiple of {factor} "
                    f"(VAE factor {self.vae_scale_factor} x UNet factor {self.unet_scale_factor}) the output size "
                    "must be; pass `height` and `width` (the image is resized to them) or a larger image."
                )
            height = image_height - image_height % factor if height is None else height
            width = image_width - image_width % factor if width is None else width
        sample_size = self.unet.config.sample_size
        sample_size = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        # `is None`, not `or`: a 0 is checked (and refused) as given, not replaced by the default size
        height = sample_size[0] * self.vae_scale_factor if height is None else height
        width = sample_size[1] * self.vae_scale_factor if width is None else width
        return height, width

    def _expand(self, tensor: torch.Tensor, batch_size: int, num_images_per_prompt: int) -> torch.Tensor:
        """One image (or one per prompt) -> `batch_size * num_images_per_prompt`, matching the prompt order."""
        if tensor.shape[0] == 1:
            return tensor.expand(batch_size * num_images_per_prompt, *tensor.shape[1:])
        return tensor.repeat_interleave(num_images_per_prompt, dim=0)

    def _predict_noise(self, sample: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor | None):
        """One UNet call; unconditional UNets (e.g. diffusers' `UNet2DModel`) get no `encoder_hidden_states`.

        Inputs are cast to the UNet's dtype and the prediction back to `sample`'s, so that components loaded in
        different dtypes (`torch_dtype={"unet": torch.bfloat16, "default": torch.float32}`) work together.
        """
        dtype = self.unet.dtype
        if prompt_embeds is None:
            noise_pred = self.unet(sample.to(dtype), t, return_dict=False)[0]
        else:
            noise_pred = self.unet(
                sample.to(dtype), t, encoder_hidden_states=prompt_embeds.to(dtype), return_dict=False
            )[0]
        return noise_pred.to(sample.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 3.0,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006  (diffusers' signature)
        image: PipelineImageInput | None = None,
        strength: float = 0.8,
        mask_image: PipelineImageInput | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""Generates images; with `image`, img2img (SDEdit); with `image` and `mask_image`, inpainting.

        Args:
            prompt (`str` or `list[str]`, *optional*): The prompt(s). `None` or `""` = unconditional.
            height, width (`int`, *optional*): Output size in pixels; default: the size of `image`, else
                `unet.config.sample_size * vae_scale_factor`. Must be divisible by the VAE's and the UNet's factor.
            num_inference_steps (`int`, defaults to 25): Denoising steps (before `strength` is applied).
            timesteps (`list[int]`, *optional*): Custom timesteps, strictly descending, for schedulers that take
                them (`set_timesteps(timesteps=...)`); overrides `num_inference_steps`. A 1-D numpy array or tensor
                works too.
            sigmas (`list[float]`, *optional*): Custom noise levels, strictly descending, for schedulers that take
                them (`EulerDiscreteScheduler`: one sigma per step, then the final one, usually 0; `UniPC` with
                `use_flow_sigmas=True`: one per step, in (0, 1]); overrides `num_inference_steps`. A 1-D numpy array
                or tensor works too. Pass `timesteps` or `sigmas`, not both.
            guidance_scale (`float`, defaults to 3.0): Classifier-free guidance weight; <= 1 disables guidance
                (one UNet batch instead of two). 3.0, not Stable Diffusion's 7.5: the scale small models trained
                with caption dropout 0.1 are evaluated at (both shipped models' cards); 7.5 costs them image quality
                (Frechet distance 62.5 against 50.9 on the shipped cartoon-faces model, docs/evaluation.md).
            negative_prompt (`str` or `list[str]`, *optional*): What to guide away from (default `""`).
            num_images_per_prompt (`int`, defaults to 1): Images per prompt.
            eta (`float`, defaults to 0.0): DDIM's eta, in [0, 1] (0: deterministic, 1: DDPM-like step noise);
                ignored by schedulers whose `step` takes no `eta`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): One per image for per-image seeds.
            latents (`torch.Tensor`, *optional*): Initial noise `(batch, c, height / f, width / f)`, unscaled.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): Precomputed text embeddings.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            return_dict (`bool`, defaults to `True`): Return an `ImagePipelineOutput` rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): `fn(pipe, step, timestep, callback_kwargs) -> dict`
                called after every step; returned `latents` / embeddings replace the current ones.
            callback_on_step_end_tensor_inputs (`list[str]`): Tensors put in `callback_kwargs`; a subset of
                `_callback_tensor_inputs`.
            image (`PipelineImageInput`, *optional*): Starting image(s) for img2img / inpainting (a sketch works):
                one image or one per prompt, as PIL image(s), numpy `(B, H, W, C)` / `(H, W, C)` / `(H, W)` or
                tensors `(B, C, H, W)` / `(C, H, W)`, or a list of them; arrays and tensors are floats in [0, 1]
                (as diffusers' `VaeImageProcessor`) or uint8 in [0, 255]. Its size, rounded down to a multiple of the
                VAE x UNet factor, is the default `height` / `width`.
            strength (`float`, defaults to 0.8): How much of `image` to repaint, in [0, 1]: 0 returns the image
                (through the VAE), 1 starts from pure noise. Use 1.0 for diffusers-style inpainting. Runs
                `int(num_inference_steps * strength)` steps, which must be >= 1 unless `strength` is 0.
            mask_image (`PipelineImageInput`, *optional*): White = repaint, black = keep; same size as `image`, one
                mask or one per prompt. numpy masks may be `(B, H, W, 1)`, `(B, H, W)`, `(H, W, 1)` or `(H, W)`; values
                >= 0.5 (floats in [0, 1], uint8 0/1 or 0/255, booleans) are repainted.

            guidance_rescale (`float`, defaults to 0.0): Rescales the guided noise prediction towards the
                conditional one's standard deviation (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
                Steps are Flawed", section 3.4; as `StableDiffusionPipeline`), in [0, 1]; for models trained with
                zero terminal SNR (`rescale_betas_zero_snr`), where strong guidance over-exposes.
            clip_skip (`int`, *optional*): Layers to skip from the end of the CLIP text encoder (1 = the
                penultimate layer's output, through the final layer norm), for the prompt and the negative prompt.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images (list of PIL images, `(B, H, W, C)` array, or
            `(B, C, H, W)` tensor / latents).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 0. Default height and width: the image's size (rounded down to what the models need), else the UNet's
        height, width = self._default_height_width(height, width, image)

        # 1. Check inputs (everything, before any model runs)
        batch_size = check_inputs(
            self, prompt, height, width, num_inference_steps, timesteps, guidance_scale, negative_prompt,
            num_images_per_prompt, generator, latents, prompt_embeds, negative_prompt_embeds, output_type,
            callback_on_step_end_tensor_inputs, image, strength, mask_image, sigmas=sigmas, clip_skip=clip_skip,
            guidance_rescale=guidance_rescale, eta=eta,
        )  # fmt: skip
        strength = float(strength)  # a real number in [0, 1] (numpy scalars and 0-d tensors included)
        height, width, num_images_per_prompt = int(height), int(width), int(num_images_per_prompt)  # numpy ints too
        if timesteps is None and sigmas is None:  # (ignored otherwise)
            num_inference_steps = int(num_inference_steps)
        # unconditional request: the condition is the empty prompt, so guidance would be a no-op; skip its batch
        no_text = prompt in (None, "") and prompt_embeds is None
        no_negative = negative_prompt is None and negative_prompt_embeds is None
        self._guidance_scale = 1.0 if no_text and no_negative else guidance_scale
        self._interrupt = False

        # 2. Define call parameters
        device = self._execution_device
        num_images = batch_size * num_images_per_prompt

        # 3. Encode input prompt; for guidance, [uncond, cond] go through the UNet as ONE batch
        if self.is_text_conditioned:
            if prompt_embeds is None and prompt is None:  # unconditional sampling = the empty prompt
                prompt = [""] * batch_size
            prompt_embeds, negative_prompt_embeds = self.encode_prompt(
                prompt, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, clip_skip=clip_skip,
            )  # fmt: skip
        unet_embeds = prompt_embeds
        if self.do_classifier_free_guidance:
            unet_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])  # (2 * num_images, L, D)
        dtype = prompt_embeds.dtype if prompt_embeds is not None else self.unet.dtype

        # 4. Prepare timesteps (img2img / inpainting: skip the first 1 - strength of them)
        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device, timesteps, sigmas
        )
        if image is not None:
            timesteps, num_inference_steps = self.get_timesteps(num_inference_steps, strength)

        # 5. Prepare latent variables
        num_channels_latents = self.unet.config.in_channels
        image_latents = mask = None
        if image is not None:
            init_image = as_float_images(image, scale_uint8=True)  # uint8 arrays / tensors: 0-255
            # (B, C, H, W) in [-1, 1]
            init_image = self.image_processor.preprocess(init_image, height=height, width=width)
            init_image = init_image.to(device=device, dtype=dtype)
            image_latents = self._expand(self.encode_image(init_image), batch_size, num_images_per_prompt)
        latent_timestep = timesteps[:1].repeat(num_images) if len(timesteps) > 0 else None
        latents, noise = self.prepare_latents(
            num_images, num_channels_latents, height, width, dtype, device, generator, latents,
            image_latents=image_latents, timestep=latent_timestep, is_strength_max=strength == 1.0 or image is None,
        )  # fmt: skip
        if mask_image is not None:
            mask = as_float_images(mask_image, scale_uint8=False)  # booleans -> 0.0 / 1.0
            mask = self.mask_processor.preprocess(mask, height=height, width=width)  # (B, 1, H, W) in {0, 1}
            latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
            mask = F.interpolate(mask, size=latent_size).to(device=device, dtype=dtype)  # nearest, as diffusers
            mask = self._expand(mask, batch_size, num_images_per_prompt)

        # 6. Prepare extra step kwargs
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 7. Denoising loop
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue

                # expand the latents for guidance, then let the scheduler scale them (Euler, LMS, Heun, KDPM2 need it)
                latent_model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)

                # predict the noise residual, then guide: eps_uncond + w * (eps_cond - eps_uncond)
                noise_pred = self._predict_noise(latent_model_input, t, unet_embeds)
                if self.do_classifier_free_guidance:
                    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_text - noise_pred_uncond)
                    if guidance_rescale > 0:
                        noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=guidance_rescale)

                # compute the previous noisy sample x_t -> x_t-1
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                # inpainting: outside the mask, put back the original latents noised to the next timestep
                if mask is not None:
                    init_latents_proper = image_latents
                    if i < len(timesteps) - 1:
                        init_latents_proper = self.scheduler.add_noise(image_latents, noise, timesteps[i + 1 : i + 2])
                    latents = (1 - mask) * init_latents_proper + mask * latents

                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                    tensors["negative_prompt_embeds"] = negative_prompt_embeds
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs or []}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = callback_outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                    unet_embeds = prompt_embeds
                    if self.do_classifier_free_guidance:
                        unet_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])

                # second-order schedulers take `order` UNet calls per step: one progress tick per step
                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        # 8. Decode (pixel space: the latents are the image)
        if output_type == "latent":
            images = latents
        else:
            images = latents
            if self.vae is not None:
                with self._vae_upcast_if_forced():
                    latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor  # the VAE's own dtype
                    images = self.vae.decode(latents, return_dict=False, generator=generator)[0]
            images = self.image_processor.postprocess(images, output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    @torch.no_grad()
    def interpolate(
        self,
        prompt_a: str | None = None,
        prompt_b: str | None = None,
        seed_a: int = 0,
        seed_b: int | None = None,
        num_images: int = 8,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float = 3.0,
        negative_prompt: str | None = None,
        **kwargs: Any,
    ) -> ImagePipelineOutput | tuple:
        r"""`num_images` frames moving smoothly from (`prompt_a`, `seed_a`) to (`prompt_b`, `seed_b`).

        The initial noise is slerped between the two seeds' noise and the text embeddings are lerped. The scheduler's
        own noise (ancestral / SDE samplers) continues `seed_a`'s generator after its initial noise in every frame, as
        a plain call with `seed_a` does, so frame 0 is exactly `pipe(prompt_a, generator=seed_a's generator)` with any
        scheduler and stochastic samplers stay smooth across frames; the last frame is `pipe(prompt_b, generator=
        seed_b's generator)` with deterministic schedulers (the default DPM-Solver++), while a stochastic one gives it
        `seed_a`'s step noise.

        Args:
            prompt_a, prompt_b (`str`, *optional*): Endpoint prompts; `prompt_b=None` keeps `prompt_a`.
            seed_a, seed_b (`int`): Endpoint seeds; `seed_b=None` keeps `seed_a`.
            num_images (`int`, defaults to 8): Frames, endpoints included (>= 2).
            height, width, guidance_scale, negative_prompt: As in `__call__` (one negative prompt for every frame).
            **kwargs: Any other `__call__` argument (`num_inference_steps`, `output_type`, `return_dict`, ...).

        Returns:
            As `__call__`, with `num_images` images in order from a to b.
        """
        if not is_integer(num_images) or num_images < 2:
            raise ValueError(f"`num_images` must be an integer >= 2, got {num_images!r}.")
        num_images = int(num_images)
        set_here = ("prompt", "prompt_embeds", "negative_prompt_embeds", "latents", "generator", "image")
        for name in (*set_here, "num_images_per_prompt"):
            if name in kwargs:
                raise ValueError(
                    f"`{name}` is set by `interpolate` (one image per frame: `num_images`); pass "
                    "`prompt_a`/`prompt_b`/`seed_a`/`seed_b`."
                )
        for name, value in (("prompt_a", prompt_a), ("prompt_b", prompt_b), ("negative_prompt", negative_prompt)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"`{name}` must be a string or None (one prompt per endpoint), got {value!r}.")
        for name, value in (("seed_a", seed_a), ("seed_b", seed_b)):
            integer = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
            if (value is not None or name == "seed_a") and not integer:
                raise TypeError(f"`{name}` must be an integer seed, got {value!r}.")
            if value is not None:
                check_seed(int(value), flag=name)  # within what torch.Generator.manual_seed takes
        prompt_b = prompt_a if prompt_b is None else prompt_b
        seed_a, seed_b = int(seed_a), int(seed_a if seed_b is None else seed_b)
        height, width = self._default_height_width(height, width)
        # every other argument checked now, as __call__ would, before the text encoder runs for the two prompts
        call = inspect.signature(type(self).__call__).parameters
        unknown = sorted(set(kwargs) - set(call))
        if unknown:
            raise TypeError(f"interpolate() got unexpected keyword arguments {unknown}: not arguments of __call__.")

        def arg(name: str) -> Any:
            return kwargs.get(name, call[name].default)

        check_inputs(
            self, prompt_a or None, height, width, arg("num_inference_steps"), arg("timesteps"), guidance_scale,
            negative_prompt, num_images, None, None, None, None, arg("output_type"),
            arg("callback_on_step_end_tensor_inputs"), None, arg("strength"), arg("mask_image"),
            sigmas=arg("sigmas"), clip_skip=arg("clip_skip"), guidance_rescale=arg("guidance_rescale"), eta=arg("eta"),
        )  # fmt: skip
        shape = (1, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        noise_a, noise_b = (randn_tensor(shape, generator=torch.Generator().manual_seed(s)) for s in (seed_a, seed_b))
        fractions = torch.linspace(0, 1, num_images).tolist()
        latents = torch.cat([slerp(f, noise_a, noise_b) for f in fractions])  # (num_images, c, h, w)

        if not is_real_number(guidance_scale):
            raise TypeError(f"`guidance_scale` must be a real number (e.g. 3.0), got {guidance_scale!r}.")
        guidance = False
        if self.is_text_conditioned:
            # as in __call__: guiding "" towards "" is a no-op, so a promptless interpolation skips guidance
            guidance = guidance_scale > 1 and bool(prompt_a or prompt_b or negative_prompt)
            device = self._execution_device
            clip_skip = kwargs.pop("clip_skip", None)  # applied here: __call__ gets the embeddings
            embeds = [
                self.encode_prompt(p or "", device, 1, guidance, negative_prompt, clip_skip=clip_skip)
                for p in (prompt_a, prompt_b)
            ]
            kwargs["prompt_embeds"] = torch.cat([torch.lerp(embeds[0][0], embeds[1][0], f) for f in fractions])
            if guidance:
                kwargs["negative_prompt_embeds"] = torch.cat([embeds[0][1]] * num_images)
        elif prompt_a or prompt_b or negative_prompt:
            raise ValueError("`prompt_a`/`prompt_b`: this pipeline's UNet is unconditional; pass no prompt.")
        generators = []  # seed_a's stream past its initial noise, as a plain call continues it into the scheduler
        for _ in range(num_images):
            generators.append(torch.Generator().manual_seed(seed_a))
            randn_tensor(shape, generator=generators[-1])
        # without guidance, say so: `prompt_embeds` alone would make __call__ guide them towards "" (2x UNet batch)
        guidance_scale = guidance_scale if guidance else 1.0
        kwargs.update(height=height, width=width, guidance_scale=guidance_scale, latents=latents, generator=generators)
        return self(**kwargs)
