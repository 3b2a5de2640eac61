"""What one run is (:class:`RunSpec`) and what training it returns (:class:`RunOutput`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from phyllodes.keys import CLASSICAL, encoder_of, is_probe, model_label

#: the ``fold`` of a final model: trained on every subject of the cohort (no test fold; its
#: inner-validation subjects still drive the LP initialisation, early stopping and the
#: thresholds and recalibration chosen later), to be applied to subjects it never saw
FINAL_FOLD = -1


@dataclass(frozen=True)
class RunSpec:
    """What one run trains: ``model`` is the encoder name (image/multimodal) or the clinical
    model (``mlp`` or one of :data:`CLASSICAL`); ``fold`` an outer fold, or
    :data:`FINAL_FOLD` for the final model on all subjects."""

    modality: str
    model: str
    fusion: str = "concat"
    fold: int = 0
    seed: int = 0

    @property
    def is_final(self) -> bool:
        """The final model: trained on all subjects, no test fold (:data:`FINAL_FOLD`)."""
        return self.fold == FINAL_FOLD

    @property
    def fold_name(self) -> str:
        """'f3' for outer fold 3, 'fall' for the final model (run ids, tables)."""
        return "fall" if self.is_final else f"f{self.fold}"

    @property
    def uses_images(self) -> bool:
        """Whether the run's model takes the image (image-only and multimodal runs)."""
        return self.modality != "clinical"

    @property
    def is_classical(self) -> bool:
        """A scikit-learn model on the clinical features (no network)."""
        return self.modality == "clinical" and self.model in CLASSICAL

    @property
    def is_probe(self) -> bool:
        """The frozen-encoder linear probe of an image encoder (phyllodes.train.probe)."""
        return self.modality == "image" and is_probe(self.model)

    @property
    def is_network(self) -> bool:
        """A network trained by gradient descent (not a scikit-learn model)."""
        return not (self.is_classical or self.is_probe)

    @property
    def encoder(self) -> str | None:
        """The timm encoder of an image or multimodal run (a probe's too)."""
        return encoder_of(self.model) if self.uses_images else None

    @property
    def scopes(self) -> frozenset[str]:
        """Which Profile settings apply to this run (their ``scope``; see profiles.py)."""
        s = {"all"}
        if self.is_network:
            s.add("neural")
        if self.uses_images:
            s.add("images")
            s.add("probe" if self.is_probe else "image_training")
        if self.modality == "clinical" and self.model == "mlp":
            s.add("clinical_mlp")
        return frozenset(s)

    @property
    def label(self) -> str:
        """Display name of the model, e.g. 'multimodal · efficientnet_lite0 · concat'."""
        return model_label(self.modality, self.model, self.fusion)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunOutput:
    predictions: pd.DataFrame
    history: list[dict] = field(default_factory=list)
    state: dict | None = None
    best_epoch: int = -1
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def run_seed(spec: RunSpec) -> int:
    """The seed of a run's training draws (its seed and fold; the final model's is 999)."""
    return int(spec.seed) * 1000 + (999 if spec.is_final else int(spec.fold))
