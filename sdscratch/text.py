"""Text conditioning parts: an offline CLIP tokenizer, a small CLIP text encoder, and a pretrained CLIP loader.

Stable Diffusion conditions its UNet on the hidden states of a CLIP text encoder. Here the tokenizer can be
trained offline on the captions of a data set, and the text encoder trained from scratch together with the UNet.

The tokenizer is a genuine transformers [`~transformers.CLIPTokenizer`]: the same normalizer (NFC, whitespace
collapse, lowercase), pre-tokenizer (CLIP's word regex + byte-level), BPE model (`</w>` end-of-word suffix) and
`<|startoftext|> ... <|endoftext|>` post-processor as `openai/clip-vit-base-patch32`; only the vocabulary and merges
are learned from our captions. Consequences:
- its vocabulary starts with the 256 byte symbols and their 256 `</w>` forms, so *every* string tokenizes (an
  unknown word falls back to sub-words or bytes; no id is ever out of range and nothing crashes);
- it saves as `tokenizer_class: "CLIPTokenizer"` and a pipeline records it in `model_index.json` as
  `["transformers", "CLIPTokenizer"]`, so `CartoonFacePipeline.from_pretrained` restores the same class.

In transformers 5, `CLIPTokenizerFast` *is* `CLIPTokenizer` (an alias), and a `PreTrainedTokenizerFast` reloads as
`TokenizersBackend`; `CLIPTokenizer(vocab_file=..., merges_file=...)` silently builds a 3-token vocabulary, so this
module passes `vocab=` / `merges=` objects and [`load_text_components`] checks the loaded vocabulary size.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.activations import ACT2FN

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD_SUFFIX = "</w>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE, in GPT-2 / CLIP vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _learn_merges(word_counts: dict[str, int], num_merges: int, min_frequency: int) -> list[tuple[str, str]]:
    """Byte-pair-encoding merges (Sennrich et al. 2016) of pre-tokenized words, each word ending in a `</w>`
    symbol: repeatedly the most frequent adjacent pair of symbols, counted over the words' frequencies, ties broken
    by the pair's strings (so the same words always give the same merges, unlike the `tokenizers` trainer, whose
    hash maps break ties differently from run to run). Stops after `num_merges` merges or when no pair occurs
    `min_frequency` times."""
    vocabulary = sorted(word_counts)
    words = [list(word[:-1]) + [word[-1] + END_OF_WORD_SUFFIX] for word in vocabulary]  # symbols of each word
    frequency = [word_counts[word] for word in vocabulary]
    pair_counts: Counter[tuple[str, str]] = Counter()
    words_with: defaultdict[tuple[str, str], set[int]] = defaultdict(set)  # may hold stale ids: harmless
    for i, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += frequency[i]
            words_with[pair].add(i)
    # a heap of (-count, pair), stale entries skipped when popped: the most frequent pair, then the smallest
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges and heap:
        negative_count, best = heapq.heappop(heap)
        if pair_counts.get(best) != -negative_count:
            continue  # stale: the pair's count changed since
        if -negative_count < min_frequency:
            break
        merges.append(best)
        changed = set()
        for i in sorted(words_with.pop(best)):
            symbols, merged, j = words[i], [], 0
            while j < len(symbols):
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == best:
                    merged.append(symbols[j] + symbols[j + 1])
                    j += 2
                else:
                    merged.append(symbols[j])
                    j += 1
            for pair in zip(symbols, symbols[1:]):  # the word's pairs before the merge, out...
                pair_counts[pair] -= frequency[i]
                changed.add(pair)
            for pair in zip(merged, merged[1:]):  # ...and after it, in
                pair_counts[pair] += frequency[i]
                words_with[pair].add(i)
                changed.add(pair)
            words[i] = merged
        pair_counts.pop(best, None)
        for pair in sorted(changed - {best}):
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair))
            else:
                del pair_counts[pair]
    return merges


def _check_positive_integers(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be an integer, got {value!r}.")
        if value < 1:
            raise ValueError(f"`{name}` must be at least 1, got {value}.")


def check_tokenizer_settings(model_max_length: int = 32, vocab_size: int = 1024, min_frequency: int = 2) -> None:
    """The checks [`build_tokenizer`] makes of its settings, without captions: the training scripts run them on their
    config's `tokenizer` section before loading any data. Raises a `TypeError` / `ValueError` naming the setting."""
    _check_positive_integers(model_max_length=model_max_length, vocab_size=vocab_size, min_frequency=min_frequency)
    num_fixed = 2 * len(_byte_symbols()) + 2  # bytes, bytes + "</w>", bos, eos
    if vocab_size < num_fixed:
        raise ValueError(f"`vocab_size` must be at least {num_fixed} (bytes + special tokens), got {vocab_size}.")
    if model_max_length < 2:
        raise ValueError(f"`model_max_length` must be at least 2 (bos + eos), got {model_max_length}.")


def build_tokenizer(
    captions: Iterable[str],
    model_max_length: int = 32,
    vocab_size: int = 1024,
    min_frequency: int = 2,
) -> CLIPTokenizer:
    r"""
    Train a CLIP byte-level BPE tokenizer on `captions`, fully offline.

    The vocabulary is `[256 byte symbols] + [256 byte symbols + "</w>"] + [one token per learned merge] +
    ["<|startoftext|>", "<|endoftext|>"]`, so `bos_token_id == len(tokenizer) - 2` and
    `eos_token_id == pad_token_id == unk_token_id == len(tokenizer) - 1` (as in CLIP, padding uses `<|endoftext|>`).
    Training is deterministic: the same captions give the same ids (ties between equally frequent pairs are broken
    by the pairs' strings; the `tokenizers` library's trainer, used before 2026-11-23, broke them differently from
    call to call). The training scripts still keep the tokenizer in every checkpoint, and a resumed run uses it.

    Args:
        captions (`Iterable[str]`):
            The training texts, e.g. a data set's caption column. Must contain at least one non-empty string.
        model_max_length (`int`, defaults to 32):
            The padded length of every prompt (`padding="max_length"`), including `<|startoftext|>` and
            `<|endoftext|>`. The text encoder's `max_position_embeddings` must be at least this.
        vocab_size (`int`, defaults to 1024):
            Upper bound on the vocabulary size (it is smaller when the captions run out of merges). Must be at least
            514 (the byte symbols plus the two special tokens).
        min_frequency (`int`, defaults to 2):
            A pair of symbols is merged only if it occurs at least this often in `captions`.

    Returns:
        [`~transformers.CLIPTokenizer`]: used like any CLIP tokenizer:
        `tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt").input_ids` of shape `(batch, model_max_length)`.
    """
    if isinstance(captions, str):
        raise TypeError("`captions` must be an iterable of strings, not a single string.")
    captions = list(captions)
    if not all(isinstance(caption, str) for caption in captions):
        raise TypeError("`captions` must contain only strings.")
    if not any(caption.strip() for caption in captions):
        raise ValueError("`captions` must contain at least one non-empty string to train a tokenizer on.")
    check_tokenizer_settings(model_max_length, vocab_size, min_frequency)
    base = _byte_symbols()
    num_fixed = 2 * len(base) + 2  # bytes, bytes + "</w>", bos, eos

    # Words exactly as CLIP's normalizer and pre-tokenizer (borrowed from an empty CLIPTokenizer) cut them.
    clip_pipeline = CLIPTokenizer().backend_tokenizer
    word_counts: Counter[str] = Counter()
    for caption in captions:
        normalized = clip_pipeline.normalizer.normalize_str(caption)
        word_counts.update(word for word, _ in clip_pipeline.pre_tokenizer.pre_tokenize_str(normalized))
    merges = _learn_merges(word_counts, vocab_size - num_fixed, min_frequency)

    # The vocabulary in CLIP's order: every byte both inside and at the end of a word, then the merges.
    tokens = base + [symbol + END_OF_WORD_SUFFIX for symbol in base]
    tokens += ["".join(pair) for pair in merges] + [BOS_TOKEN, EOS_TOKEN]
    # Two merges can spell the same token ("a"+"bc", "ab"+"c"): keep its first id.
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}

    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=model_max_length,
    )


def default_text_encoder_config(
    vocab_size: int,
    max_position_embeddings: int = 32,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    **overrides: Any,
) -> CLIPTextConfig:
    r"""
    A small [`~transformers.CLIPTextConfig`] for a text encoder trained from scratch with the UNet.

    Defaults: 4 layers of width 256 with 4 heads and a 1024-wide MLP, GELU: about 3.2M parameters plus the
    `vocab_size x 256` token embeddings. The UNet's `cross_attention_dim` must equal `hidden_size`.

    Args:
        vocab_size (`int`):
            Number of token ids, i.e. `len(tokenizer)`.
        max_position_embeddings (`int`, defaults to 32):
            Longest token sequence; at least the tokenizer's `model_max_length`.
        bos_token_id (`int`, *optional*):
            Id of `<|startoftext|>`; defaults to `vocab_size - 2` (the layout of [`build_tokenizer`]).
        eos_token_id (`int`, *optional*):
            Id of `<|endoftext|>`; defaults to `vocab_size - 1`. `CLIPTextModel` pools the hidden state at the first
            `eos_token_id` of each sequence (its legacy `argmax(input_ids)` rule applies only when this is 2), so it
            must match the tokenizer.
        pad_token_id (`int`, *optional*):
            Id of the padding token; defaults to `eos_token_id` (CLIP pads with `<|endoftext|>`).
        overrides:
            Any other `CLIPTextConfig` argument, e.g. `hidden_size=128, num_hidden_layers=2`.

    Returns:
        [`~transformers.CLIPTextConfig`]
    """
    if vocab_size < 3:
        raise ValueError(f"`vocab_size` must be at least 3, got {vocab_size}.")
    bos_token_id = vocab_size - 2 if bos_token_id is None else bos_token_id
    eos_token_id = vocab_size - 1 if eos_token_id is None else eos_token_id
    pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
    for name, value in (
        ("bos_token_id", bos_token_id),
        ("eos_token_id", eos_token_id),
        ("pad_token_id", pad_token_id),
    ):
        if not 0 <= value < vocab_size:
            raise ValueError(f"`{name}`={value} must lie in [0, vocab_size={vocab_size}).")
    if eos_token_id == 2:
        # CLIPTextModel would silently pool at argmax(input_ids) instead of at the eos token.
        raise ValueError("`eos_token_id`=2 triggers CLIPTextModel's legacy pooling rule; put <|endoftext|> elsewhere.")
    kwargs: dict[str, Any] = {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "projection_dim": 256,
        "hidden_act": "gelu",
    }
    kwargs.update(overrides)
    sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "projection_dim")
    _check_positive_integers(max_position_embeddings=max_position_embeddings, **{k: kwargs[k] for k in sizes})
    if isinstance(kwargs["hidden_act"], str) and kwargs["hidden_act"] not in ACT2FN:
        raise ValueError(f"`hidden_act` must be one of {sorted(ACT2FN)}, got {kwargs['hidden_act']!r}.")
    if kwargs["hidden_size"] % kwargs["num_attention_heads"]:
        raise ValueError(
            f"`hidden_size`={kwargs['hidden_size']} must be divisible by "
            f"`num_attention_heads`={kwargs['num_attention_heads']}."
        )
    return CLIPTextConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **kwargs,
    )


# transformers' `model_max_length` when a tokenizer has no limit: `VERY_LARGE_INTEGER` = int(1e30).
NO_MODEL_MAX_LENGTH = int(1e30)


def _check_model_max_length(tokenizer: CLIPTokenizer) -> None:
    """Raise when `tokenizer` has transformers' "no limit" `model_max_length`: a text encoder needs a length."""
    if tokenizer.model_max_length >= NO_MODEL_MAX_LENGTH:
        raise ValueError(
            f"The tokenizer's `model_max_length` is {tokenizer.model_max_length} (transformers' 'no limit' value): "
            "set `tokenizer.model_max_length` (e.g. 77, CLIP's, or `build_tokenizer(..., model_max_length=...)`) "
            "to the number of positions the text encoder should have."
        )


def build_text_encoder(tokenizer: CLIPTokenizer, **overrides: Any) -> CLIPTextModel:
    r"""
    A freshly initialised [`~transformers.CLIPTextModel`] whose vocabulary, positions and special ids match
    `tokenizer`.

    Args:
        tokenizer ([`~transformers.CLIPTokenizer`]):
            E.g. from [`build_tokenizer`]. Its `model_max_length` sets the positions, so it must be set (not
            transformers' "no limit" value, int(1e30)).
        overrides:
            Passed to [`default_text_encoder_config`] (e.g. `hidden_size=128`, `max_position_embeddings=77`).

    Returns:
        [`~transformers.CLIPTextModel`]: `text_encoder(input_ids)[0]` has shape `(batch, seq_len, hidden_size)`.
    """
    _check_model_max_length(tokenizer)
    kwargs: dict[str, Any] = {
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    kwargs.update(overrides)
    if kwargs["max_position_embeddings"] < tokenizer.model_max_length:
        raise ValueError(
            f"`max_position_embeddings`={kwargs['max_position_embeddings']} is shorter than the tokenizer's "
            f"`model_max_length`={tokenizer.model_max_length}."
        )
    return CLIPTextModel(default_text_encoder_config(len(tokenizer), **kwargs))


# the keys of a `CLIPModel` checkpoint outside its text tower (regexes, as `_keys_to_ignore_on_load_unexpected`)
_OTHER_CLIP_KEYS = [r"^vision_model\.", r"^visual_projection\.", r"^text_projection\.", r"^logit_scale$"]


def load_text_components(
    pretrained_model_name_or_path: str | os.PathLike,
    tokenizer_subfolder: str | None = None,
    text_encoder_subfolder: str | None = None,
    torch_dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> tuple[CLIPTokenizer, CLIPTextModel]:
    r"""
    Load a pretrained CLIP tokenizer and text encoder (a Hub id when online, or a local folder in the Hub layout).

    Layouts:
    - a CLIP repository such as `openai/clip-vit-base-patch32` (tokenizer files and a full `CLIPModel` at the
      root; only its text tower is loaded): leave both subfolders `None`;
    - a Stable Diffusion / sdscratch pipeline folder: `tokenizer_subfolder="tokenizer"`,
      `text_encoder_subfolder="text_encoder"`.

    Args:
        pretrained_model_name_or_path (`str` or `os.PathLike`):
            Hub repository id or local directory.
        tokenizer_subfolder (`str`, *optional*):
            Subfolder holding `tokenizer.json` or `vocab.json` + `merges.txt`.
        text_encoder_subfolder (`str`, *optional*):
            Subfolder holding the `CLIPTextModel` / `CLIPModel` `config.json` and weights.
        torch_dtype (`torch.dtype`, *optional*):
            Load the text encoder in this dtype (default float32, whatever dtype its weights are stored in; use
            float32 or bfloat16 on CPU).
        kwargs:
            Passed to both `from_pretrained` calls (e.g. `revision`, `local_files_only`). Without them, a Hub id is
            read from its snapshot folder (`sdscratch.hub.snapshot_folder`: downloaded when the Hub answers, else
            the cached one, at once, or a clear error).

    Returns:
        `tuple[CLIPTokenizer, CLIPTextModel]`: the text encoder is in eval mode. Raises a `ValueError` when the
        encoder has fewer tokens than the tokenizer, or fewer `max_position_embeddings` than the tokenizer's
        `model_max_length` (or the tokenizer has no `model_max_length`).
    """
    if not kwargs:  # no Hub options: one request at most (transformers retries every file when the network is down)
        from .hub import TEXT_ENCODER_FILES, snapshot_folder

        pretrained_model_name_or_path = snapshot_folder(
            pretrained_model_name_or_path, "pretrained_model_name_or_path", TEXT_ENCODER_FILES
        )
    tokenizer = CLIPTokenizer.from_pretrained(
        pretrained_model_name_or_path, **({"subfolder": tokenizer_subfolder} if tokenizer_subfolder else {}), **kwargs
    )
    if len(tokenizer) <= 3:
        # transformers 5 builds a placeholder 3-token CLIP tokenizer when it finds no vocabulary files.
        raise ValueError(
            f"No CLIP vocabulary found in {pretrained_model_name_or_path!r} (subfolder={tokenizer_subfolder!r}): "
            "expected tokenizer.json or vocab.json + merges.txt."
        )
    model_kwargs = dict(kwargs)
    if text_encoder_subfolder:
        model_kwargs["subfolder"] = text_encoder_subfolder
    # float32 unless asked: transformers 5 would load the checkpoint's own dtype ("auto"), fp16 for many stored
    # encoders, which computes at about 1 GFLOP/s on a CPU and meets a float32 UNet with a dtype error
    model_kwargs["dtype"] = torch.float32 if torch_dtype is None else torch_dtype
    # a full CLIPModel checkpoint also holds the image tower and both projections, which a CLIPTextModel does not
    # have: transformers 5 would print each of their keys as UNEXPECTED (hundreds of lines for openai's CLIP).
    # Ignored by name, as transformers' own `_keys_to_ignore_on_load_unexpected` does; anything else still reports.
    ignored = CLIPTextModel._keys_to_ignore_on_load_unexpected
    CLIPTextModel._keys_to_ignore_on_load_unexpected = list(ignored or []) + _OTHER_CLIP_KEYS
    try:
        text_encoder = CLIPTextModel.from_pretrained(pretrained_model_name_or_path, **model_kwargs)
    finally:
        CLIPTextModel._keys_to_ignore_on_load_unexpected = ignored
    text_encoder.eval()
    if text_encoder.config.vocab_size < len(tokenizer):
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the text encoder only {text_encoder.config.vocab_size}."
        )
    _check_model_max_length(tokenizer)
    if tokenizer.model_max_length > text_encoder.config.max_position_embeddings:
        raise ValueError(
            f"The tokenizer's `model_max_length`={tokenizer.model_max_length} is longer than the text encoder's "
            f"`max_position_embeddings`={text_encoder.config.max_position_embeddings}: prompts padded to it would "
            "not fit; set `model_max_length` in the tokenizer's `tokenizer_config.json` to at most "
            f"{text_encoder.config.max_position_embeddings}."
        )
    return tokenizer, text_encoder


__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "build_text_encoder",
    "build_tokenizer",
    "default_text_encoder_config",
    "load_text_components",
]
