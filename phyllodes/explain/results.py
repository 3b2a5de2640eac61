"""What the explanations hand to the figures and tables: plain arrays and frames, no models.

The report layer draws these; it never imports training or the networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CamPanel:
    """Images (N, H, W) in [0, 1] with their maps (N, H, W), titles, lesion masks and the
    peri-lesional bands around them (each None without masks)."""

    images: np.ndarray
    cams: np.ndarray
    titles: list[str]
    masks: np.ndarray | None = None
    bands: np.ndarray | None = None
