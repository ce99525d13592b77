"""sdscratch.evaluation.text_encoder_separation: does a text encoder tell the attribute words apart."""

import pytest
import torch
from transformers import CLIPTokenizer

from sdscratch import pretrained
from sdscratch.data import ATTRIBUTES, attribute_caption, sample_attributes, with_attribute_value
from sdscratch.evaluation import text_encoder_separation
from sdscratch.text import build_text_encoder
from sdscratch.training_utils import state_dict_digest


@pytest.fixture(scope="module")
def tokenizer():
    # The shipped word-level vocabulary: every attribute word is one token.
    return CLIPTokenizer.from_pretrained(pretrained("cartoon-faces"), subfolder="tokenizer")


def small_encoder(tokenizer):
    torch.manual_seed(0)
    return build_text_encoder(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)  # fmt: skip


def test_a_fresh_encoder_separates_every_attribute(tokenizer):
    encoder = small_encoder(tokenizer)
    digest = state_dict_digest(encoder)
    result = text_encoder_separation(tokenizer, encoder, num_faces=3)
    assert set(result["separation"]) == set(result["random_init_separation"]) == set(ATTRIBUTES)
    assert all(0.02 < value < 2 for value in result["separation"].values()), result
    assert result == text_encoder_separation(tokenizer, encoder, num_faces=3)  # deterministic
    assert state_dict_digest(encoder) == digest and encoder.dtype == torch.float32  # measured on a copy
    # the reference is a newly initialised encoder: it does not depend on the measured weights
    with torch.no_grad():
        encoder.embeddings.token_embedding.weight.mul_(0.5)
    again = text_encoder_separation(tokenizer, encoder, num_faces=3)
    assert again["random_init_separation"] == result["random_init_separation"]
    assert again["separation"] != result["separation"]


def test_words_that_encode_alike_score_zero(tokenizer):
    # Give the four frame colours one embedding: prompts differing only in them become identical to the encoder.
    encoder = small_encoder(tokenizer)
    ids = tokenizer.convert_tokens_to_ids([f"{c}</w>" for c in ATTRIBUTES["glasses_color"][1:]])
    assert tokenizer.unk_token_id not in ids
    with torch.no_grad():
        table = encoder.embeddings.token_embedding.weight
        table[ids] = table[ids[0]].clone()
    separation = text_encoder_separation(tokenizer, encoder, num_faces=3, random_init_reference=False)
    assert set(separation) == {"separation"}
    assert separation["separation"]["glasses_color"] < 1e-6
    others = {k: v for k, v in separation["separation"].items() if k != "glasses_color"}
    assert min(others.values()) > 0.02, others


def test_digits_task_and_bad_arguments(tokenizer):
    encoder = small_encoder(tokenizer)
    result = text_encoder_separation(tokenizer, encoder, task="digits")
    assert set(result["separation"]) == {"digit"} and result["separation"]["digit"] > 0
    with pytest.raises(ValueError, match="task must be one of"):
        text_encoder_separation(tokenizer, encoder, task="flowers")
    with pytest.raises(ValueError, match="num_faces"):
        text_encoder_separation(tokenizer, encoder, num_faces=0)
    with pytest.raises(TypeError, match="tokenizer"):
        text_encoder_separation(object(), encoder)


def test_with_attribute_value_keeps_a_face_consistent():
    face = with_attribute_value(sample_attributes(0), "glasses", "none")
    assert face["glasses_color"] == "none"
    square = with_attribute_value(face, "glasses", "square")
    assert square["glasses"] == "square" and square["glasses_color"] == "black" and face["glasses"] == "none"
    red = with_attribute_value(face, "glasses_color", "red")
    assert red["glasses"] == "round" and red["glasses_color"] == "red"
    assert with_attribute_value(red, "glasses_color", "none")["glasses"] == "none"
    assert "red round glasses" in attribute_caption(red, "glasses_color")
    with pytest.raises(ValueError, match="not one of"):
        with_attribute_value(face, "mouth", "grinning")
    with pytest.raises(ValueError, match="name="):
        with_attribute_value(face, "hat", "none")


class _EmbeddingEncoder(torch.nn.Module):
    """A text encoder whose hidden state at a position is a fixed vector of its token: the score by hand."""

    def __init__(self, vocab_size):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab_size, 4, generator=torch.Generator().manual_seed(0)))

    @property
    def device(self):
        return self.table.device

    def forward(self, input_ids):
        return (self.table[input_ids],)


def test_digit_separation_is_the_documented_relative_change(tokenizer):
    from sdscratch.data.digits import DIGIT_CAPTION_TEMPLATES, digit_caption

    encoder = _EmbeddingEncoder(len(tokenizer))
    result = text_encoder_separation(tokenizer, encoder, task="digits")
    assert set(result) == {"separation"}  # no config: no fresh-encoder reference
    scores = []
    for style in DIGIT_CAPTION_TEMPLATES:  # every pair of digits in one caption variant, padded as the pipeline pads
        ids = tokenizer([digit_caption(d, style) for d in range(10)], padding="max_length",
                        max_length=tokenizer.model_max_length, return_tensors="pt").input_ids  # fmt: skip
        hidden = encoder.table.detach()[ids].double()  # (10, L, 4)
        for i in range(10):
            for j in range(i + 1, 10):
                change = (hidden[i] - hidden[j]).norm(dim=-1).sum()
                scores.append(change / ((hidden[i].norm(dim=-1).sum() + hidden[j].norm(dim=-1).sum()) / 2))
    assert result["separation"]["digit"] == pytest.approx(float(sum(scores) / len(scores)), rel=1e-5)


def test_the_fresh_encoder_reference_is_seeded_by_seed_not_by_the_global_generator(tokenizer):
    encoder = small_encoder(tokenizer)
    references = []
    for global_seed, seed in ((1, 0), (2, 0), (1, 5)):
        torch.manual_seed(global_seed)
        references.append(
            text_encoder_separation(tokenizer, encoder, task="digits", seed=seed)["random_init_separation"]
        )
    assert references[0] == references[1] != references[2]
