"""Data: IDX files, Fashion-MNIST lookup, synthetic data, splits, augmentation, loaders."""

from __future__ import annotations

import gzip
import os
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from trainlab.data import split_train_val
from trainlab.data import datasets as datasets_module
from trainlab.data.augment import HorizontalFlip, RandomCrop
from trainlab.data.pipeline import Pipeline
from trainlab.data.datasets import FASHION_MNIST_FILES, ImageDataset, load_fashion_mnist, make_synthetic, read_idx
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import MeanStd, Preprocessor
from trainlab.data.splits import stratified_split, val_count
from trainlab.errors import ConfigError, DataNotFoundError

SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0 0 0x08 ndim, big-endian uint32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def identity_normalize() -> Preprocessor:
    """x -> x / 255 (preprocess=none)."""
    return Preprocessor()


def mean_std(mean: torch.Tensor, std: torch.Tensor) -> MeanStd:
    """A MeanStd preprocessor with given statistics (instead of fitted ones)."""
    return MeanStd().load_state_dict({"name": "mean_std", "mean": mean, "std": std})


# ================================================================ read_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    path = write_idx(tmp_path / f"images-idx3-ubyte{suffix}", array)
    read = read_idx(path)
    assert read.dtype == np.uint8
    assert read.shape == (5, 3, 4)
    np.testing.assert_array_equal(read, array)


def test_read_idx_one_dimensional_labels(tmp_path):
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "labels.gz", labels)), labels)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([0, 0]),
        bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]),  # float32 IDX, not unsigned byte
        bytes([1, 0, 0x08, 1, 0, 0, 0, 1, 7]),  # bad magic
        b"<html>404 Not Found</html>",
    ],
    ids=["empty", "short", "float-type", "bad-magic", "html"],
)
def test_read_idx_corrupt_header_is_data_not_found(tmp_path, data):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataNotFoundError, match="not an unsigned-byte IDX file"):
        read_idx(path)


def test_read_idx_truncated_body_is_data_not_found(tmp_path):
    data = idx_bytes(np.zeros((4, 2, 2), dtype=np.uint8))[:-3]
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataNotFoundError, match="truncated"):
        read_idx(path)


def test_read_idx_truncated_dimension_header_is_data_not_found(tmp_path):
    path = tmp_path / "cut-header-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0]))  # says 3 dims, holds 1.5
    with pytest.raises(DataNotFoundError):
        read_idx(path)


def test_read_idx_truncated_gzip_is_data_not_found(tmp_path):
    full = tmp_path / "full.gz"
    write_idx(full, np.arange(200, dtype=np.uint8).reshape(2, 10, 10))
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(full.read_bytes()[:-12])
    with pytest.raises(DataNotFoundError):
        read_idx(cut)


# ================================================================ load_fashion_mnist


def write_fake_fashion_mnist(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": (np.arange(n_train) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    for key, stem in FASHION_MNIST_FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.mark.parametrize("layout", ["root", "torchvision-raw"])
@pytest.mark.parametrize("gz", [False, True])
def test_load_fashion_mnist_from_root(tmp_path, monkeypatch, layout, gz):
    monkeypatch.setattr(datasets_module, "SYSTEM_FASHION_MNIST", tmp_path / "no-system-folder")
    folder = tmp_path if layout == "root" else tmp_path / "FashionMNIST" / "raw"
    arrays = write_fake_fashion_mnist(folder, gz)
    dataset = load_fashion_mnist(str(tmp_path), download=False)
    assert dataset.train_images.shape == (12, 1, 28, 28) and dataset.train_images.dtype == torch.uint8
    assert dataset.test_images.shape == (5, 1, 28, 28)
    assert dataset.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(dataset.train_images[:, 0].numpy(), arrays["train_x"])
    np.testing.assert_array_equal(dataset.test_labels.numpy(), arrays["test_y"].astype(np.int64))
    assert dataset.num_classes == 10 and dataset.input_shape == (1, 28, 28)


def fake_torchvision(monkeypatch, fashion_mnist) -> None:
    """Stand in for torchvision (its import is slow and a download needs the internet)."""
    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(FashionMNIST=fashion_mnist))
    monkeypatch.setitem(sys.modules, "torchvision", fake)


def test_load_fashion_mnist_missing_everywhere_says_where_it_looked(tmp_path, monkeypatch):
    missing = tmp_path / "not-installed"
    monkeypatch.setattr(datasets_module, "SYSTEM_FASHION_MNIST", missing)

    def no_download(*args, **kwargs):
        raise AssertionError("download=False must not try to download")

    fake_torchvision(monkeypatch, no_download)
    root = tmp_path / "empty-root"
    root.mkdir()
    with pytest.raises(DataNotFoundError) as caught:
        load_fashion_mnist(str(root), download=False)
    message = str(caught.value)
    assert str(root) in message
    assert str(root / "FashionMNIST" / "raw") in message
    assert str(missing) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=off" in message


def test_load_fashion_mnist_failed_download_is_data_not_found(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "SYSTEM_FASHION_MNIST", tmp_path / "not-installed")
    calls = []

    def offline(root, train, download):
        calls.append((root, train, download))
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    fake_torchvision(monkeypatch, offline)
    with pytest.raises(DataNotFoundError, match="download=on"):
        load_fashion_mnist(str(tmp_path), download=True)
    assert calls and calls[0][2] is True


def test_load_fashion_mnist_from_the_system_folder():
    if not (SYSTEM_FOLDER / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"Fashion-MNIST is missing in CI ({SYSTEM_FOLDER}): apt-get install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    dataset = load_fashion_mnist("/nonexistent-trainlab-root", download=False)
    assert dataset.train_images.shape == (60000, 1, 28, 28)
    assert dataset.test_images.shape == (10000, 1, 28, 28)
    assert dataset.train_images.dtype == torch.uint8 and dataset.test_images.dtype == torch.uint8
    assert dataset.train_labels.shape == (60000,) and dataset.test_labels.shape == (10000,)
    for labels, per_class in ((dataset.train_labels, 6000), (dataset.test_labels, 1000)):
        assert labels.min() == 0 and labels.max() == 9
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10  # Fashion-MNIST is balanced
    assert len(dataset.classes) == 10


# ================================================================ make_synthetic


def test_make_synthetic_is_deterministic_for_a_generator_seed():
    a = make_synthetic(num_train=60, num_test=20, generator_seed=3)
    torch.manual_seed(123)  # the global RNG must not matter
    b = make_synthetic(num_train=60, num_test=20, generator_seed=3)
    for x, y in ((a.train_images, b.train_images), (a.train_labels, b.train_labels),
                 (a.test_images, b.test_images), (a.test_labels, b.test_labels)):
        assert torch.equal(x, y)


def test_make_synthetic_differs_across_generator_seeds():
    a = make_synthetic(num_train=60, num_test=20, generator_seed=0)
    b = make_synthetic(num_train=60, num_test=20, generator_seed=1)
    assert not torch.equal(a.train_images, b.train_images)


@pytest.mark.parametrize("channels, size, classes", [(1, 28, 10), (3, 16, 4)])
def test_make_synthetic_shapes_dtype_and_classes(channels, size, classes):
    data = make_synthetic(num_train=50, num_test=13, num_classes=classes, channels=channels, image_size=size)
    assert data.train_images.shape == (50, channels, size, size)
    assert data.test_images.shape == (13, channels, size, size)
    assert data.train_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64
    assert sorted(data.train_labels.unique().tolist()) == list(range(classes))
    assert sorted(data.test_labels.unique().tolist()) == list(range(classes))
    assert data.num_classes == classes and data.input_shape == (channels, size, size)
    assert data.train_images.float().std() > 10  # not a constant image


@pytest.mark.parametrize("kwargs", [dict(num_train=0), dict(num_classes=0), dict(noise=-0.1)])
def test_make_synthetic_rejects_impossible_sizes(kwargs):
    with pytest.raises(ConfigError, match="dataset"):
        make_synthetic(**kwargs)


# ================================================================ splits


def imbalanced_labels() -> torch.Tensor:
    counts = [50, 30, 17, 3]
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("val_size", [0, 1, 25, 33, 99])
def test_stratified_split_partitions_the_indices(val_size):
    labels = imbalanced_labels()
    train, val = stratified_split(labels, val_size, seed=0)
    assert val.numel() == val_size
    assert train.numel() == labels.numel() - val_size
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(labels.numel()))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)


@pytest.mark.parametrize("val_size", [1, 25, 33, 50])
def test_stratified_split_keeps_class_proportions(val_size):
    labels = imbalanced_labels()
    _, val = stratified_split(labels, val_size, seed=1)
    total = labels.numel()
    for cls in labels.unique().tolist():
        ideal = (labels == cls).sum().item() * val_size / total
        held = (labels[val] == cls).sum().item()
        assert abs(held - ideal) < 1, (cls, held, ideal)


def test_stratified_split_is_seeded():
    labels = torch.arange(500) % 10
    a = stratified_split(labels, 100, seed=7)
    b = stratified_split(labels, 100, seed=7)
    c = stratified_split(labels, 100, seed=8)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


def test_val_count_with_counts_and_fractions():
    assert val_count(300, 1000) == 300
    assert val_count(0.1, 1000) == 100
    assert val_count(0.25, 200) == 50
    assert val_count(0, 10) == 0


@pytest.mark.parametrize("val_size", [1000, 2000, 0.9999])
def test_val_count_leaving_no_training_data_is_a_config_error(val_size):
    with pytest.raises(ConfigError, match="dataset.val_size"):
        val_count(val_size, 1000)


def indexed_dataset(n: int = 300, classes: int = 5) -> ImageDataset:
    """Each training image is [1, 1, 2]: its own index as two base-256 digits, so rows can be traced."""
    index = torch.arange(n)
    images = torch.stack([index // 256, index % 256], dim=-1).to(torch.uint8).view(n, 1, 1, 2)
    labels = (index * 7) % classes
    return ImageDataset(images, labels, images[:10], labels[:10], classes=[str(k) for k in range(classes)])


def indices_of(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()).tolist()


def test_split_train_val_validation_set_does_not_depend_on_train_size():
    dataset = indexed_dataset()
    _, _, val_all, val_labels_all = split_train_val(dataset, 60, None, seed=4)
    for train_size in (1, 50, 100, 239):
        train_x, train_y, val_x, val_y = split_train_val(dataset, 60, train_size, seed=4)
        assert torch.equal(val_x, val_all) and torch.equal(val_y, val_labels_all)
        assert train_x.shape[0] == train_size == train_y.shape[0]


def test_split_train_val_train_size_takes_the_first_remaining_in_order():
    dataset = indexed_dataset()
    train_x, train_y, val_x, val_y = split_train_val(dataset, 0.2, 40, seed=4)
    held_out = set(indices_of(val_x))
    assert len(held_out) == 60  # 0.2 * 300
    remaining = [i for i in range(300) if i not in held_out]
    assert indices_of(train_x) == remaining[:40]
    assert torch.equal(train_y, dataset.train_labels[remaining[:40]])
    assert torch.equal(val_y, dataset.train_labels[sorted(held_out)])


# ================================================================ augmentation


def asymmetric_batch(n: int, channels: int = 1, h: int = 5, w: int = 6) -> torch.Tensor:
    """n distinct uint8 images, none of them its own mirror image."""
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 200, (n, channels, h, w), generator=gen, dtype=torch.uint8)
    images[..., 0] = 250  # left column bright, right column dark: the mirror always differs
    images[..., -1] = 0
    images[:, 0, 0, 1] = torch.arange(n, dtype=torch.uint8)  # distinct images
    return images


def test_flip_p0_is_identity_and_p1_flips_all():
    images = asymmetric_batch(16)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(HorizontalFlip(p=0.0)(images, gen), images)
    assert torch.equal(HorizontalFlip(p=1.0)(images, gen), images.flip(-1))


def test_flip_half_draws_a_coin_per_sample():
    images = asymmetric_batch(64, channels=3)
    out = HorizontalFlip(p=0.5)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    flipped = []
    for i in range(64):
        is_same = torch.equal(out[i], images[i])
        is_mirror = torch.equal(out[i], images[i].flip(-1))
        assert is_same != is_mirror, i  # exactly one: the image or its mirror (all channels together)
        flipped.append(is_mirror)
    assert 0 < sum(flipped) < 64


def test_flip_is_reproducible_with_the_same_generator_seed():
    images = asymmetric_batch(32)
    a = HorizontalFlip(0.5)(images, torch.Generator().manual_seed(9))
    b = HorizontalFlip(0.5)(images, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_flip_rejects_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match=rf"p={p}: a probability must be in \[0, 1\]"):
        HorizontalFlip(p=p)


def test_crop_without_padding_is_identity():
    images = asymmetric_batch(8)
    assert torch.equal(RandomCrop(padding=0)(images, torch.Generator().manual_seed(0)), images)


def numbered_batch(n: int, channels: int, h: int, w: int) -> torch.Tensor:
    """n copies of one image whose pixels are all distinct and nonzero (channel c adds 100*c)."""
    base = torch.arange(1, h * w + 1).view(1, h, w) + 100 * torch.arange(channels).view(channels, 1, 1)
    return base.to(torch.uint8).expand(n, channels, h, w).contiguous()


def window_offsets(padded: torch.Tensor, crop: torch.Tensor, p: int) -> list[tuple[int, int]]:
    h, w = crop.shape[-2:]
    return [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
            if torch.equal(padded[:, dy:dy + h, dx:dx + w], crop)]


def test_crop_outputs_are_windows_of_the_zero_padded_input_with_per_sample_offsets():
    p, n = 2, 64
    images = numbered_batch(n, channels=3, h=6, w=7)
    out = RandomCrop(padding=p)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (p, p, p, p))
    offsets = []
    for i in range(n):
        found = window_offsets(padded[i], out[i], p)
        assert len(found) == 1, i  # distinct pixel values: exactly one window (same for all channels)
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # not one offset for the whole batch
    rows = {dy for dy, _ in offsets}
    cols = {dx for _, dx in offsets}
    assert {0, 2 * p} <= rows and {0, 2 * p} <= cols  # the extreme shifts are reachable


def test_crop_reflect_mode_on_uint8():
    p = 2
    images = numbered_batch(32, channels=1, h=5, w=5)
    out = RandomCrop(padding=p, padding_mode="reflect")(images, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    # reflect padding of [1..] values never introduces zeros
    assert out.min() >= 1
    padded = torch.nn.functional.pad(images.float(), (p, p, p, p), mode="reflect").to(torch.uint8)
    offsets = [window_offsets(padded[i], out[i], p) for i in range(32)]
    assert all(len(found) >= 1 for found in offsets)
    assert len({tuple(found) for found in offsets}) > 1


@pytest.mark.parametrize("kwargs, key", [
    (dict(padding=-1), "padding"),
    (dict(padding=2, padding_mode="circular"), "padding_mode"),
])
def test_crop_rejects_invalid_settings(kwargs, key):
    with pytest.raises(ValueError, match=rf"^{key}="):
        RandomCrop(**kwargs)


def test_crop_reflect_padding_must_be_smaller_than_the_image():
    with pytest.raises(ValueError, match=r"^padding=4: reflect padding must be smaller"):
        RandomCrop(padding=4, padding_mode="reflect")(numbered_batch(2, 1, 4, 4), torch.Generator())


def test_pipeline_check_names_the_op_whose_parameters_do_not_fit_the_images():
    from omegaconf import OmegaConf

    from trainlab.data import build_augmentation

    ops = OmegaConf.create({"pad": {"_target_": "trainlab.data.augment.RandomCrop", "padding": 8,
                                    "padding_mode": "reflect"}})
    assert len(build_augmentation(ops, (1, 28, 28))) == 1
    with pytest.raises(ConfigError, match=r"^augmentation\.ops\.pad: padding=8: reflect padding"):
        build_augmentation(ops, (1, 6, 6))
    bad_p = OmegaConf.create({"mirror": {"_target_": "trainlab.data.augment.HorizontalFlip", "p": 2}})
    with pytest.raises(ConfigError, match=r"^augmentation\.ops\.mirror: .*p=2"):
        build_augmentation(bad_p, (1, 6, 6))


def test_pipeline_applies_ops_in_order():
    images = asymmetric_batch(4)
    calls = []

    def op(name, fn):
        def run(x, generator):
            calls.append(name)
            return fn(x)
        return run

    pipe = Pipeline([op("a", lambda x: x.flip(-1)), op("b", lambda x: x // 2)])
    out = pipe(images, torch.Generator())
    assert calls == ["a", "b"] and len(pipe) == 2
    assert torch.equal(out, images.flip(-1) // 2)


# ================================================================ DeviceLoader


def encoded_data(n: int):
    """Image i is filled with the value i (uint8); its label is (3 * i) % 7: labels are traceable."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 3, 3).contiguous()
    labels = (torch.arange(n) * 3) % 7
    return images, labels


def decode(batch: torch.Tensor) -> torch.Tensor:
    """Invert identity_normalize: the sample index each (normalized) image encodes."""
    return (batch[:, 0, 0, 0] * 255).round().long()


@pytest.mark.parametrize("n, batch_size, drop_last, expected", [
    (10, 4, False, 3), (10, 4, True, 2), (12, 4, False, 3), (12, 4, True, 3), (3, 8, False, 1), (1, 1, True, 1),
])
def test_loader_length(n, batch_size, drop_last, expected):
    images, labels = encoded_data(n)
    loader = DeviceLoader(images, labels, batch_size, normalize=identity_normalize(), drop_last=drop_last)
    assert len(loader) == expected
    batches = list(loader)
    assert len(batches) == expected
    sizes = [b[0].shape[0] for b in batches]
    assert sum(sizes) == (n if not drop_last else expected * min(batch_size, n))


def test_loader_unshuffled_keeps_order_and_batches_are_normalized_floats():
    images, labels = encoded_data(10)
    mean, std = torch.tensor([0.3, 0.6]), torch.tensor([0.2, 0.1])
    loader = DeviceLoader(images, labels, 4, normalize=mean_std(mean, std))
    seen = []
    for batch, batch_labels in loader:
        assert batch.dtype == torch.float32
        index = len(seen)
        expected = (images[index:index + batch.shape[0]].float() / 255 - mean.view(1, 2, 1, 1)) / std.view(1, 2, 1, 1)
        torch.testing.assert_close(batch, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(batch_labels, labels[index:index + batch.shape[0]])
        seen += batch_labels.tolist()
    assert len(seen) == 10


def test_loader_shuffled_visits_every_sample_once_per_epoch_with_matching_labels():
    images, labels = encoded_data(50)
    loader = DeviceLoader(images, labels, 8, normalize=identity_normalize(), shuffle=True, seed=3)
    orders = []
    for _ in range(2):
        order = []
        for batch, batch_labels in loader:
            index = decode(batch)
            assert torch.equal(batch_labels, (index * 3) % 7)  # each label travels with its image
            order += index.tolist()
        assert sorted(order) == list(range(50))
        orders.append(order)
    assert orders[0] != list(range(50))  # shuffled
    assert orders[0] != orders[1]  # a new order each epoch


def test_loader_same_seed_same_order_different_seed_different_order():
    images, labels = encoded_data(50)

    def order(seed):
        loader = DeviceLoader(images, labels, 8, normalize=identity_normalize(), shuffle=True, seed=seed)
        return [decode(b).tolist() for _ in range(2) for b, _ in loader]

    assert order(11) == order(11)
    assert order(11) != order(12)


def test_loader_drop_last_shuffled_drops_only_the_partial_batch():
    images, labels = encoded_data(10)
    loader = DeviceLoader(images, labels, 4, normalize=identity_normalize(), shuffle=True, drop_last=True, seed=0)
    indices = [decode(b).tolist() for b, _ in loader]
    assert [len(b) for b in indices] == [4, 4]
    assert len(set(sum(indices, []))) == 8


def test_loader_applies_augmentation_before_normalization():
    images = asymmetric_batch(6)
    labels = torch.arange(6)
    loader = DeviceLoader(images, labels, 6, normalize=identity_normalize(), augment=HorizontalFlip(p=1.0))
    batch, _ = next(iter(loader))
    torch.testing.assert_close(batch, images.flip(-1).float() / 255)


def test_loader_rejects_mismatched_images_and_labels():
    images, labels = encoded_data(5)
    with pytest.raises(ValueError):
        DeviceLoader(images, labels[:4], 2, normalize=identity_normalize())
