"""PNG plots when matplotlib is installed; one info line (and no plots) when it is not.

Plots are a convenience, never a reason for a run to fail: every function returns the path
it wrote, or None. The numbers behind them (PCA projection, confusion matrix) are computed
in torch so they are tested without matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from components.metrics import read_metrics


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Project rows of ``x [N, D]`` onto their two principal components: ``[N, 2]`` (float32).

    Components are sign-normalised (largest-magnitude loading positive) so plots are stable.
    """
    x = x.float()
    centred = x - x.mean(dim=0, keepdim=True)
    if x.shape[0] < 2:
        return torch.zeros(x.shape[0], 2)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:2]
    signs = torch.sign(
        components.gather(1, components.abs().argmax(dim=1, keepdim=True))
    )
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
    projected = centred @ components.t()
    if projected.shape[1] < 2:  # D == 1
        projected = torch.cat(
            [projected, torch.zeros(x.shape[0], 2 - projected.shape[1])], dim=1
        )
    return projected


class Plotter:
    """Writes PNGs into ``out_dir/plots`` on the main rank; silent (after one notice) without matplotlib."""

    def __init__(
        self,
        out_dir: Path,
        *,
        enabled: bool = True,
        info: Callable[[str], None] = print,
    ):
        self.out_dir = Path(out_dir) / "plots"
        self.enabled = enabled
        self._info = info
        self._pyplot: Any = None
        self._checked = False

    def pyplot(self) -> Any:
        """``matplotlib.pyplot`` on the Agg backend, or None (noticed once) when not installed."""
        if not self._checked:
            self._checked = True
            if self.enabled:
                try:
                    import matplotlib

                    matplotlib.use("Agg")
                    import matplotlib.pyplot as plt
                except ImportError:
                    self._info(
                        "matplotlib is not installed: no PNG plots (pip install matplotlib to get them)"
                    )
                else:
                    self._pyplot = plt
        return self._pyplot

    def _save(self, figure: Any, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / name
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        self._pyplot.close(figure)
        return path

    def loss_curves(
        self, metrics_path: Path, section: str, keys: tuple[str, ...] = ("loss",)
    ) -> Path | None:
        plt = self.pyplot()
        if plt is None:
            return None
        records = [
            r for r in read_metrics(metrics_path, section) if r.get("kind") == "train"
        ]
        if not records:
            return None
        figure, axis = plt.subplots(figsize=(6, 4))
        positive = True
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                axis.plot(*zip(*points), label=key)
                positive = positive and all(value > 0 for _, value in points)
        axis.set_xlabel("optimizer step")
        axis.set_yscale(
            "log" if positive else "linear"
        )  # auxiliary terms can take the total below zero
        axis.set_title(f"{section}: training loss")
        axis.legend()
        return self._save(figure, f"{section.replace('/', '_')}_loss.png")

    def reconstruction(
        self,
        masked_input: torch.Tensor,
        reconstruction: torch.Tensor,
        target: torch.Tensor,
        name: str,
    ) -> Path | None:
        """Masked input / reconstruction / target of one example, each ``[T, F]``, side by side."""
        plt = self.pyplot()
        if plt is None:
            return None
        figure, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
        for axis, image, title in zip(
            axes,
            (masked_input, reconstruction, target),
            ("masked input", "reconstruction", "target"),
        ):
            # Time runs left to right, frequency bottom to top, as spectrograms are read.
            axis.imshow(
                image.detach().float().cpu().t().numpy(),
                origin="lower",
                aspect="auto",
                cmap="magma",
            )
            axis.set_title(title)
            axis.set_xlabel("time frame")
        axes[0].set_ylabel("frequency bin")
        return self._save(figure, name)

    def embedding_projection(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        name: str,
    ) -> Path | None:
        plt = self.pyplot()
        if plt is None or embeddings.shape[0] < 2:
            return None
        points = pca_2d(embeddings).numpy()
        figure, axis = plt.subplots(figsize=(6, 6))
        colours = plt.get_cmap("tab20")
        label_list = labels.tolist()
        for index in sorted(set(label_list)):
            chosen = [i for i, label in enumerate(label_list) if label == index]
            legend = class_names[index] if index < len(class_names) else str(index)
            axis.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=8,
                color=colours(index % 20),
                label=legend,
            )
        axis.set_title("embeddings (PCA)")
        if len(set(label_list)) <= 20:
            axis.legend(fontsize=6, markerscale=2)
        return self._save(figure, name)

    def confusion(
        self, matrix: torch.Tensor, class_names: list[str], name: str
    ) -> Path | None:
        plt = self.pyplot()
        if plt is None:
            return None
        size = max(4.0, 0.25 * len(class_names))
        figure, axis = plt.subplots(figsize=(size, size))
        axis.imshow(matrix.float().numpy(), cmap="Blues")
        ticks = list(range(len(class_names)))
        axis.set_xticks(ticks, class_names, rotation=90, fontsize=6)
        axis.set_yticks(ticks, class_names, fontsize=6)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        return self._save(figure, name)
