"""The picture of domain adaptation (as in Ganin et al. 2016, figure 4): the features (the model's `head` input)
of source and target test images projected to 2-D and coloured by domain, one panel per model. With features the
domain classifier cannot tell apart, the two clouds overlap; a source-only model keeps them apart.

Projection: t-SNE (scikit-learn, `pip install trainlab[tsne]`) where installed and asked for (`auto`), else PCA
(torch.pca_lowrank; what is left when scikit-learn is not there, and the faster choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

PROJECTIONS = ("auto", "pca", "tsne")
SOURCE_COLOUR, TARGET_COLOUR = "#1f77b4", "#ff7f0e"


def head_inputs(model, loader, device, amp_dtype, count: int) -> torch.Tensor:
    """The features of the first `count` images of `loader` (float [n, d] on the CPU), in eval mode."""
    from trainlab.runtime import autocast

    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].flatten(1).float()))
    taken, training = 0, model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, amp_dtype):
            for images, _ in loader:
                model(images[:count - taken])
                taken += min(images.shape[0], count - taken)
                if taken >= count:
                    break
    finally:
        hook.remove()
        model.train(training)
    return torch.cat(captured).cpu() if captured else torch.zeros(0, 0)


def tsne_available() -> bool:
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        return False
    return True


def project(features: torch.Tensor, method: str = "auto", seed: int = 0) -> tuple[torch.Tensor, str]:
    """[n, d] -> ([n, 2], the method used): t-SNE for `tsne`, or for `auto` where scikit-learn is installed;
    else the top two principal components."""
    if method not in PROJECTIONS:
        raise ValueError(f"projection {method!r}: one of {', '.join(PROJECTIONS)}")
    if method == "tsne" and not tsne_available():
        raise ValueError("projection tsne needs scikit-learn: pip install 'trainlab[tsne]' (or use pca)")
    if method in ("tsne", "auto") and tsne_available() and features.shape[0] > 5:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (features.shape[0] - 1) / 3)
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            features.double().numpy())
        return torch.from_numpy(points).float(), "t-SNE"
    centred = features - features.mean(dim=0)
    _, _, basis = torch.pca_lowrank(centred, q=min(2, *centred.shape), center=False, niter=4)
    points = centred @ basis[:, :2]
    if points.shape[1] < 2:
        points = torch.cat([points, torch.zeros(points.shape[0], 2 - points.shape[1])], dim=1)
    return points, "PCA"


@dataclass
class Panel:
    """One model's features: source and target points (projected together), and what to call it."""

    title: str
    source: torch.Tensor     # [n, 2]
    target: torch.Tensor     # [m, 2]
    method: str


def panel(title: str, source: torch.Tensor, target: torch.Tensor, method: str = "auto", seed: int = 0) -> Panel:
    points, used = project(torch.cat([source, target]), method, seed)
    return Panel(title, points[:source.shape[0]], points[source.shape[0]:], used)


def features_figure(panels: list[Panel], source_name: str, target_name: str, title: Optional[str] = None):
    """A matplotlib figure: one scatter per panel, source and target coloured apart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6 * len(panels), 4.8), dpi=100)
    FigureCanvasAgg(figure)
    for i, item in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        for points, colour, label in ((item.source, SOURCE_COLOUR, f"source: {source_name}"),
                                      (item.target, TARGET_COLOUR, f"target: {target_name}")):
            axes.scatter(points[:, 0], points[:, 1], s=5, alpha=0.5, c=colour, label=label)
        axes.set_title(f"{item.title} ({item.method})", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
        if i == 0:
            axes.legend(loc="upper right", fontsize=8, markerscale=3)
    figure.suptitle(title or "features of the test images (the head's input), by domain", fontsize=11)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.86, wspace=0.05)
    return figure
