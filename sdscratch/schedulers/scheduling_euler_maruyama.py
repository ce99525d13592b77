"""Euler-Maruyama sampler for the reverse-time VP-SDE, as a diffusers scheduler.

Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations"
(https://huggingface.co/papers/2011.13456). A DDPM noise schedule is the discretisation of the variance-preserving
(VP) SDE, eq. 11:

    dx = -1/2 β(t) x dt + sqrt(β(t)) dw,         i.e. f(x, t) = -1/2 β(t) x,  g(t) = sqrt(β(t)),

and samples are drawn by integrating the reverse-time SDE, eq. 6,

    dx = [f(x, t) - g(t)² ∇x log p_t(x)] dt + g(t) dw̄,

backwards from t = T to t = 0 with the Euler-Maruyama method. The score comes from the noise prediction:
∇x log p_t(x) = -ε(x_t, t) / sqrt(1 - ᾱ_t), since x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar, rescale_zero_terminal_snr
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


@dataclass
class EulerMaruyamaSchedulerOutput(BaseOutput):
    """
    Output class for the scheduler's `step` function output.

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)` for images):
            Computed sample `(x_{t-1})` of previous timestep. `prev_sample` should be used as next model input in the
            denoising loop.
        pred_original_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)` for images):
            The predicted denoised sample `(x_{0})` based on the model output from the current timestep.
            `pred_original_sample` can be used to preview progress or for guidance.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class EulerMaruyamaScheduler(SchedulerMixin, ConfigMixin):
    """
    `EulerMaruyamaScheduler` integrates the reverse-time VP-SDE (Song et al. 2021, eq. 6) with the Euler-Maruyama
    method on the timesteps of a DDPM-trained model. It is stochastic (first order, one model call per step) and
    loads from any DDPM-style config: `EulerMaruyamaScheduler.from_config(pipe.scheduler.config)`.

    This model inherits from [`SchedulerMixin`] and [`ConfigMixin`]. The config arguments have the names and
    defaults of [`DDPMScheduler`]; DDPM-only keys (`variance_type`, `clip_sample`, `thresholding`, ...) are ignored.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            The number of diffusion steps to train the model.
        beta_start (`float`, defaults to 0.0001):
            The starting `beta` value of inference.
        beta_end (`float`, defaults to 0.02):
            The final `beta` value.
        beta_schedule (`str`, defaults to `"linear"`):
            The beta schedule, a mapping from a beta range to a sequence of betas for stepping the model. Choose from
            `linear`, `scaled_linear`, `squaredcos_cap_v2`, `sigmoid` or `laplace`.
        trained_betas (`np.ndarray` or `list[float]`, *optional*):
            An array of betas to pass directly to the constructor without using `beta_start` and `beta_end`.
        prediction_type (`str`, defaults to `"epsilon"`):
            What the model predicts: `epsilon` (the noise), `sample` (x_0) or `v_prediction` (see section 2.4 of
            [Imagen Video](https://imagen.research.google/video/paper.pdf)).
        timestep_spacing (`str`, defaults to `"leading"`):
            The way the timesteps should be scaled. Refer to Table 2 of the [Common Diffusion Noise Schedules and
            Sample Steps are Flawed](https://huggingface.co/papers/2305.08891) for more information.
        steps_offset (`int`, defaults to 0):
            An offset added to the inference steps, as required by some model families (`"leading"` spacing only).
            `set_timesteps` raises a `ValueError` if the offset pushes a timestep to `num_train_timesteps` or beyond.
        rescale_betas_zero_snr (`bool`, defaults to `False`):
            Whether to rescale the betas to have zero terminal SNR, as [`DDPMScheduler`] does. This enables the model
            to generate very bright and dark samples instead of limiting it to samples with medium brightness.
            `alphas_cumprod` then ends in exactly 0, as DDPM's; `step` divides by max(ᾱ_t, 2**-24) (the floor
            [`EulerDiscreteScheduler`] uses) so that the first step stays finite.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        # The same betas as DDPMScheduler, so that a model trained with DDPM's forward process is sampled correctly.
        if trained_betas is not None:
            self.betas = torch.tensor(trained_betas, dtype=torch.float32)
        elif beta_schedule == "linear":
            self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            # this schedule is very specific to the latent diffusion model.
            self.betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        elif beta_schedule == "squaredcos_cap_v2":
            self.betas = betas_for_alpha_bar(num_train_timesteps)
        elif beta_schedule == "laplace":
            self.betas = betas_for_alpha_bar(num_train_timesteps, alpha_transform_type="laplace")
        elif beta_schedule == "sigmoid":
            self.betas = (
                torch.sigmoid(torch.linspace(-6, 6, num_train_timesteps)) * (beta_end - beta_start) + beta_start
            )
        else:
            raise NotImplementedError(f"{beta_schedule} is not implemented for {self.__class__}")
        # Rescale for zero SNR at the last timestep, exactly as DDPMScheduler
        if rescale_betas_zero_snr:
            self.betas = rescale_zero_terminal_snr(self.betas)
        if prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(
                f"`prediction_type`={prediction_type!r} must be one of 'epsilon', 'sample' or 'v_prediction'."
            )
        if timestep_spacing not in ("linspace", "leading", "trailing"):
            raise ValueError(
                f"`timestep_spacing`={timestep_spacing!r} must be one of 'linspace', 'leading' or 'trailing'."
            )

        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

        # standard deviation of the initial noise distribution (the VP-SDE's prior is N(0, I))
        self.init_noise_sigma = 1.0

        # setable values
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())
        self._step_index = None
        self._begin_index = None

    @classmethod
    def _get_compatibles(cls) -> list[type]:
        # diffusers looks compatible classes up by name in `diffusers` itself, which would leave this class out.
        return [*super()._get_compatibles(), cls]

    @property
    def step_index(self) -> int | None:
        """The index counter for the current timestep. It increases by 1 after each scheduler step."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """The index of the first timestep. It should be set from the pipeline with `set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """
        Sets the begin index for the scheduler. This function should be run from the pipeline before inference
        (image-to-image starts part-way through the schedule).

        Args:
            begin_index (`int`, defaults to `0`):
                The begin index for the scheduler.
        """
        self._begin_index = begin_index

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        """
        Ensures interchangeability with schedulers that need to scale the denoising model input depending on the
        current timestep. The VP-SDE needs no scaling: the sample is returned unchanged.

        Args:
            sample (`torch.Tensor`):
                The input sample.
            timestep (`int`, *optional*):
                The current timestep in the diffusion chain.

        Returns:
            `torch.Tensor`:
                The input sample.
        """
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """
        Sets the discrete timesteps used for the diffusion chain (to be run before inference).

        Args:
            num_inference_steps (`int`, *optional*):
                The number of Euler-Maruyama steps. If used, `timesteps` must be `None`.
            device (`str` or `torch.device`, *optional*):
                The device to which the timesteps should be moved to. If `None`, the timesteps are not moved.
            timesteps (`list[int]`, *optional*):
                Custom timesteps, strictly decreasing and below `num_train_timesteps`. If passed,
                `num_inference_steps` must be `None`.
        """
        num_train_timesteps = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of `num_inference_steps` or `timesteps`.")
        if timesteps is not None:
            timesteps = np.array([int(t) for t in timesteps], dtype=np.int64)
            if len(timesteps) == 0 or (np.diff(timesteps) >= 0).any():
                raise ValueError(
                    f"`timesteps` must be a non-empty, strictly decreasing list, got {timesteps.tolist()}."
                )
            if timesteps[0] >= num_train_timesteps or timesteps[-1] < 0:
                raise ValueError(f"`timesteps` must lie in [0, {num_train_timesteps}), got {timesteps.tolist()}.")
        else:
            if not 1 <= num_inference_steps <= num_train_timesteps:
                raise ValueError(
                    f"`num_inference_steps`={num_inference_steps} must be between 1 and "
                    f"`num_train_timesteps`={num_train_timesteps}."
                )
            # "linspace", "leading", "trailing" as in Table 2 of https://huggingface.co/papers/2305.08891 (as DDPM)
            if self.config.timestep_spacing == "linspace":
                timesteps = np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1].astype(np.int64)
            elif self.config.timestep_spacing == "leading":
                step_ratio = num_train_timesteps // num_inference_steps
                timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].astype(np.int64)
                timesteps += self.config.steps_offset
                if timesteps[0] >= num_train_timesteps:
                    raise ValueError(
                        f"`steps_offset`={self.config.steps_offset} with `num_inference_steps`={num_inference_steps} "
                        f"gives timestep {int(timesteps[0])}, outside [0, `num_train_timesteps`={num_train_timesteps}); "
                        "use fewer inference steps, `steps_offset`=0 or `timestep_spacing`='trailing'."
                    )
            else:  # "trailing"
                step_ratio = num_train_timesteps / num_inference_steps
                timesteps = np.round(np.arange(num_train_timesteps, 0, -step_ratio)).astype(np.int64) - 1
                # the float arange can overshoot by one entry, ~0 -> timestep -1 (61 of 1000 steps; DDPM's does too):
                # it is no training timestep (ᾱ_{-1} wraps to ᾱ_T, NaN images), so keep exactly the steps asked for
                timesteps = timesteps[:num_inference_steps]
        self.num_inference_steps = len(timesteps)
        self.timesteps = torch.from_numpy(timesteps.copy()).to(device)
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(self, timestep: int | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """
        Find the index of a given timestep in the timestep schedule.

        Args:
            timestep (`int` or `torch.Tensor`):
                The timestep value to find in the schedule.
            schedule_timesteps (`torch.Tensor`, *optional*):
                The timestep schedule to search in. If `None`, uses `self.timesteps`.

        Returns:
            `int`: the index of the timestep in the schedule.
        """
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        indices = (schedule_timesteps == timestep).nonzero()
        if len(indices) == 0:
            raise ValueError(f"`timestep`={timestep} is not in the scheduler's timesteps; call `set_timesteps` first.")
        # as diffusers' Euler schedulers: the second match if a timestep repeats, so that none is skipped
        return indices[1 if len(indices) > 1 else 0].item()

    def _init_step_index(self, timestep: int | torch.Tensor) -> None:
        if self.begin_index is None:
            if isinstance(timestep, torch.Tensor):
                timestep = timestep.to(self.timesteps.device)
            self._step_index = self.index_for_timestep(timestep)
        else:
            self._step_index = self._begin_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> EulerMaruyamaSchedulerOutput | tuple:
        """
        One Euler-Maruyama step of the reverse-time VP-SDE, from `timestep` to the next (smaller) one.

        Args:
            model_output (`torch.Tensor`):
                The direct output from the learned diffusion model, of the same shape as `sample`.
            timestep (`int` or `torch.Tensor`):
                The current discrete timestep in the diffusion chain.
            sample (`torch.Tensor`):
                A current instance of a sample created by the diffusion process, `(batch, channels, height, width)`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A random number generator (or one per batch item) for the Brownian increment.
            return_dict (`bool`, defaults to `True`):
                Whether or not to return an [`EulerMaruyamaSchedulerOutput`] or a `tuple`.

        Returns:
            [`EulerMaruyamaSchedulerOutput`] or `tuple`:
                If return_dict is `True`, [`EulerMaruyamaSchedulerOutput`] is returned, otherwise a tuple
                `(prev_sample, pred_original_sample)`.
        """
        if self.step_index is None:
            self._init_step_index(timestep)
        t = int(self.timesteps[self.step_index])
        is_last_step = self.step_index == len(self.timesteps) - 1
        # Notation (Song et al. 2021): s < t is the next timestep; time runs backwards, Δt = t - s > 0.
        # alpha_prod_t -> ᾱ_t, alpha_prod_prev -> ᾱ_s (ᾱ = 1 at the end, s = -1, where the data lives).
        alpha_prod_t = self.alphas_cumprod[t].to(device=sample.device, dtype=torch.float32)
        # ᾱ_T = 0 with `rescale_betas_zero_snr`: divide by 2**-24 there instead, as EulerDiscreteScheduler does
        alpha_prod_t = alpha_prod_t.clamp(min=2**-24)
        alpha_prod_prev = (
            torch.ones_like(alpha_prod_t)
            if is_last_step
            else self.alphas_cumprod[int(self.timesteps[self.step_index + 1])].to(alpha_prod_t)
        )
        beta_prod_t = 1 - alpha_prod_t
        x_t = sample.to(torch.float32)  # compute in float32 whatever the model's dtype
        model_output = model_output.to(torch.float32)

        # 1. ε̂ and x̂_0 from the model output ("predicted noise" and "predicted x_0" of the DDIM paper, eq. 12)
        if self.config.prediction_type == "epsilon":
            pred_epsilon = model_output
            pred_original_sample = (x_t - beta_prod_t**0.5 * pred_epsilon) / alpha_prod_t**0.5
        elif self.config.prediction_type == "sample":
            pred_original_sample = model_output
            pred_epsilon = (x_t - alpha_prod_t**0.5 * pred_original_sample) / beta_prod_t**0.5
        else:  # "v_prediction": v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0
            pred_original_sample = alpha_prod_t**0.5 * x_t - beta_prod_t**0.5 * model_output
            pred_epsilon = alpha_prod_t**0.5 * model_output + beta_prod_t**0.5 * x_t

        if is_last_step:
            # 2'. At the end of the chain (ᾱ_s = 1) return the denoised estimate x̂_0 (Tweedie's formula) and add
            # no noise, as DDPM and DDIM do on their last step.
            prev_sample = pred_original_sample
        else:
            # 2. score ∇x log p_t(x_t) = -ε̂ / sqrt(1 - ᾱ_t)
            score = -pred_epsilon / beta_prod_t**0.5
            # 3. β(t)Δt: the variance the forward (DDPM) chain adds between s and t, 1 - ᾱ_t/ᾱ_s. For a single
            #    training step it is exactly β_t (Song et al. 2021, appendix B: β(i/N) Δt = β_i with Δt = 1/N), and it
            #    stays below 1 for every schedule, where β(t)·(t - s) would overshoot at the end of a cosine schedule.
            beta_dt = 1 - alpha_prod_t / alpha_prod_prev
            # 4. Euler-Maruyama on eq. 6 with dt = -Δt and f = -1/2 β x, g² = β:
            #    x_s = x_t - [f(x_t, t) - g(t)² ∇x log p_t(x_t)] Δt + g(t) sqrt(Δt) z,  z ~ N(0, I)
            #        = x_t + (1/2 x_t + score) β(t)Δt + sqrt(β(t)Δt) z
            prev_sample_mean = x_t + (0.5 * x_t + score) * beta_dt
            noise = randn_tensor(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            prev_sample = prev_sample_mean + beta_dt**0.5 * noise

        self._step_index += 1
        prev_sample = prev_sample.to(sample.dtype)
        pred_original_sample = pred_original_sample.to(sample.dtype)
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return EulerMaruyamaSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.IntTensor,
    ) -> torch.Tensor:
        """
        Forward diffusion, exactly as [`DDPMScheduler.add_noise`]: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.

        Args:
            original_samples (`torch.Tensor`):
                The clean samples x_0, `(batch, channels, height, width)`.
            noise (`torch.Tensor`):
                The noise ε, same shape.
            timesteps (`torch.IntTensor`):
                One timestep per sample (or one for all).

        Returns:
            `torch.Tensor`: the noisy samples x_t.
        """
        alphas_cumprod = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        timesteps = timesteps.to(original_samples.device)
        sqrt_alpha_prod = alphas_cumprod[timesteps].flatten() ** 0.5
        sqrt_one_minus_alpha_prod = (1 - alphas_cumprod[timesteps]).flatten() ** 0.5
        # broadcast (batch,) against (batch, channels, height, width)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        return sqrt_alpha_prod.reshape(shape) * original_samples + sqrt_one_minus_alpha_prod.reshape(shape) * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps


__all__ = ["EulerMaruyamaScheduler", "EulerMaruyamaSchedulerOutput"]
