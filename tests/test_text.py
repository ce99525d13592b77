"""Tests for sdscratch.text: offline CLIP tokenizer, small text encoder, pretrained CLIP loading."""

import copy
import json
import logging

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextModel, CLIPTokenizer

from sdscratch.data import cartoon_faces_dataset
from sdscratch.text import (
    BOS_TOKEN,
    EOS_TOKEN,
    _learn_merges,
    build_text_encoder,
    build_tokenizer,
    default_text_encoder_config,
    load_text_components,
)

CAPTIONS = [
    "Cartoon face with glasses, without facial hair, brown hair and with white skin",
    "Cartoon face without glasses, with facial hair, whitish-yellow hair and with dark skin",
    "Cartoon face with glasses, with facial hair, black hair and with yellow skin",
    "Cartoon face without glasses, without facial hair, orange hair and with brown skin",
]
TINY_ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def _ids(tokenizer, prompt):
    return tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CAPTIONS, model_max_length=24)


class _TextPipeline(DiffusionPipeline):
    """The text half of a pipeline, to check how diffusers records and restores the tokenizer."""

    def __init__(self, tokenizer, text_encoder):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder)


def test_tokenizer_is_clip_with_clip_special_tokens(tokenizer):
    assert type(tokenizer) is CLIPTokenizer
    n = len(tokenizer)
    assert 514 < n <= 1024
    assert tokenizer.bos_token == BOS_TOKEN and tokenizer.bos_token_id == n - 2
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.eos_token_id == n - 1
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.model_max_length == 24


def test_known_words_are_single_tokens(tokenizer):
    vocab = tokenizer.get_vocab()
    # The vocabulary layout is fixed: byte "!" is id 0, "!</w>" is id 256.
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    words = ["cartoon", "face", "with", "glasses", ",", "facial", "hair"]
    expected = [tokenizer.bos_token_id] + [vocab[w + "</w>"] for w in words] + [tokenizer.eos_token_id]
    enc = _ids(tokenizer, "Cartoon  FACE with glasses, facial hair")
    assert enc.input_ids.shape == (1, 24)
    assert enc.input_ids[0, : len(expected)].tolist() == expected
    assert (enc.input_ids[0, len(expected) :] == tokenizer.pad_token_id).all()
    assert enc.attention_mask[0].tolist() == [1] * len(expected) + [0] * (24 - len(expected))
    assert tokenizer.decode(enc.input_ids[0], skip_special_tokens=True) == "cartoon face with glasses , facial hair"


def test_unknown_words_never_crash_or_leave_the_vocabulary(tokenizer):
    prompts = ["a zebra Ünï 😀", "", "12345 !!! ???", "x" * 500]
    enc = _ids(tokenizer, prompts)
    assert enc.input_ids.shape == (4, 24)
    assert int(enc.input_ids.max()) < len(tokenizer)
    # Every sequence starts with bos and contains eos (also after truncation of the long one).
    assert (enc.input_ids[:, 0] == tokenizer.bos_token_id).all()
    assert ((enc.input_ids == tokenizer.eos_token_id).any(dim=1)).all()
    assert enc.input_ids[3, -1] == tokenizer.eos_token_id
    assert tokenizer.decode(enc.input_ids[0], skip_special_tokens=True) == "a zebra ünï 😀"
    # Empty prompt: bos, eos, then padding (what classifier-free guidance encodes as "unconditional").
    assert enc.input_ids[1, :2].tolist() == [tokenizer.bos_token_id, tokenizer.eos_token_id]
    assert enc.attention_mask[1].sum() == 2


def test_merges_are_classic_bpe_with_ties_broken_by_the_pairs():
    words = {"low": 5, "lower": 2, "newest": 6, "widest": 3}  # Sennrich et al.'s example
    # "es" and "st</w>" both occur 9 times: the smaller pair first; then "lo" (7) before the 6-times pairs
    merges = _learn_merges(words, 5, min_frequency=2)
    assert merges == [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w"), ("ew", "est</w>")]
    assert _learn_merges(words, 10, min_frequency=7) == merges[:3]  # nothing else occurs 7 times


def test_build_is_deterministic_where_the_tokenizers_trainer_was_not():
    # 24 rich captions: the tokenizers library's BPE trainer gave 2 vocabularies in 8 builds (2026-11-23)
    captions = cartoon_faces_dataset(24, size=16, caption_style="rich")["text"]
    first = build_tokenizer(captions, vocab_size=600).get_vocab()
    assert all(build_tokenizer(captions, vocab_size=600).get_vocab() == first for _ in range(5))


def test_build_is_deterministic_and_respects_vocab_size(tokenizer):
    again = build_tokenizer(CAPTIONS, model_max_length=24)
    assert again.get_vocab() == tokenizer.get_vocab()
    small = build_tokenizer(CAPTIONS, vocab_size=520)
    assert len(small) == 520
    enc = _ids(small, "cartoon face")
    assert int(enc.input_ids.max()) < 520


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"captions": "one string"}, TypeError),
        ({"captions": ["", "  "]}, ValueError),
        ({"captions": CAPTIONS, "vocab_size": 100}, ValueError),
        ({"captions": CAPTIONS, "model_max_length": 1}, ValueError),
        ({"captions": CAPTIONS, "min_frequency": 0}, ValueError),
    ],
)
def test_build_tokenizer_rejects_bad_input(kwargs, error):
    with pytest.raises(error):
        build_tokenizer(**kwargs)


@pytest.mark.parametrize("loader", [AutoTokenizer, CLIPTokenizer])
def test_tokenizer_save_load_round_trip(tokenizer, tmp_path, loader):
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "CLIPTokenizer"
    reloaded = loader.from_pretrained(tmp_path)
    assert type(reloaded) is CLIPTokenizer
    assert reloaded.model_max_length == 24
    prompts = ["Cartoon face with glasses, zebra", "a much longer prompt " * 10]
    assert torch.equal(_ids(reloaded, prompts).input_ids, _ids(tokenizer, prompts).input_ids)


def test_text_encoder_matches_tokenizer(tokenizer):
    config = default_text_encoder_config(len(tokenizer))
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert config.hidden_size == 256 and config.vocab_size == len(tokenizer)

    text_encoder = build_text_encoder(tokenizer, **TINY_ENCODER).eval()
    assert text_encoder.config.max_position_embeddings == tokenizer.model_max_length
    input_ids = _ids(tokenizer, ["cartoon face", "cartoon face with glasses"]).input_ids
    with torch.no_grad():
        out = text_encoder(input_ids)
    assert out.last_hidden_state.shape == (2, 24, 32)
    # The pooled output is the hidden state at the first <|endoftext|> (not the legacy argmax(input_ids) rule).
    first_eos = (input_ids == tokenizer.eos_token_id).int().argmax(dim=-1)
    assert first_eos.tolist() == [3, 5]
    assert torch.allclose(out.pooler_output, out.last_hidden_state[torch.arange(2), first_eos])


@pytest.mark.parametrize(
    "kwargs", [{"eos_token_id": 2}, {"eos_token_id": 600}, {"hidden_size": 30, "num_attention_heads": 4}]
)
def test_text_encoder_config_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        default_text_encoder_config(600, **kwargs)


def test_build_text_encoder_rejects_short_positions(tokenizer):
    with pytest.raises(ValueError, match="max_position_embeddings"):
        build_text_encoder(tokenizer, max_position_embeddings=8, **TINY_ENCODER)


def test_pipeline_records_and_restores_the_tokenizer(tokenizer, tmp_path):
    text_encoder = build_text_encoder(tokenizer, **TINY_ENCODER).eval()
    _TextPipeline(tokenizer=tokenizer, text_encoder=text_encoder).save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert model_index["text_encoder"] == ["transformers", "CLIPTextModel"]

    pipe = _TextPipeline.from_pretrained(tmp_path)
    assert type(pipe.tokenizer) is CLIPTokenizer
    input_ids = _ids(tokenizer, "cartoon face with glasses").input_ids
    assert torch.equal(_ids(pipe.tokenizer, "cartoon face with glasses").input_ids, input_ids)
    with torch.no_grad():
        assert torch.equal(pipe.text_encoder(input_ids)[0], text_encoder(input_ids)[0])

    # The same folder also loads through the pretrained-CLIP helper (Stable Diffusion layout).
    tok, enc = load_text_components(tmp_path, tokenizer_subfolder="tokenizer", text_encoder_subfolder="text_encoder")
    assert torch.equal(_ids(tok, "cartoon face").input_ids, _ids(tokenizer, "cartoon face").input_ids)
    assert not enc.training


def _write_clip_repo(path):
    """A tiny folder in the layout of `openai/clip-vit-base-patch32`: vocab.json, merges.txt, a full CLIPModel."""
    base = [tok for tok, _ in sorted(build_tokenizer(["x"]).get_vocab().items(), key=lambda kv: kv[1])][:512]
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    tokens = base + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (path / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 16, "tokenizer_class": "CLIPTokenizer"})
    )
    text_config = dict(TINY_ENCODER, vocab_size=len(vocab), max_position_embeddings=16)
    text_config.update(bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN], pad_token_id=vocab[EOS_TOKEN])
    vision_config = dict(TINY_ENCODER, image_size=32, patch_size=16)
    model = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16))
    model.save_pretrained(path)
    return vocab, model


def test_load_text_components_from_clip_repo_layout(tmp_path):
    vocab, model = _write_clip_repo(tmp_path)
    tokenizer, text_encoder = load_text_components(tmp_path)
    assert type(tokenizer) is CLIPTokenizer and len(tokenizer) == len(vocab)
    assert type(text_encoder) is CLIPTextModel
    # Known ids: "cat" and "dog" are whole words in the hand-written vocabulary; "cow" falls back to bytes.
    input_ids = _ids(tokenizer, "Cat dog cow").input_ids
    assert input_ids.shape == (1, 16)
    expected = [vocab[BOS_TOKEN], vocab["cat</w>"], vocab["dog</w>"], vocab["c"], vocab["o"], vocab["w</w>"]]
    assert input_ids[0, :7].tolist() == expected + [vocab[EOS_TOKEN]]
    # The text tower carries the CLIPModel's text weights.
    with torch.no_grad():
        reference = model.text_model(input_ids).last_hidden_state
        assert torch.allclose(text_encoder(input_ids).last_hidden_state, reference)
    tokenizer, text_encoder = load_text_components(tmp_path, torch_dtype=torch.bfloat16)
    assert text_encoder.dtype == torch.bfloat16


def test_load_text_components_from_a_clip_model_does_not_report_its_image_tower(tmp_path):
    # transformers 5 logs every checkpoint key the CLIPTextModel lacks as UNEXPECTED: a CLIPModel's image tower,
    # projections and logit_scale are expected to be left out, so they must not flood the log; a stray key still shows
    _write_clip_repo(tmp_path)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    transformers_logger.addHandler(handler)
    try:
        load_text_components(tmp_path)
        assert not [r for r in records if "UNEXPECTED" in r.getMessage()]
        weights = load_file(tmp_path / "model.safetensors")
        save_file({**weights, "stray.weight": torch.zeros(1)}, tmp_path / "model.safetensors", {"format": "pt"})
        load_text_components(tmp_path)
    finally:
        transformers_logger.removeHandler(handler)
    reports = [r.getMessage() for r in records if "UNEXPECTED" in r.getMessage()]
    assert len(reports) == 1 and "stray.weight" in reports[0] and "vision_model" not in reports[0]
    assert CLIPTextModel._keys_to_ignore_on_load_unexpected is None  # transformers' class left as it was


def test_load_text_components_upcasts_a_half_precision_encoder(tokenizer, tmp_path):
    # transformers 5 loads a checkpoint in its stored dtype by default: fp16 weights met train_unet.py's float32
    # UNet with "expected m1 and m2 to have the same dtype"
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    build_text_encoder(tokenizer, **TINY_ENCODER).half().save_pretrained(tmp_path / "text_encoder")
    subfolders = {"tokenizer_subfolder": "tokenizer", "text_encoder_subfolder": "text_encoder"}
    assert load_text_components(tmp_path, **subfolders)[1].dtype == torch.float32
    assert load_text_components(tmp_path, **subfolders, torch_dtype=torch.float16)[1].dtype == torch.float16


def test_load_text_components_without_vocabulary_raises(tmp_path):
    _write_clip_repo(tmp_path)
    (tmp_path / "vocab.json").unlink()
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(ValueError, match="No CLIP vocabulary"):
        load_text_components(tmp_path)


def test_build_text_encoder_needs_a_model_max_length(tokenizer):
    unlimited = copy.deepcopy(tokenizer)
    unlimited.model_max_length = int(1e30)  # transformers' "no limit" value
    with pytest.raises(ValueError, match="set `tokenizer.model_max_length`"):
        build_text_encoder(unlimited, **TINY_ENCODER)


def test_load_text_components_checks_model_max_length_against_positions(tmp_path):
    _write_clip_repo(tmp_path)  # max_position_embeddings=16
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 32}))
    with pytest.raises(ValueError, match="`model_max_length`=32 is longer than .* `max_position_embeddings`=16"):
        load_text_components(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 8}))
    assert load_text_components(tmp_path)[0].model_max_length == 8  # shorter prompts fit


def test_build_text_encoder_takes_every_special_id_from_the_tokenizer(tokenizer):
    config = build_text_encoder(tokenizer, **TINY_ENCODER).config
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id, config.vocab_size) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        len(tokenizer),
    )
