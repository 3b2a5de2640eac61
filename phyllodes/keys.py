"""Model identity: the stable key of a model in every table and record, and its display label.

A model is identified by its key (``modality/model`` or ``multimodal/model/fusion``), built
from a run's spec, never by searching display labels: an image model trained from random
initialisation has its own key (``...@random-init``), and a variant of a recipe (an ablation, a
seed shown apart) is ``<key>@<variant>`` (:func:`variant_key`). Labels (``"multimodal ·
efficientnet_lite0 · late"``) are for people only; tables name their rows by label, and
:func:`phyllodes.evaluate.comparisons.check_identity` refuses predictions whose labels and keys
are not one to one, so a row is always one model.
"""

from __future__ import annotations

PROBE_PREFIX = "probe_"
#: the scikit-learn clinical models
CLASSICAL = ("logreg", "random_forest", "gradient_boosting")


def is_probe(model: str) -> bool:
    """Whether ``model`` names the frozen-encoder linear probe of an encoder."""
    return model.startswith(PROBE_PREFIX)


def probe_name(encoder: str) -> str:
    """The model name of the linear probe of ``encoder`` (e.g. ``probe_efficientnet_lite0``)."""
    return PROBE_PREFIX + encoder


def encoder_of(model: str) -> str:
    """The image encoder of an image model or of its probe."""
    return model[len(PROBE_PREFIX):] if is_probe(model) else model


RANDOM_INIT = "random-init"


def model_key(modality: str, model: str, fusion: str | None = None,
              pretrained: bool = True) -> str:
    """The stable key of a model: ``modality/model``, plus ``/fusion`` for a multimodal one,
    plus ``@random-init`` when its image branch did not start from pretrained weights."""
    key = f"{modality}/{model}/{fusion}" if modality == "multimodal" else f"{modality}/{model}"
    return variant_key(key, RANDOM_INIT) if modality != "clinical" and not pretrained else key


def variant_key(key: str, variant: str) -> str:
    """The key of a variant of the model ``key`` (an ablated recipe, one seed of several):
    ``key@variant``."""
    if not variant or "@" in variant:
        raise ValueError(f"a variant name must be non-empty and without '@': {variant!r}")
    return f"{key}@{variant}"


def model_label(modality: str, model: str, fusion: str | None = None,
                pretrained: bool = True) -> str:
    """The display label of a model, e.g. ``multimodal · efficientnet_lite0 · late`` or
    ``image · efficientnet_lite0 linear probe``; `` (random init)`` when an image model was not
    started from pretrained weights."""
    if modality == "image" and is_probe(model):
        label = f"image · {encoder_of(model)} linear probe"
    else:
        label = " · ".join([modality, model] + ([fusion] if modality == "multimodal" else []))
    if modality != "clinical" and not pretrained:
        label += " (random init)"
    return label
