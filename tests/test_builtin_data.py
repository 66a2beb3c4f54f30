"""The built-in real datasets: scikit-learn's digits and Python's documentation text."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.supernets.tasks._digits import DigitsTask, digits_split
from nas.supernets.tasks._pydoc_text import SPLITS, paragraphs, split_of, text, topics


def test_digits_splits_are_disjoint_stratified_and_standardised() -> None:
    sizes = {split: len(digits_split(split, "vector")[1]) for split in SPLITS}
    assert sum(sizes.values()) == 1797
    assert sizes["train"] == pytest.approx(0.7 * 1797, abs=10)
    train, labels = digits_split("train", "vector")
    assert torch.bincount(labels).min() >= 120  # every class, about 126 each
    assert abs(float(train.mean())) < 1e-5 and float(train.std()) == pytest.approx(1.0, abs=1e-4)
    rows = {tuple(row.tolist()) for row in train}
    assert len(rows & {tuple(r.tolist()) for r in digits_split("test", "vector")[0]}) < 5


def test_digit_images_are_the_vectors_resized() -> None:
    vectors, labels = digits_split("validation", "vector")
    native, same_labels = digits_split("validation", "image", 8)
    assert torch.equal(labels, same_labels)
    torch.testing.assert_close(native.reshape(len(labels), 64), vectors)
    assert digits_split("validation", "image", 24)[0].shape == (len(labels), 1, 24, 24)


def test_digits_task_trains_a_linear_model_well_above_chance() -> None:
    task = DigitsTask("digits-vector-test", layout="vector")
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    next_batch = task.train_batches(batch_size=64, generator=torch.Generator().manual_seed(0))
    before = task.evaluate(model)
    for _ in range(60):
        optimizer.zero_grad()
        task.loss(model, next_batch()).backward()
        optimizer.step()
    after = task.evaluate(model)
    assert before["accuracy"] < 0.3 and after["accuracy"] > 0.85
    assert after["loss"] < before["loss"]
    assert task.evaluate(model, limit=10)["accuracy"] in {i / 10 for i in range(11)}


def test_digits_batches_cover_an_epoch_before_repeating() -> None:
    task = DigitsTask("digits-vector-test", layout="vector")
    inputs, _ = task.split("train")
    next_batch = task.train_batches(batch_size=len(inputs) // 2, generator=torch.Generator())
    seen = torch.cat([next_batch()[0], next_batch()[0]])
    assert {tuple(r.tolist()) for r in seen} <= {tuple(r.tolist()) for r in inputs}
    assert len(seen) == 2 * (len(inputs) // 2)
    assert len({tuple(r.tolist()) for r in seen}) >= len(inputs) - 5  # no repeats in an epoch


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"layout": "grid"}, "layout must be one of"), ({"resolution": 4}, "at least 8")],
)
def test_digits_bad_options_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsTask("bad", **kwargs)
    with pytest.raises(ValueError, match="split must be one of"):
        digits_split("dev")


def test_pydoc_text_splits_by_topic() -> None:
    by_split = {split: [name for name in topics() if split_of(name) == split] for split in SPLITS}
    assert sum(map(len, by_split.values())) == len(topics()) >= 70
    assert all(by_split[split] for split in SPLITS)
    assert len(text("train")) > 5 * len(text("validation")) > 0
    train = paragraphs("train")
    assert len(train) > 1000 and min(map(len, train)) >= 40
    assert not set(train) & (set(paragraphs("validation")) | set(paragraphs("test")))
    assert all("  " not in p and "\n" not in p for p in train)
    with pytest.raises(ValueError, match="split must be one of"):
        paragraphs("dev")
