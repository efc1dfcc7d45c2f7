"""Domain adaptation's pieces: the gradient-reversal layer, Ganin's schedules, the shifted target domains."""

from __future__ import annotations

import math

import pytest
import torch

from trainlab.adaptation.reversal import GradientReversal, ganin_lambda, ganin_lr_factor, reverse_gradient
from trainlab.data.domains import SHIFTS, shift_images


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_passes_values_and_multiplies_gradients_by_minus_lambda(weight):
    features = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    out = GradientReversal(weight)(features)
    assert torch.equal(out, features), "forward: the values unchanged"
    out.backward(upstream)
    assert torch.allclose(features.grad, -weight * upstream)


def test_gradient_reversal_inside_a_network_flips_only_what_flows_through_it():
    torch.manual_seed(0)
    extractor = torch.nn.Linear(4, 3)
    task, domain = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)
    images = torch.randn(8, 4)

    def extractor_grads(weight: float):
        extractor.zero_grad()
        features = extractor(images)
        (task(features).sum() + domain(reverse_gradient(features, weight)).sum()).backward()
        return extractor.weight.grad.clone()

    features = extractor(images).detach()
    extractor.zero_grad()
    task_only = torch.autograd.grad(task(extractor(images)).sum(), extractor.weight)[0]
    domain_only = torch.autograd.grad(domain(extractor(images)).sum(), extractor.weight)[0]
    assert features.shape == (8, 3)
    assert torch.allclose(extractor_grads(0.5), task_only - 0.5 * domain_only, atol=1e-6)


def test_ganin_schedules_at_known_points():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert ganin_lambda(1.0) == pytest.approx(0.9999092, abs=1e-7)
    assert ganin_lambda(0.2, gamma=5) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert ganin_lr_factor(0.0) == 1.0
    assert ganin_lr_factor(1.0) == pytest.approx(11 ** -0.75)
    assert ganin_lr_factor(0.5, alpha=2, beta=1) == pytest.approx(0.5)
    values = [ganin_lambda(p / 10) for p in range(11)]
    assert values == sorted(values), "lambda rises with progress"
    with pytest.raises(ValueError, match="progress"):
        ganin_lambda(1.5)


def grey_images(count: int = 12, size: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("shift", SHIFTS)
def test_a_shift_is_deterministic_under_its_seed_and_keeps_the_images_shape(shift):
    images = grey_images()
    once, again = shift_images(images, shift, seed=3), shift_images(images, shift, seed=3)
    assert torch.equal(once, again) and once.dtype == torch.uint8
    channels = 3 if shift in ("textured", "tinted") else 1
    assert once.shape == (12, channels, 10, 10)
    assert not torch.equal(once.float().mean(dim=1, keepdim=True), images.float()), "the images are shifted"
    if shift in ("textured", "tinted", "noisy"):  # the seeded ones
        assert not torch.equal(once, shift_images(images, shift, seed=4)), "another seed, another domain"
        part = shift_images(images[5:9], shift, seed=3, start=5)
        assert torch.equal(part, once[5:9]), "image i's draw depends on the seed and i only"


def test_textured_images_each_get_a_texture_of_their_own_and_keep_the_shape_visible():
    blank = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    textures = shift_images(blank, "textured", seed=0)
    assert all(not torch.equal(textures[0], textures[i]) for i in range(1, 4))
    square = blank.clone()
    square[:, :, 8:20, 8:20] = 255
    shifted = shift_images(square, "textured", seed=0).float()
    inside, outside = shifted[:, :, 8:20, 8:20], textures.float()[:, :, 8:20, 8:20]
    assert torch.allclose(inside, (255 - outside).abs(), atol=1.0), "|texture - image|: the digit shows through"


def test_inverting_twice_gives_the_images_back_and_bad_input_is_refused():
    images = grey_images()
    assert torch.equal(shift_images(shift_images(images, "inverted"), "inverted"), images)
    with pytest.raises(ValueError, match="choose one of"):
        shift_images(images, "blurred")
    with pytest.raises(ValueError, match="uint8"):
        shift_images(images.float(), "noisy")


# -- the pieces of the DANN step ----------------------------------------------------------------------------


def test_a_tensor_lambda_reverses_like_a_float_and_may_change_without_a_new_function():
    from trainlab.adaptation.dann import DomainClassifier

    features = torch.randn(6, 4, requires_grad=True)
    classifier = DomainClassifier(4, [5], dropout=0.0)
    grads = []
    for value in (0.0, 0.5, 2.0):
        classifier.reversal.fill_(value)
        features.grad = None
        classifier(features).sum().backward()
        grads.append(features.grad.clone())
    plain = DomainClassifier(4, [5], dropout=0.0)
    plain.load_state_dict(classifier.state_dict())
    features.grad = None
    plain.layers(features).sum().backward()  # no reversal: the classifier's own gradient
    assert torch.equal(grads[0], torch.zeros_like(grads[0]))
    assert torch.allclose(grads[1], -0.5 * features.grad) and torch.allclose(grads[2], -2.0 * features.grad)
    assert "reversal" not in classifier.state_dict()  # lambda comes from the schedule, not from a checkpoint


def test_lambda_follows_ganin_over_the_optimizer_steps_or_stays_constant():
    from trainlab.adaptation.dann import DANN, DomainClassifier
    from trainlab.models.mlp import MLP

    model = MLP((1, 4, 4), 3, hidden=[8])
    loader = type("Loader", (), {"batch_size": 2})()
    dann = DANN(model, DomainClassifier(8, [4]), loader, total_steps=200, lambda_max=0.5)
    assert dann.lambda_at(0) == 0.0
    assert dann.lambda_at(100) == pytest.approx(0.5 * (2 / (1 + math.exp(-5)) - 1))
    assert dann.lambda_at(400) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))  # past the end: held
    constant = DANN(model, DomainClassifier(8, [4]), loader, total_steps=200, lambda_schedule="constant",
                    lambda_max=0.3)
    assert constant.lambda_at(0) == constant.lambda_at(150) == 0.3


def test_the_joined_step_scores_source_labels_on_the_source_half_and_the_domains_on_both():
    from trainlab.adaptation.dann import DANN, DomainClassifier
    from trainlab.data.loader import DeviceLoader
    from trainlab.models.mlp import MLP

    torch.manual_seed(0)
    model = MLP((1, 4, 4), 3, hidden=[8])
    target_images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    loader = DeviceLoader(target_images, torch.full((10,), -1), 4, normalize=lambda x: x.float() / 255,
                          shuffle=True, drop_last=True, seed=1)
    classifier = DomainClassifier(8, [6], dropout=0.0)
    dann = DANN(model, classifier, loader, total_steps=10)
    source = torch.rand(3, 1, 4, 4)
    joined = dann.join(source, step=5)
    assert joined.shape == (7, 1, 4, 4) and torch.equal(joined[:3], source)
    logits, domain_loss = dann.split(model(joined))
    assert logits.shape == (3, 3)
    features = torch.nn.Sequential(*list(model)[:-1])(joined)  # the head's input
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        classifier.layers(features).squeeze(1), torch.tensor([0.0] * 3 + [1.0] * 4))
    assert domain_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    window = dann.window(step=5)
    assert set(window) == {"domain/loss_source", "domain/loss_target", "domain/acc", "domain/lambda"}
    assert 0.0 <= window["domain/acc"].item() <= 1.0 and window["domain/lambda"].item() == pytest.approx(
        dann.lambda_at(5))
    model.eval()
    model(torch.rand(2, 1, 4, 4))  # not joined: no domain logits computed (an evaluation pass)
    assert dann._domain_logits is None
    assert dann._batch == 1
    for _ in range(2):  # 2 target batches a pass (10 images, batch 4, drop_last): the third starts a new pass
        dann.join(source, step=6)
        dann.split(model(torch.cat([source, source, source[:1]])))
    assert dann._batch == 1


# -- common image shape of two domains ------------------------------------------------------------------------


def test_both_domains_take_one_shape_grey_repeated_to_rgb_and_the_target_resized():
    from trainlab.data.target import DomainSettings, common_shape, conform

    auto = DomainSettings()
    assert common_shape((1, 28, 28), (3, 32, 32), auto, "mnist", "svhn") == (3, 28, 28)
    assert common_shape((3, 32, 32), (1, 28, 28), auto, "svhn", "mnist") == (3, 32, 32)
    assert common_shape((3, 32, 32), (3, 28, 28), DomainSettings(channels=1, image_size=(20, 24)), "a", "b") == \
        (1, 20, 24)
    grey = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    rgb = conform(grey, (3, 8, 8))
    assert rgb.shape == (2, 3, 8, 8) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    resized = conform(rgb, (1, 4, 4))
    assert resized.shape == (2, 1, 4, 4) and resized.dtype == torch.uint8
    with pytest.raises(Exception, match=r"dataset=a has 2-channel images and domain=b 3-channel ones"):
        common_shape((2, 8, 8), (3, 8, 8), auto, "a", "b")


# -- MNIST-M files -------------------------------------------------------------------------------------------


def test_mnist_m_reads_ganins_archive_layout_and_the_torch_files(tmp_path):
    from PIL import Image

    from trainlab.data.mnist_m import load_mnist_m
    from trainlab.errors import DataNotFoundError

    rng = torch.Generator().manual_seed(0)
    images = {split: torch.randint(0, 256, (n, 28, 28, 3), dtype=torch.uint8, generator=rng)
              for split, n in (("train", 6), ("test", 4))}
    labels = {split: torch.arange(len(images[split])) % 10 for split in images}
    archive = tmp_path / "archive" / "mnist_m"
    for split in images:
        (archive / f"mnist_m_{split}").mkdir(parents=True)
        lines = []
        for i, (image, label) in enumerate(zip(images[split], labels[split])):
            Image.fromarray(image.numpy()).save(archive / f"mnist_m_{split}" / f"{i:08d}.png")
            lines.append(f"{i:08d}.png {int(label)}")
        (archive / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
    loaded = load_mnist_m(tmp_path / "archive")
    assert loaded.train_images.shape == (6, 3, 28, 28) and loaded.test_images.shape == (4, 3, 28, 28)
    assert torch.equal(loaded.train_images, images["train"].permute(0, 3, 1, 2))  # PNG is lossless
    assert torch.equal(loaded.test_labels, labels["test"]) and loaded.num_classes == 10
    torch_root = tmp_path / "pt"
    torch_root.mkdir()
    for split in images:
        torch.save((images[split], labels[split]), torch_root / f"mnist_m_{split}.pt")
    from_torch = load_mnist_m(torch_root)
    assert torch.equal(from_torch.train_images, loaded.train_images)
    (archive / "mnist_m_test_labels.txt").write_text("00000000.png seven\n")
    with pytest.raises(DataNotFoundError, match=r"mnist_m_test_labels.txt, line 1: expected '<file name> <label>'"):
        load_mnist_m(tmp_path / "archive")
    with pytest.raises(DataNotFoundError, match=r"MNIST-M not found \(looked in .*nowhere/mnist_m"):
        load_mnist_m(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["cnn", "resnet20", "wrn", "vgg", "mlp", "airbench"])
def test_every_model_with_a_linear_head_gives_dann_its_features(name):
    """The domain classifier reads the head's input: as wide as the head's in_features, with the model's output
    unchanged by the hook while DANN is not joined (evaluation)."""
    from trainlab.adaptation.dann import DANN, DomainClassifier, feature_width
    from trainlab.config import load_option
    from trainlab.models import build_model

    torch.manual_seed(0)
    model = build_model(load_option("model", name), (3, 32, 32), 10).eval()
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        before = model(images)
    width = feature_width(model)
    loader = type("Loader", (), {"batch_size": 4})()
    dann = DANN(model, DomainClassifier(width, [8]), loader, total_steps=10)
    with torch.no_grad():
        assert torch.equal(model(images), before) and dann._domain_logits is None
        dann._sources, dann._armed = 2, True
        model(images)
    assert dann._domain_logits.shape == (4,)
