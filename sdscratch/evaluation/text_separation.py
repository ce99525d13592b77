"""Does the text encoder tell the attribute words apart? A diagnostic of the UNet's conditioning.

The UNet only sees the text encoder's hidden states. If "smiling" and "frowning" give nearly the same hidden
states, no UNet can follow them, however long it trains; prompt adherence then stays at chance for that
attribute while the VAE and the classifier read it fine. `text_encoder_separation` measures that directly,
without generating an image: for prompts that differ in one attribute's words only
(`attribute_caption`: "a cartoon face with a smile" vs "... with a frown"), the relative change of the hidden
states the UNet cross-attends to.

A freshly initialised encoder of the same configuration separates every attribute about equally (random
embeddings are all different); training can only make an attribute more or less visible to the UNet than that,
so `random_init_separation` is the number to read each value against (docs/evaluation.md).
"""

from __future__ import annotations

import copy
import itertools
import random
from typing import Optional

import torch

from ..data.captions import ATTRIBUTES, attribute_probe
from ..data.cartoon_faces import sample_attributes
from ..data.digits import DIGIT_CAPTION_TEMPLATES, digit_caption

TASKS = ("cartoon-faces", "digits")


def _probe_groups(task: str, num_faces: int, seed: int) -> dict[str, list[list[str]]]:
    """attribute -> groups of prompts; the prompts of a group differ in that attribute only, one per value."""
    if task == "digits":
        return {"digit": [[digit_caption(d, style) for d in range(10)] for style in DIGIT_CAPTION_TEMPLATES]}
    rng = random.Random(f"sdscratch-text-separation-{seed}")
    faces = [sample_attributes(rng.randrange(2**62)) for _ in range(num_faces)]
    return {name: [attribute_probe(face, name)[1] for face in faces] for name in ATTRIBUTES}


@torch.no_grad()
def _encode(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    # Exactly what `CartoonFacePipeline._encode_text` gives the UNet: padded to model_max_length, no mask.
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0].float()


def _separation(tokenizer, text_encoder, groups: dict[str, list[list[str]]]) -> dict[str, float]:
    result = {}
    for name, prompt_groups in groups.items():
        values = []
        for prompts in prompt_groups:
            hidden = _encode(tokenizer, text_encoder, prompts)  # (V, L, D)
            norms = hidden.norm(dim=-1).sum(dim=-1)  # (V,)
            for i, j in itertools.combinations(range(len(prompts)), 2):
                change = (hidden[i] - hidden[j]).norm(dim=-1).sum()
                values.append((change / (0.5 * (norms[i] + norms[j]))).item())
        result[name] = sum(values) / len(values)
    return result


def text_encoder_separation(
    tokenizer,
    text_encoder: torch.nn.Module,
    task: str = "cartoon-faces",
    num_faces: int = 16,
    seed: int = 0,
    random_init_reference: bool = True,
) -> dict[str, dict[str, float]]:
    r"""How much the text encoder's output changes when a prompt names another value of one attribute.

    For each attribute a prompt can name, `num_faces` random faces give one group of prompts each, one prompt per
    value of the attribute and the same words otherwise ("a cartoon face with blue eyes", "... green eyes", ...).
    Every pair of prompts in a group is encoded as the pipeline encodes prompts (padded to the tokenizer's
    `model_max_length`) and scored

        sum over positions of |h_a - h_b|  /  mean of (sum over positions of |h_a|, sum of |h_b|)

    (`|.|` the Euclidean norm of a position's hidden state): the relative change of the cross-attention context.
    The score of an attribute is the mean over its pairs. 0 means the encoder maps the values to the same
    context: the UNet cannot follow that attribute at all.

    Args:
        tokenizer: The pipeline's tokenizer.
        text_encoder (`torch.nn.Module`): The pipeline's text encoder (a `transformers` model whose output `[0]` is
            `(batch, seq_len, hidden)`); it is copied to float32 for the measurement and left unchanged.
        task (`str`, defaults to "cartoon-faces"): "cartoon-faces" (every attribute of `ATTRIBUTES`) or "digits"
            (one attribute, "digit": "0" vs "1" ... in each caption variant of the digit data set).
        num_faces (`int`, defaults to 16): Prompt groups per face attribute.
        seed (`int`, defaults to 0): Chooses the faces.
        random_init_reference (`bool`, defaults to `True`): Also score a freshly initialised encoder of the same
            class and config (seeded by `seed`): the baseline each number reads against.

    Returns:
        `dict`: `separation` {attribute: score}, and with `random_init_reference` also `random_init_separation`
        {attribute: score}.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not isinstance(num_faces, int) or num_faces < 1:
        raise ValueError(f"num_faces must be a positive integer, got {num_faces!r}")
    if getattr(tokenizer, "model_max_length", None) is None:
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    groups = _probe_groups(task, num_faces, seed)
    encoder = copy.deepcopy(text_encoder).float().eval()
    result = {"separation": _separation(tokenizer, encoder, groups)}
    if random_init_reference:
        reference = _fresh_copy(encoder, seed)
        if reference is not None:
            result["random_init_separation"] = _separation(tokenizer, reference, groups)
    return result


def _fresh_copy(text_encoder: torch.nn.Module, seed: int) -> Optional[torch.nn.Module]:
    """A newly initialised model of the same class and config, or `None` for a model without a `config`."""
    config = getattr(text_encoder, "config", None)
    if config is None:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return type(text_encoder)(config).float().eval()
