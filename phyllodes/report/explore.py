"""Explore one test subject: its images with ROI crop, lesion mask and CAM, its clinical values
and each model's predicted risk (notebook 05).

:func:`explorer` is an ipywidgets picker for a person in JupyterLab; in a run of the notebooks by
``./run_all.sh`` (no one to click) :func:`interactive` is False and the notebook shows
:func:`subject_panel` of one example subject instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phyllodes import progress
from phyllodes.data.images import ImageSet
from phyllodes.evaluate.comparisons import pooled_subject_test
from phyllodes.explain.results import Explanation
from phyllodes.report import style


def interactive() -> bool:
    """Whether a person is driving the notebook (not a batch run by the runner)."""
    return not progress.enabled()


def subject_risks(preds: pd.DataFrame) -> pd.DataFrame:
    """Per test subject (rows) and model (columns): the out-of-fold predicted risk."""
    s = pooled_subject_test(preds)
    return s.pivot_table(index="subject_id", columns="model_label", values="prob")


def example_subject(result: Explanation, seed: int = 0) -> str:
    """A subject to show when no one can pick: a correctly classified positive if any."""
    pi = result.per_image
    pick = pi[(pi["y"] == 1) & pi["correct"]]
    pick = pick if len(pick) else pi
    return str(pick.sample(1, random_state=seed)["subject_id"].iloc[0])


def subject_panel(study, result: Explanation, images: ImageSet, risks: pd.DataFrame,
                  subject_id: str):
    """A figure of one test subject: each image as the model sees it (ROI crop) with its
    Grad-CAM++ map and lesion outline, then its clinical values and every model's risk."""
    cohort = study.cohort
    rows = np.flatnonzero(cohort.images["subject_id"].to_numpy() == subject_id)
    cam_pos = {int(r): i for i, r in enumerate(result.cam_rows)}
    rows = [r for r in rows if r in cam_pos][:4]
    n = max(1, len(rows))
    fig, axes = style.figure(style.DOUBLE, 2.6, 1, n + 1, squeeze=False,
                             gridspec_kw={"width_ratios": [1] * n + [1.3]})
    for ax, r in zip(axes[0, :n], rows):
        ax.imshow(images.images[r, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        ax.imshow(result.cams_gradcampp[cam_pos[r]], cmap="inferno", alpha=0.4, vmin=0,
                  vmax=1)
        if images.masks is not None and images.masks[r, 0].any():
            ax.contour(images.masks[r, 0].numpy() > 0, levels=[0.5], colors=style.PALETTE[2],
                       linewidths=0.8)
        ax.set_title(str(cohort.images["image_path"].iloc[r]).rsplit("/", 1)[-1], fontsize=6.5)
        ax.axis("off")
    info = axes[0, n]
    info.axis("off")
    label = cohort.images["label"].iloc[rows[0]] if rows else "?"
    lines = [f"subject {subject_id} · {label}", ""]
    for f in cohort.config.features:
        v = cohort.images[f].iloc[rows[0]] if rows else None
        lines.append(f"{f}: {'missing' if v is None or v != v else v}")
    lines.append("")
    if subject_id in risks.index:
        for model, p in risks.loc[subject_id].dropna().items():
            lines.append(f"{model}: risk {p:.2f}")
    info.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=6.5, family="monospace")
    fig.tight_layout()
    return fig


def explorer(study, result: Explanation, images: ImageSet, risks: pd.DataFrame):
    """A dropdown of the test subjects; picking one redraws :func:`subject_panel`."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    subjects = sorted(result.per_image["subject_id"].astype(str).unique())
    pick = widgets.Dropdown(options=subjects, value=example_subject(result),
                            description="subject")
    out = widgets.Output()

    def draw(*_):
        with out:
            out.clear_output(wait=True)
            fig = subject_panel(study, result, images, risks, pick.value)
            display(fig)
            plt.close(fig)

    pick.observe(draw, names="value")
    draw()
    return widgets.VBox([pick, out])
