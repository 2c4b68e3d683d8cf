"""MiniLM embedder: pinned hashes, vector shape and meaning, near-duplicate filter."""

import shutil

import numpy as np
import pytest

from mmat.embed import MODEL_SHA256, Embedder, default_model_dir, near_duplicate_mask, near_duplicates, verify_model_dir
from mmat.errors import ConfigError
from mmat.store.schema import EMBED_DIM


def _unit(*xs):
    v = np.zeros(EMBED_DIM, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def _copy_small_files(tmp_path):
    """A model dir with the small files copied and the 90 MB weights symlinked."""
    src = default_model_dir()
    for name in MODEL_SHA256:
        target = tmp_path / name
        if name == "model.safetensors":
            target.symlink_to(src / name)
        else:
            shutil.copy(src / name, target)
    return tmp_path


def test_packaged_model_matches_pinned_hashes():
    verify_model_dir(default_model_dir())  # raises on any mismatch


def test_tampered_file_is_refused_with_reinstall_hint(tmp_path):
    model_dir = _copy_small_files(tmp_path)
    (model_dir / "vocab.txt").write_text("[PAD]\nhello\n")
    with pytest.raises(ConfigError, match="vocab.txt has sha256 .* reinstall"):
        verify_model_dir(model_dir)
    with pytest.raises(ConfigError, match="vocab.txt"):
        Embedder(model_dir).embed(["x"])


def test_missing_file_is_refused(tmp_path):
    model_dir = _copy_small_files(tmp_path)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="tokenizer.json is missing"):
        verify_model_dir(model_dir)


def test_mask_flags_existing_and_earlier_new_duplicates():
    existing = np.stack([_unit(1, 0)])
    new = np.stack([_unit(1, 0.01), _unit(0, 1), _unit(0.01, 1), _unit(1, 1)])
    assert near_duplicate_mask(new, existing, 0.99) == [True, False, True, False]


def test_mask_keeps_first_of_a_new_pair_and_ignores_dropped_rows():
    # b duplicates a (kept); c is close to b only, and b was dropped, so c is compared with a alone.
    a, b, c = _unit(1, 0), _unit(1, 0.3), _unit(1, 0.6)
    assert near_duplicate_mask(np.stack([a, b, c]), None, 0.95) == [False, True, False]
    assert near_duplicate_mask(np.zeros((0, EMBED_DIM)), None, 0.5) == []


@pytest.mark.embedded
def test_embeddings_are_unit_vectors_that_carry_meaning():
    vecs = Embedder.shared().embed(["a person in a space suit", "an astronaut wearing a spacesuit", "a bowl of soup"])
    assert vecs.shape == (3, EMBED_DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > 0.6 > sims[0, 2]
    assert Embedder.shared().embed([]).shape == (0, EMBED_DIM)


@pytest.mark.embedded
def test_batches_give_the_same_vectors_as_single_calls():
    texts = ["short", "a somewhat longer sentence about invoices and taxes", "third"]
    together = Embedder(batch_size=2).embed(texts)
    alone = np.vstack([Embedder.shared().embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.embedded
def test_near_duplicates_catches_paraphrases_not_new_questions():
    existing = Embedder.shared().embed(["How many coins are in this photo?"])
    flags = near_duplicates(
        ["How many coins can be seen in this photo?", "What is the total of the invoice including VAT?",
         "What's the invoice total with VAT included?"],
        existing,
        0.85,
    )
    assert flags == [True, False, True]
