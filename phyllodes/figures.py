"""Figures of the study and the one writer of every figure (PNG + PDF)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle
from PIL import Image

from . import paths
from .cohort import ROI_COLUMNS, Cohort


def save_figure(fig: plt.Figure, cohort: str, stem: str, dpi: int = 150) -> dict[str, Path]:
    """Write ``figures/<cohort>/<stem>.{png,pdf}``; return the paths."""
    d = paths.figures_dir(cohort)
    out = {ext: d / f"{stem}.{ext}" for ext in ("png", "pdf")}
    # fixed metadata so that re-running writes byte-stable files where the backend allows
    fig.savefig(out["png"], dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(out["pdf"], bbox_inches="tight", metadata={"CreationDate": None})
    return out


def plot_examples(cohort: Cohort, n_per_class: int = 4, seed: int = 0) -> plt.Figure:
    """A grid of example images per class with their ROI box (and lesion outline if masked)."""
    rng = np.random.default_rng(seed)
    imgs = cohort.images
    classes = [(0, "/".join(cohort.config.negative_labels)),
               (1, "/".join(cohort.config.positive_labels))]
    fig, axes = plt.subplots(2, n_per_class, figsize=(2.4 * n_per_class, 5.2), squeeze=False)
    for r, (y, name) in enumerate(classes):
        rows = imgs[imgs["y"] == y]
        pick = rows.iloc[rng.choice(len(rows), size=min(n_per_class, len(rows)),
                                    replace=False)] if len(rows) else rows
        for c in range(n_per_class):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(pick):
                continue
            row = pick.iloc[c]
            with Image.open(row["image_abspath"]) as im:
                ax.imshow(np.asarray(im.convert("L")), cmap="gray")
            if cohort.has_masks and row.get("mask_abspath"):
                with Image.open(row["mask_abspath"]) as m:
                    ax.contour(np.asarray(m.convert("L")) > 127, levels=[0.5],
                               colors="yellow", linewidths=0.6)
            if cohort.has_roi:
                x0, y0, x1, y1 = (row[k] for k in ROI_COLUMNS)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       edgecolor="tab:red", linewidth=1))
            ax.set_title(f"{name}\n{row['subject_id']}", fontsize=8)
    fig.suptitle(f"{cohort.name}: example images (red: ROI box, yellow: lesion mask)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_balance_and_folds(cohort: Cohort, splits: pd.DataFrame) -> plt.Figure:
    """Class balance (subjects per label) and subjects per class in each fold."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    counts = cohort.subjects["label"].value_counts()
    sns.barplot(x=counts.index, y=counts.values, ax=a, color="tab:blue")
    a.set(title="Subjects per label", xlabel="", ylabel="subjects")
    for i, v in enumerate(counts.values):
        a.text(i, v, str(v), ha="center", va="bottom", fontsize=8)
    comp = splits.assign(cls=np.where(splits["y"] == 1, "positive", "negative"))
    sns.countplot(data=comp, x="fold", hue="cls", ax=b, palette=["tab:green", "tab:red"])
    b.set(title="Subjects per fold and class", ylabel="subjects")
    b.legend(title="")
    fig.tight_layout()
    return fig
