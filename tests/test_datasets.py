"""Datasets from their real file formats (small fakes written here), image folders, streaming, k-fold."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
import struct
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from trainlab.data import datasets as datasets_module
from trainlab.data import imagefolder as imagefolder_module
from trainlab.data.augment import HorizontalFlip
from trainlab.data.datasets import (FASHION_MNIST_FILES, MNIST_CLASSES, ImageDataset, load_cifar, load_dataset,
                                    load_fashion_mnist, load_mnist, load_svhn)
from trainlab.data.imagefolder import load_image_folder, scan_image_folder
from trainlab.data.loader import DeviceLoader
from trainlab.data.splits import check_folds, kfold_split, split_train_val, train_val_indices
from trainlab.data.stream import (ImageFiles, StreamedDataset, StreamLoader, UnreadableImageError, decode_all,
                                  split_streamed)
from trainlab.errors import ConfigError, DataNotFoundError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"
RNG = np.random.default_rng(0)


def fake_torchvision(monkeypatch, **classes) -> None:
    """Stand in for torchvision.datasets (a download needs the internet)."""
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(datasets=types.SimpleNamespace(**classes)))


def must_not_download(*args, **kwargs):
    raise AssertionError("download=False must not try to download")


def cfg(**values):
    return OmegaConf.create({"root": "data", "train_size": None, "val_size": 0, "download": False, **values})


# ================================================================ MNIST (IDX)


def write_idx(path: Path, array: np.ndarray) -> None:
    data = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_fake_mnist(folder: Path, gz: bool = True, n_train: int = 12, n_test: int = 5, max_label: int = 9):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_x": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": (np.arange(n_train) % (max_label + 1)).astype(np.uint8),
              "test_x": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": (np.arange(n_test) * 3 % 10).astype(np.uint8)}
    for key, stem in FASHION_MNIST_FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.mark.parametrize("layout, gz", [("MNIST/raw", False), ("MNIST/raw", True), (".", True)])
def test_mnist_reads_idx_files_from_root(tmp_path, monkeypatch, layout, gz):
    fake_torchvision(monkeypatch, MNIST=must_not_download)
    arrays = write_fake_mnist(tmp_path / layout, gz)
    data = load_mnist(str(tmp_path), download=False)
    assert data.train_images.shape == (12, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (5, 1, 28, 28)
    assert data.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(data.train_images[:, 0].numpy(), arrays["train_x"])
    np.testing.assert_array_equal(data.test_labels.numpy(), arrays["test_y"])
    assert data.classes == MNIST_CLASSES and data.val_images is None


def test_mnist_missing_offline_names_where_it_looked(tmp_path, monkeypatch):
    fake_torchvision(monkeypatch, MNIST=must_not_download)
    with pytest.raises(DataNotFoundError) as caught:
        load_mnist(str(tmp_path), download=False)
    message = str(caught.value)
    assert message.startswith("MNIST not found (looked in ")
    assert str(tmp_path / "MNIST" / "raw") in message and f"{tmp_path}; download=off" in message
    assert "train-images-idx3-ubyte" in message and "dataset.download=true" in message
    assert "fashion" not in message.lower()  # MNIST has no system folder


def test_mnist_download_then_reads_what_torchvision_wrote(tmp_path, monkeypatch):
    calls = []

    def fake_mnist(root, train, download):  # torchvision puts the raw files in <root>/MNIST/raw
        calls.append((root, train, download))
        write_fake_mnist(Path(root) / "MNIST" / "raw", gz=False)

    fake_torchvision(monkeypatch, MNIST=fake_mnist)
    data = load_mnist(str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True, True)]
    assert data.train_images.shape == (12, 1, 28, 28)


def test_mnist_failed_download_is_data_not_found(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise OSError("network unreachable")

    fake_torchvision(monkeypatch, MNIST=offline)
    with pytest.raises(DataNotFoundError, match="MNIST not found .*download=on"):
        load_mnist(str(tmp_path), download=True)


def test_mnist_labels_out_of_range_name_the_file(tmp_path):
    write_fake_mnist(tmp_path, gz=False, max_label=11)
    with pytest.raises(DataNotFoundError, match=r"train-labels-idx1-ubyte: labels must be in 0\.\.9"):
        load_mnist(str(tmp_path), download=False)


def test_fashion_mnist_uses_the_shared_reader_and_keeps_its_message(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "SYSTEM_FASHION_MNIST", tmp_path / "none")
    write_fake_mnist(tmp_path / "MNIST" / "raw")  # an MNIST layout is not Fashion-MNIST's
    with pytest.raises(DataNotFoundError, match=r"^Fashion-MNIST not found .*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path), download=False)
    write_fake_mnist(tmp_path / "FashionMNIST" / "raw")
    assert load_fashion_mnist(str(tmp_path), download=False).classes[0] == "T-shirt/top"


# ================================================================ CIFAR (pickled batches)


def dump(path: Path, entry) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def cifar_batch(n: int, **labels) -> dict:
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    return {"batch_label": "fake", "data": data, "filenames": [f"{i}.png" for i in range(n)], **labels}


def write_fake_cifar10(folder: Path, per_batch: int = 4) -> list[dict]:
    batches = [cifar_batch(per_batch, labels=[(i + b) % 10 for i in range(per_batch)]) for b in range(6)]
    for b, batch in enumerate(batches[:5]):
        dump(folder / f"data_batch_{b + 1}", batch)
    dump(folder / "test_batch", batches[5])
    dump(folder / "batches.meta", {"label_names": [f"c{k}" for k in range(10)], "num_vis": 3072})
    return batches


def write_fake_cifar100(folder: Path) -> tuple[dict, dict]:
    train = cifar_batch(6, fine_labels=[0, 99, 5, 42, 7, 1], coarse_labels=[0, 19, 3, 4, 5, 6])
    test = cifar_batch(3, fine_labels=[2, 3, 98], coarse_labels=[1, 2, 18])
    dump(folder / "train", train)
    dump(folder / "test", test)
    dump(folder / "meta", {"fine_label_names": [f"f{k}" for k in range(100)],
                           "coarse_label_names": [f"g{k}" for k in range(20)]})
    return train, test


@pytest.mark.parametrize("inside", ["cifar-10-batches-py", "."])
def test_cifar10_reads_python_batches(tmp_path, monkeypatch, inside):
    fake_torchvision(monkeypatch, CIFAR10=must_not_download)
    batches = write_fake_cifar10(tmp_path / inside)
    data = load_cifar("cifar10", str(tmp_path), download=False)
    assert data.train_images.shape == (20, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (4, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64
    assert data.train_labels.tolist() == sum((b["labels"] for b in batches[:5]), [])
    assert data.classes == [f"c{k}" for k in range(10)]
    # row layout: 1024 red, then green, then blue, each row-major 32x32
    row = batches[1]["data"][2]
    assert data.train_images[4 + 2, 1, 3, 5] == row[1024 + 3 * 32 + 5]
    np.testing.assert_array_equal(data.test_images.reshape(4, -1).numpy(), batches[5]["data"])


@pytest.mark.parametrize("mode, classes, label", [("fine", 100, 99), ("coarse", 20, 19)])
def test_cifar100_fine_and_coarse_labels(tmp_path, mode, classes, label):
    train, test = write_fake_cifar100(tmp_path / "cifar-100-python")
    data = load_cifar("cifar100", str(tmp_path), download=False, label_mode=mode)
    assert data.train_images.shape == (6, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert data.train_labels.tolist() == train[f"{mode}_labels"] and data.train_labels[1] == label
    assert data.test_labels.tolist() == test[f"{mode}_labels"]
    assert data.num_classes == classes and data.classes[0] == ("f0" if mode == "fine" else "g0")


def test_cifar100_label_mode_must_be_fine_or_coarse(tmp_path):
    with pytest.raises(ConfigError, match="dataset.label_mode='medium': must be fine or coarse"):
        load_cifar("cifar100", str(tmp_path), download=False, label_mode="medium")


@pytest.mark.parametrize("name, folder, archive", [("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
                                                   ("cifar100", "cifar-100-python", "cifar-100-python.tar.gz")])
def test_cifar_missing_offline_names_where_it_looked(tmp_path, monkeypatch, name, folder, archive):
    fake_torchvision(monkeypatch, CIFAR10=must_not_download, CIFAR100=must_not_download)
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "test").write_bytes(b"")  # an incomplete folder counts as missing
    with pytest.raises(DataNotFoundError) as caught:
        load_cifar(name, str(tmp_path), download=False)
    message = str(caught.value)
    assert message.startswith(f"CIFAR-{name[5:]} not found (looked in {tmp_path / folder}, {tmp_path}; download=off)")
    assert archive in message and "dataset.download=true" in message


def test_cifar10_download_then_reads_what_torchvision_unpacked(tmp_path, monkeypatch):
    def fake_cifar10(root, train, download):
        write_fake_cifar10(Path(root) / "cifar-10-batches-py", per_batch=2)

    fake_torchvision(monkeypatch, CIFAR10=fake_cifar10)
    assert load_cifar("cifar10", str(tmp_path), download=True).train_images.shape == (10, 3, 32, 32)


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.write_bytes(b"not a pickle at all"), "cannot read it as a pickled CIFAR batch"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "cannot read it as a pickled CIFAR batch"),
    (lambda p: dump(p, {"data": np.zeros((2, 3072), np.uint8)}), "has no 'labels' entry"),
    (lambda p: dump(p, {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), r"'data' must be uint8 \[N, 3072\]"),
    (lambda p: dump(p, {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1, 2]}), "2 images but 3 labels"),
], ids=["garbage", "truncated", "no-labels", "wrong-shape", "count-mismatch"])
def test_cifar_damaged_batch_names_the_file(tmp_path, damage, expected):
    write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    damage(path)
    with pytest.raises(DataNotFoundError, match=expected) as caught:
        load_cifar("cifar10", str(tmp_path), download=False)
    assert str(path) in str(caught.value)


# ================================================================ SVHN (.mat)


def write_svhn_mat(path: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # SVHN's labels: 1..10, where 10 is the digit 0
    savemat(str(path), {"X": x, "y": y})
    return x, y


@pytest.mark.parametrize("inside", ["svhn", "."])
def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path, monkeypatch, inside):
    pytest.importorskip("scipy")
    fake_torchvision(monkeypatch, SVHN=must_not_download)
    x, y = write_svhn_mat(tmp_path / inside / "train_32x32.mat", 12)
    write_svhn_mat(tmp_path / inside / "test_32x32.mat", 5, seed=1)
    data = load_svhn(str(tmp_path), download=False)
    assert data.train_images.shape == (12, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (5, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64
    assert data.train_labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert data.train_images[7, 2, 4, 9] == x[4, 9, 2, 7]  # X is [H, W, C, N]
    assert data.classes == [str(d) for d in range(10)]


def test_svhn_extra_joins_the_training_split(tmp_path):
    pytest.importorskip("scipy")
    for name, n in (("train", 6), ("test", 3), ("extra", 4)):
        write_svhn_mat(tmp_path / f"{name}_32x32.mat", n)
    assert load_svhn(str(tmp_path), download=False).train_images.shape[0] == 6
    assert load_svhn(str(tmp_path), download=False, extra=True).train_images.shape[0] == 10


def test_svhn_missing_offline_names_where_it_looked(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    fake_torchvision(monkeypatch, SVHN=must_not_download)
    write_svhn_mat(tmp_path / "train_32x32.mat", 2)  # test file missing
    with pytest.raises(DataNotFoundError) as caught:
        load_svhn(str(tmp_path), download=False, extra=True)
    message = str(caught.value)
    assert message.startswith(f"SVHN not found (looked in {tmp_path / 'svhn'}, {tmp_path}; download=off)")
    assert "train_32x32.mat, test_32x32.mat, extra_32x32.mat" in message


def test_svhn_download_goes_to_root_svhn(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    splits = []

    def fake_svhn(root, split, download):
        splits.append(split)
        write_svhn_mat(Path(root) / f"{split}_32x32.mat", 3)

    fake_torchvision(monkeypatch, SVHN=fake_svhn)
    data = load_svhn(str(tmp_path), download=True)
    assert splits == ["train", "test"] and (tmp_path / "svhn" / "train_32x32.mat").is_file()
    assert data.train_images.shape == (3, 3, 32, 32)


def test_svhn_corrupt_mat_names_the_file(tmp_path):
    pytest.importorskip("scipy")
    write_svhn_mat(tmp_path / "train_32x32.mat", 2)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 but then nothing useful" * 3)
    with pytest.raises(DataNotFoundError, match="test_32x32.mat: cannot read it as an SVHN .mat file"):
        load_svhn(str(tmp_path), download=False)


def test_svhn_without_scipy_says_pip_install_scipy(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes `from scipy.io import ...` raise ImportError
    with pytest.raises(ConfigError, match="pip install scipy"):
        load_svhn(str(tmp_path), download=False)


# ================================================================ load_dataset and the config files


def test_load_dataset_dispatches_every_file_dataset(tmp_path):
    pytest.importorskip("scipy")
    write_fake_mnist(tmp_path / "MNIST" / "raw")
    write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    write_fake_cifar100(tmp_path / "cifar-100-python")
    write_svhn_mat(tmp_path / "svhn" / "train_32x32.mat", 4)
    write_svhn_mat(tmp_path / "svhn" / "test_32x32.mat", 2)
    root = str(tmp_path)
    assert load_dataset(cfg(name="mnist", root=root)).input_shape == (1, 28, 28)
    assert load_dataset(cfg(name="cifar10", root=root)).num_classes == 10
    assert load_dataset(cfg(name="cifar100", root=root, label_mode="coarse")).num_classes == 20
    assert load_dataset(cfg(name="svhn", root=root, extra=False)).train_images.shape == (4, 3, 32, 32)
    with pytest.raises(ConfigError, match="dataset.name='imagenet': unknown dataset; choose one of fashion_mnist, mnist"):
        load_dataset(cfg(name="imagenet"))


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "imagefolder"])
def test_dataset_config_files_have_the_common_keys(name):
    node = OmegaConf.load(CONFIGS / f"{name}.yaml")
    common = set(OmegaConf.load(CONFIGS / "fashion_mnist.yaml")) - {"system_root"}
    assert common <= set(node) and node.name == name
    if name != "imagefolder":
        assert node.download is True and node.root == "data"


# ================================================================ image folders


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_folder(root: Path, splits=(("train", 3), ("val", 1), ("test", 2)), classes=("cat", "dog"),
                size=(10, 12), suffix=".png") -> None:
    """root/<split>/<class>/<k><suffix>, each image random RGB pixels."""
    rng = np.random.default_rng(7)
    for split, count in splits:
        for name in classes:
            for k in range(count):
                save_image(root / split / name / f"{k}{suffix}", rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def folder_cfg(root: Path, **values):
    settings = dict(image_size=[10, 12], channels=3, max_memory_mb=64, cache_dir=None, num_workers=0)
    return cfg(name="imagefolder", root=str(root), **{**settings, **values})


def test_image_folder_shapes_labels_classes_and_splits(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")  # ignored
    data = load_image_folder(folder_cfg(tmp_path, image_size=[6, 8]))
    assert isinstance(data, ImageDataset)
    assert data.classes == ["cat", "dog"]
    assert data.train_images.shape == (6, 3, 6, 8) and data.train_images.dtype == torch.uint8
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and data.train_labels.dtype == torch.int64
    assert data.val_images.shape == (2, 3, 6, 8) and data.val_labels.tolist() == [0, 1]
    assert data.test_images.shape == (4, 3, 6, 8) and data.test_labels.tolist() == [0, 0, 1, 1]


def test_image_folder_pixels_resize_and_channel_conversion(tmp_path):
    from torchvision.transforms.v2.functional import resize

    rgb = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    grey = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 9, np.uint8)], axis=-1)
    big = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for name, array in (("a_rgb.png", rgb), ("b_grey.png", grey), ("c_rgba.png", rgba), ("d_big.PNG", big)):
        save_image(tmp_path / "train" / "x" / name, array)
    smooth = np.stack([*np.meshgrid(np.arange(12) * 20, np.arange(10) * 25), np.full((10, 12), 128)], -1)
    smooth = smooth.astype(np.uint8)  # lossy codecs keep a smooth image close; random noise they do not
    save_image(tmp_path / "train" / "y" / "e.bmp", rgb)
    save_image(tmp_path / "train" / "y" / "f.webp", smooth)
    save_image(tmp_path / "train" / "y" / "g.jpeg", smooth)
    save_image(tmp_path / "train" / "y" / "h.JPG", smooth)
    images = load_image_folder(folder_cfg(tmp_path)).train_images
    assert images.shape == (8, 3, 10, 12)
    as_chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert torch.equal(images[0], as_chw)                                    # PNG: exact pixels
    assert torch.equal(images[1], torch.from_numpy(grey).expand(3, -1, -1))  # grey -> RGB
    assert torch.equal(images[2], as_chw)                                    # RGBA -> RGB
    expected = resize(torch.from_numpy(big).permute(2, 0, 1), [10, 12], antialias=True)
    assert torch.equal(images[3], expected)                                  # resized, antialiased
    assert torch.equal(images[4], as_chw)                                    # BMP (via Pillow)
    for lossy in images[5:]:                                                 # WebP, JPEG: lossy
        assert (lossy.float() - torch.from_numpy(smooth).permute(2, 0, 1).float()).abs().mean() < 8
    grey_images = load_image_folder(folder_cfg(tmp_path, channels=1)).train_images
    assert grey_images.shape == (8, 1, 10, 12)
    assert torch.equal(grey_images[1, 0], torch.from_numpy(grey))
    luma = (torch.from_numpy(rgb).float() @ torch.tensor([0.299, 0.587, 0.114])).round()
    assert (grey_images[0, 0].float() - luma).abs().max() <= 2


def count_decodes(monkeypatch) -> list[int]:
    calls = []
    real = imagefolder_module.decode_all

    def counting(files, num_workers=0, batch_size=64):
        calls.append(len(files))
        return real(files, num_workers, batch_size)

    monkeypatch.setattr(imagefolder_module, "decode_all", counting)
    return calls


def test_image_folder_cache_is_created_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    make_folder(tmp_path)
    calls = count_decodes(monkeypatch)
    first = load_image_folder(folder_cfg(tmp_path))
    assert sum(calls) == 12
    cache = tmp_path / ".trainlab_cache" / "images_10x12_c3.pt"
    assert cache.is_file() and [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp file left
    calls.clear()
    second = load_image_folder(folder_cfg(tmp_path))
    assert calls == []  # nothing decoded: read from the cache
    assert torch.equal(first.train_images, second.train_images) and torch.equal(first.val_images, second.val_images)
    assert torch.equal(first.test_labels, second.test_labels)

    changed = tmp_path / "train" / "dog" / "1.png"
    save_image(changed, np.zeros((10, 12, 3), np.uint8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10 ** 9))
    third = load_image_folder(folder_cfg(tmp_path))
    assert sum(calls) == 12
    assert third.train_images[4].sum() == 0 and first.train_images[4].sum() > 0

    calls.clear()
    (tmp_path / "train" / "cat" / "0.png").unlink()  # a removed file changes the fingerprint too
    assert load_image_folder(folder_cfg(tmp_path)).train_images.shape[0] == 5 and calls


def test_image_folder_cache_per_size_in_cache_dir_and_damaged_cache_rebuilt(tmp_path, monkeypatch):
    make_folder(tmp_path / "images", splits=(("train", 2),))
    cache_dir = tmp_path / "cache"
    calls = count_decodes(monkeypatch)
    load_image_folder(folder_cfg(tmp_path / "images", cache_dir=str(cache_dir)))
    load_image_folder(folder_cfg(tmp_path / "images", cache_dir=str(cache_dir), image_size=5, channels=1))
    assert sorted(p.name for p in cache_dir.iterdir()) == ["images_10x12_c3.pt", "images_5x5_c1.pt"]
    assert not (tmp_path / "images" / ".trainlab_cache").exists()
    (cache_dir / "images_5x5_c1.pt").write_bytes(b"half a file")
    calls.clear()
    data = load_image_folder(folder_cfg(tmp_path / "images", cache_dir=str(cache_dir), image_size=5, channels=1))
    assert calls and data.train_images.shape == (4, 1, 5, 5)


def test_image_folder_unwritable_cache_warns_and_still_loads(tmp_path):
    make_folder(tmp_path / "images", splits=(("train", 1),))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="dataset.cache_dir: cannot write"):
        data = load_image_folder(folder_cfg(tmp_path / "images", cache_dir=str(blocker / "cache")))
    assert data.train_images.shape == (2, 3, 10, 12)


def test_image_folder_without_val_and_test(tmp_path):
    make_folder(tmp_path, splits=(("train", 5),))
    data = load_image_folder(folder_cfg(tmp_path))
    assert data.val_images is None and data.val_labels is None
    assert data.test_images.shape == (0, 3, 10, 12) and data.test_labels.shape == (0,)
    train_x, _, val_x, val_y = split_train_val(data, 0.2, None, seed=0)
    assert train_x.shape[0] == 8 and val_y.tolist() == [0, 1]


def test_image_folder_own_val_is_the_validation_split(tmp_path):
    make_folder(tmp_path)
    data = load_image_folder(folder_cfg(tmp_path))
    train_x, train_y, val_x, val_y = split_train_val(data, 0.5, 4, seed=0)
    assert torch.equal(val_x, data.val_images) and torch.equal(val_y, data.val_labels)
    assert torch.equal(train_x, data.train_images[:4])  # val_size unused; train_size keeps the first N
    with pytest.raises(ConfigError, match="dataset.folds=3: this dataset has its own validation split"):
        split_train_val(data, 0.5, None, seed=0, folds=3, fold=0)


def test_streaming_gives_the_same_images_as_memory(tmp_path):
    make_folder(tmp_path, size=(9, 14))
    in_memory = load_image_folder(folder_cfg(tmp_path, image_size=[7, 10]))
    streamed = load_image_folder(folder_cfg(tmp_path, image_size=[7, 10], max_memory_mb=0.0001, num_workers=2))
    assert isinstance(streamed, StreamedDataset) and streamed.num_workers == 2
    assert streamed.input_shape == in_memory.input_shape == (3, 7, 10)
    assert streamed.classes == in_memory.classes and streamed.num_classes == 2
    for name in ("train", "val", "test"):
        files = getattr(streamed, name)
        assert torch.equal(decode_all(files, num_workers=2), getattr(in_memory, f"{name}_images")), name
        assert torch.equal(files.labels, getattr(in_memory, f"{name}_labels")), name
    image, label = streamed.train[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 7, 10) and label == 1
    train_files, val_files = split_streamed(streamed, 0.5, 2, seed=0)
    assert val_files is streamed.val and train_files.labels.tolist() == [0, 0]


def test_split_streamed_matches_split_train_val(tmp_path):
    make_folder(tmp_path, splits=(("train", 6),))
    in_memory = load_image_folder(folder_cfg(tmp_path))
    streamed = load_image_folder(folder_cfg(tmp_path, max_memory_mb=0))
    for kwargs in (dict(val_size=4), dict(val_size=0.3, folds=3, fold=2)):
        train_x, train_y, val_x, val_y = split_train_val(in_memory, train_size=5, seed=3, **kwargs)
        train_files, val_files = split_streamed(streamed, train_size=5, seed=3, **kwargs)
        assert torch.equal(decode_all(train_files), train_x) and torch.equal(train_files.labels, train_y)
        assert torch.equal(decode_all(val_files), val_x) and torch.equal(val_files.labels, val_y)


def identity_normalize():
    return lambda images: images.float() / 255.0


def mean_std(mean: list[float], std: list[float]):
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return lambda images: (images.float() / 255.0 - mean) / std


@pytest.mark.parametrize("drop_last, batches, last", [(False, 4, 2), (True, 3, 4)])
def test_stream_loader_batches_and_normalized_floats(tmp_path, drop_last, batches, last):
    make_folder(tmp_path, splits=(("train", 7),))  # 14 images
    streamed = load_image_folder(folder_cfg(tmp_path, max_memory_mb=0))
    loader = StreamLoader(streamed.train, 4, normalize=identity_normalize(), drop_last=drop_last, num_workers=0)
    assert len(loader) == batches and loader.num_samples == 14
    assert isinstance(loader.generator, torch.Generator)
    out = list(loader)
    assert len(out) == batches and out[-1][0].shape == (last, 3, 10, 12)
    images, labels = out[0]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64 and images.device.type == "cpu"
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5  # x / 255
    assert torch.equal(torch.cat([l for _, l in out]), streamed.train.labels[:batches * 4 if drop_last else 14])


def test_stream_loader_matches_device_loader_with_shuffle_and_augmentation(tmp_path):
    make_folder(tmp_path, splits=(("train", 9),))
    in_memory = load_image_folder(folder_cfg(tmp_path))
    streamed = load_image_folder(folder_cfg(tmp_path, max_memory_mb=0))
    normalize = mean_std([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    common = dict(normalize=normalize, augment=HorizontalFlip(0.5), shuffle=True, seed=11)
    device_loader = DeviceLoader(in_memory.train_images, in_memory.train_labels, 5, **common)
    stream_loader = StreamLoader(streamed.train, 5, num_workers=2, channels_last=True, **common)
    for epoch in range(2):  # the second epoch reuses the persistent workers and draws a new order
        pairs = list(zip(device_loader, stream_loader, strict=True))
        assert len(pairs) == 4
        for (x1, y1), (x2, y2) in pairs:
            assert torch.equal(y1, y2)
            torch.testing.assert_close(x1, x2, rtol=0, atol=0)
            assert x2.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(device_loader.generator.get_state(), stream_loader.generator.get_state())


def test_stream_loader_corrupt_file_error_names_it_even_from_a_worker(tmp_path):
    make_folder(tmp_path, splits=(("train", 2),))
    broken = tmp_path / "train" / "dog" / "1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    streamed = load_image_folder(folder_cfg(tmp_path, max_memory_mb=0))
    loader = StreamLoader(streamed.train, 2, normalize=identity_normalize(), num_workers=2)
    before = set(multiprocessing.active_children())
    with pytest.raises(UnreadableImageError) as caught:
        list(loader)
    message = str(caught.value)
    assert message.startswith(f"{broken}: cannot decode this image") and "Traceback" not in message
    assert isinstance(caught.value, DataNotFoundError)
    deadline = time.monotonic() + 3
    while set(multiprocessing.active_children()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(multiprocessing.active_children()) - before  # the workers stopped with the error
    save_image(broken, np.zeros((10, 12, 3), np.uint8))  # fixed: the next epoch starts new workers
    assert len(list(loader)) == 2


@pytest.mark.slow
def test_cache_build_with_workers_names_a_corrupt_file(tmp_path):
    make_folder(tmp_path, splits=(("train", 3),))
    broken = tmp_path / "train" / "cat" / "2.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UnreadableImageError, match=f"^{broken}: cannot decode this image"):
        load_image_folder(folder_cfg(tmp_path, num_workers=2))
    assert not (tmp_path / ".trainlab_cache").exists()  # nothing half-made was kept


def write(path: Path, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("arrange, expected", [
    (lambda r: None, r"dataset.root=.*/nowhere: folder not found"),
    (lambda r: (r / "val" / "cat").mkdir(parents=True), r"/nowhere: has no train/ folder"),
    (lambda r: (r / "train").mkdir(parents=True), r"/nowhere/train: it holds no class folders"),
    (lambda r: save_image(r / "train" / "a.png", np.zeros((4, 4, 3), np.uint8)),
     r"/nowhere/train: 1 images lie directly in it; put each class's images in its own subfolder"),
    (lambda r: (make_folder(r, splits=(("train", 1),)), (r / "train" / "emu").mkdir()),
     r"/nowhere/train/emu: empty class folder"),
    (lambda r: (make_folder(r, splits=(("train", 1),)), write(r / "train" / "emu" / "notes.txt", b"x")),
     r"/nowhere/train/emu: empty class folder \(no .jpg, .jpeg, .png, .bmp, .webp files\)"),
    (lambda r: (make_folder(r, splits=(("train", 1),)), save_image(r / "val" / "emu" / "1.png", np.zeros((4, 4), np.uint8))),
     r"/nowhere/val: class folders not in .*/nowhere/train: emu; val/ and test/ must use the training classes \(cat, dog\)"),
    (lambda r: (make_folder(r, splits=(("train", 1),)), write(r / "train" / "cat" / "bad.jpg", b"\xff\xd8 not really")),
     r"/nowhere/train/cat/bad.jpg: cannot decode this image"),
    (lambda r: (make_folder(r, splits=(("train", 1),)), write(r / "train" / "cat" / "empty.png")),
     r"/nowhere/train/cat/empty.png: cannot decode this image"),
], ids=["no-root", "no-train", "no-classes", "loose-images", "empty-class", "no-images-in-class",
        "unknown-val-class", "corrupt-jpeg", "empty-file"])
def test_image_folder_bad_input_messages(tmp_path, arrange, expected):
    root = tmp_path / "nowhere"
    arrange(root)
    with pytest.raises(DataNotFoundError, match=expected):
        load_image_folder(folder_cfg(root))


@pytest.mark.parametrize("key, value, expected", [
    ("image_size", 0, r"dataset.image_size=0: must be a whole number >= 1 or \[height, width\]"),
    ("image_size", [3, 4, 5], r"dataset.image_size=.*: must be a whole number >= 1 or \[height, width\]"),
    ("image_size", None, "dataset.image_size: required"),
    ("channels", 2, "dataset.channels=2: must be 1 .* or 3"),
    ("max_memory_mb", -1, "dataset.max_memory_mb=-1: must be a number >= 0"),
    ("num_workers", 1.5, "dataset.num_workers=1.5: must be a whole number >= 0"),
])
def test_image_folder_bad_settings_are_config_errors(tmp_path, key, value, expected):
    make_folder(tmp_path, splits=(("train", 1),))
    with pytest.raises(ConfigError, match=expected):
        load_image_folder(folder_cfg(tmp_path, **{key: value}))


def test_load_dataset_routes_imagefolder_and_scan_is_sorted(tmp_path):
    make_folder(tmp_path, splits=(("train", 2),), classes=("zebra", "ant", "moose"))
    data = load_dataset(folder_cfg(tmp_path))
    assert data.classes == ["ant", "moose", "zebra"] and data.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    index = scan_image_folder(tmp_path)
    assert [p.name for p in index.splits["train"].files] == ["0.png", "1.png"] * 3


def test_image_files_subset_and_collate(tmp_path):
    make_folder(tmp_path, splits=(("train", 2),))
    files = load_image_folder(folder_cfg(tmp_path, max_memory_mb=0)).train
    part = files.subset(torch.tensor([3, 0]))
    assert isinstance(part, ImageFiles) and len(part) == 2 and part.labels.tolist() == [1, 0]
    assert part.path(0) == files.path(3) and torch.equal(part[1][0], files[0][0])


# ================================================================ k-fold cross-validation


def imbalanced_labels() -> torch.Tensor:
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate([23, 11, 7, 3])])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_kfold_folds_are_disjoint_and_cover_everything(folds):
    labels = imbalanced_labels()
    n = labels.numel()
    seen = []
    for fold in range(folds):
        train, val = kfold_split(labels, folds, fold, seed=4)
        assert sorted(train.tolist() + val.tolist()) == list(range(n))
        assert torch.equal(val, val.sort().values) and torch.equal(train, train.sort().values)
        assert abs(val.numel() - n / folds) < 1  # fold sizes within one of each other
        seen += val.tolist()
    assert sorted(seen) == list(range(n))  # each example in exactly one validation fold


@pytest.mark.parametrize("folds", [2, 4, 5])
def test_kfold_is_stratified(folds):
    labels = imbalanced_labels()
    for fold in range(folds):
        _, val = kfold_split(labels, folds, fold, seed=1)
        for cls in range(4):
            share = (labels == cls).sum().item() / folds
            held = (labels[val] == cls).sum().item()
            assert abs(held - share) < 1, (fold, cls, held, share)


def test_kfold_is_deterministic_per_seed():
    labels = torch.arange(200) % 4
    assert torch.equal(kfold_split(labels, 5, 2, seed=3)[1], kfold_split(labels, 5, 2, seed=3)[1])
    assert not torch.equal(kfold_split(labels, 5, 2, seed=3)[1], kfold_split(labels, 5, 2, seed=4)[1])


def test_train_val_indices_with_folds_applies_train_size_after_the_fold():
    labels = torch.arange(60) % 3
    _, val = train_val_indices(labels, 0.5, None, seed=2, folds=4, fold=1)
    train, val_small = train_val_indices(labels, 0.5, 10, seed=2, folds=4, fold=1)
    assert torch.equal(val, val_small) and val.numel() == 15
    assert train.numel() == 10 and not set(train.tolist()) & set(val.tolist())
    train_default, val_default = train_val_indices(labels, 12, None, seed=2)  # no folds: val_size
    assert val_default.numel() == 12 and train_default.numel() == 48


def test_split_train_val_with_folds_on_tensors():
    images = torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1)
    data = ImageDataset(images, torch.arange(30) % 3, images[:2], torch.zeros(2, dtype=torch.long), ["a", "b", "c"])
    vals = [split_train_val(data, 5, None, seed=0, folds=3, fold=k)[2].flatten().tolist() for k in range(3)]
    assert sorted(sum(vals, [])) == list(range(30)) and all(len(v) == 10 for v in vals)


@pytest.mark.parametrize("folds, fold, expected", [
    (1, 0, "dataset.folds=1: must be null .* or a whole number >= 2"),
    (True, 0, "dataset.folds=True: must be null"),
    (3, 3, r"dataset.fold=3: must be a whole number in 0\.\.2 \(dataset.folds=3\)"),
    (3, -1, r"dataset.fold=-1: must be a whole number in 0\.\.2"),
    (None, 2, "dataset.fold=2: only means something with dataset.folds=k"),
    (50, 0, r"dataset.folds=50: more folds than training examples \(44\)"),
])
def test_bad_folds_are_config_errors(folds, fold, expected):
    with pytest.raises(ConfigError, match=expected):
        train_val_indices(imbalanced_labels(), 5, None, seed=0, folds=folds, fold=fold)


def test_check_folds_accepts_valid_settings():
    check_folds(None, 0)
    check_folds(None, None)
    check_folds(5, 4, total=5)
