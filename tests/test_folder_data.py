"""Folder data sets (ImageNet / Tiny-ImageNet layouts) on tiny generated PNG trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sparse_mu import pipeline
from sparse_mu.config import build
from sparse_mu.data import Folder, prepare
from sparse_mu.errors import ConfigError
from tests.conftest import compose_cfg

CLASSES = ("n01", "n02", "n03")
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def _png(path, size, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# Every generated file name is unique; LABELS maps it to its class index.
LABELS: dict[str, int] = {}


def imagenet_tree(root, per_class=10, per_val=3, size=12):
    for c, wnid in enumerate(CLASSES):
        for i in range(per_class):
            _png(root / "train" / wnid / f"{wnid}_{i}.png", size, 100 * c + i)
            LABELS[f"{wnid}_{i}.png"] = c
        for i in range(per_val):
            _png(root / "val" / wnid / f"val_{c}_{i}.png", size, 1000 + 100 * c + i)
            LABELS[f"val_{c}_{i}.png"] = c
    return root


def tiny_tree(root, per_class=10, per_val=3, size=12):
    lines = []
    for c, wnid in enumerate(CLASSES):
        for i in range(per_class):
            _png(root / "train" / wnid / "images" / f"{wnid}_{i}.png", size, 100 * c + i)
            LABELS[f"{wnid}_{i}.png"] = c
        for i in range(per_val):
            name = f"val_{c}_{i}.png"  # one flat folder: only the annotations tell the class
            _png(root / "val" / "images" / name, size, 1000 + 100 * c + i)
            LABELS[name] = c
            lines.append(f"{name}\t{wnid}\t0\t0\t{size}\t{size}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def source(root, **kw):
    settings = dict(name="tiny", root=str(root), image_size=8, resize=None, train_crop="padded", crop_padding=2,
                    flip=True, mean=MEAN, std=STD, workers=0, epochs=2, rewind_epoch=1, batch_size=8)
    return Folder(**{**settings, **kw})


@pytest.mark.parametrize("layout", [imagenet_tree, tiny_tree])
def test_split_follows_the_in_memory_rules(layout, tmp_path):
    data = prepare(source(layout(tmp_path / "d")))
    assert data.classes == list(CLASSES) and data.num_classes == 3 and data.in_channels == 3
    assert len(data.samples) == len(data.y) == 39
    assert len(data.test) == 9 and torch.equal(data.test, torch.arange(30, 39))  # the val folder
    assert len(data.val) == 3 and all((data.y[data.val] == c).sum() == 1 for c in range(3))  # 10 % per class
    assert len(set(data.train.tolist()) | set(data.val.tolist())) == 30
    assert not set(data.train.tolist()) & set(data.val.tolist())
    for i, (path, label) in enumerate(data.samples):  # from the class folder or the annotations
        assert label == LABELS[Path(path).name] == data.y[i]


def test_loader_yields_batches_of_the_index_set(tmp_path):
    data = prepare(source(imagenet_tree(tmp_path / "d")))
    loader = data.loader(data.train, batch_size=8, train=True, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    x, y, idx = batches[0]
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32
    seen = torch.cat([b[2] for b in batches])
    assert torch.equal(seen.sort().values, data.train)  # every sample once, nothing outside the set
    assert all(torch.equal(b[1], data.y[b[2]]) for b in batches)
    loader.sampler.set_epoch(1)
    second = torch.cat([b[2] for b in loader])
    assert not torch.equal(seen, second)
    loader.sampler.set_epoch(0)
    assert torch.equal(seen, torch.cat([b[2] for b in loader]))


def test_eval_transform_is_resize_centre_crop_normalise(tmp_path):
    data = prepare(source(imagenet_tree(tmp_path / "d", size=12), resize=10))
    x, y, idx = next(iter(data.loader(data.test, batch_size=4, train=False)))
    assert torch.equal(idx, data.test[:4])
    img = Image.open(data.samples[int(idx[0])][0]).convert("RGB").resize((10, 10), Image.BILINEAR)
    crop = torch.from_numpy(np.array(img)[1:9, 1:9]).permute(2, 0, 1).float() / 255
    expected = (crop - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(x[0], expected, atol=1e-5)


def test_workers_and_imagenet_transforms(tmp_path):
    data = prepare(source(imagenet_tree(tmp_path / "d"), train_crop="random_resized", resize=10, workers=1))
    loader = data.loader(data.train, batch_size=16, train=True, seed=0)
    for _ in range(2):  # persistent workers serve a second epoch
        assert torch.cat([b[2] for b in loader]).sort().values.tolist() == data.train.tolist()


def test_fingerprint_follows_the_files_not_the_path(tmp_path):
    root = imagenet_tree(tmp_path / "a")
    first = prepare(source(root)).fingerprint
    shutil.copytree(root, tmp_path / "b")
    assert prepare(source(tmp_path / "b")).fingerprint == first
    _png(root / "train" / CLASSES[0] / f"{CLASSES[0]}_0.png", 20, 0)  # another size on disk
    assert prepare(source(root)).fingerprint != first


def test_no_val_folder_carves_a_test_split(tmp_path):
    root = imagenet_tree(tmp_path / "d", per_class=10)
    shutil.rmtree(root / "val")
    data = prepare(source(root, test_fraction=0.2))
    assert len(data.test) == 6 and all((data.y[data.test] == c).sum() == 2 for c in range(3))


@pytest.mark.parametrize(("setup", "message"), [
    (lambda root: source(root / "missing"), "must hold train/<class>/<image> folders"),
    (lambda root: source(imagenet_tree(root / "d"), mean=None), "dataset.mean/dataset.std"),
    (lambda root: source(imagenet_tree(root / "d"), train_crop="centre"), "dataset.train_crop"),
])
def test_bad_folder_settings(setup, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        prepare(setup(tmp_path))


def test_unknown_class_in_tiny_annotations(tmp_path):
    root = tiny_tree(tmp_path / "d")
    with (root / "val" / "val_annotations.txt").open("a") as f:
        f.write("val_0.png\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ConfigError, match="n99"):
        prepare(source(root))


def test_pipeline_on_a_folder_data_set(tiny_cfg, tmp_path):
    root = tiny_tree(tmp_path / "tiny", per_class=20, per_val=4)
    cfg = tiny_cfg("dataset=tinyimagenet", f"dataset.root={root}", "dataset.image_size=8", "dataset.workers=0",
                   "dataset.batch_size=16", "train.epochs=2", "unlearner.epochs=1", "reference.epochs=1",
                   "arch.width=8", "pruner.sparsity=0.5")
    m = pipeline.run(cfg, tmp_path / "run")
    assert m["dataset"] == "folder" and m["forget_size"] == 18  # class 0 of D (20 minus 2 for validation)
    assert m["sparsity"] == pytest.approx(50, abs=0.1)


def imagefolder_tree(root, per_class=20, per_test=4, size=12):
    """A plain ImageFolder tree: train/<class>/ and test/<class>/."""
    for c, name in enumerate(("cat", "dog", "emu")):
        for i in range(per_class):
            _png(root / "train" / name / f"{i}.png", size, 100 * c + i)
        for i in range(per_test):
            _png(root / "test" / name / f"{i}.png", size, 1000 + 100 * c + i)
    return root


def test_generic_folder_option_runs_quietly_on_any_imagefolder_tree(tiny_cfg, tmp_path, capfd):
    """`dataset=folder dataset.root=...`: train/ and test/ class folders. DataLoader workers (8,
    clamped to the usable cores) print no tracebacks and no warnings."""
    root = imagefolder_tree(tmp_path / "pets")
    cfg = tiny_cfg("dataset=folder", f"dataset.root={root}", "dataset.image_size=8", "dataset.resize=8",
                   "dataset.workers=8", "dataset.batch_size=16", "train.epochs=2", "unlearner.epochs=1",
                   "reference.epochs=1", "arch.width=8", "pruner.sparsity=0.5")
    m = pipeline.run(cfg, tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split_indices.json").read_text())
    assert len(split["test"]) == 12  # the test/ folder
    assert m["forget_size"] == 18  # class 0 of D (20 minus 2 for validation)
    err = capfd.readouterr().err
    assert "can only test a child process" not in err and "Exception ignored" not in err, err
    assert "Warning" not in err, err


def test_generic_folder_needs_a_root():
    cfg = compose_cfg(["dataset=folder"])
    with pytest.raises(ConfigError, match="dataset.root"):
        prepare(build(cfg.dataset))
