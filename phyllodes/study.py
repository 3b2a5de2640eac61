"""What every notebook does first: resolve the profile, cohort, device, folds and output folder.

A :class:`Study` carries everything a step needs: the profile (with the notebook's overrides),
the validated cohort, its folds, the device, the seed, where outputs and caches go
(:class:`phyllodes.paths.Outputs`), the encoder weights (a folder, or a file for the study's
encoder), the executor of run grids, and the in-memory caches (decoded images, view caches,
probe features), keyed by what they were computed from. Nothing is read from or written to the
process environment.

A notebook opens its study from its parameters cell in one line,
``study = open_study_from(globals())``: every parameter named like an argument of
:func:`open_study` or a profile setting (:class:`~phyllodes.profiles.Profile`) is passed on, the
notebook's own parameters are left to it.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phyllodes import paths
from phyllodes.data.cohort import Cohort, load_cohort
from phyllodes.data.images import ImageSet, cache_key, image_tensor
from phyllodes.data.splits import get_or_make_splits
from phyllodes.profiles import Profile, get_profile

PRIMARY_FEATURE_SET = "paper"
log = logging.getLogger(__name__)


@dataclass
class Study:
    """The settings, cohort and folds a notebook works on, and where its outputs go."""

    profile: Profile
    cohort: Cohort
    splits: pd.DataFrame
    splits_path: Path
    device: str
    seed: int
    outputs: paths.Outputs = field(default_factory=paths.Outputs)
    cache_dir: Path = paths.DEFAULT_CACHE
    #: a folder of encoder weights files, one per encoder name (``--weights-dir``)
    weights_dir: str | None = None
    #: a local weights file of the study's encoder (``profile.encoder``; offline use): every run
    #: of that encoder (fine-tuned, probe, multimodal) starts from it, in every notebook
    encoder_weights: str | None = None
    #: how run grids are executed: 'local' or 'ray' (and the Ray cluster's address)
    executor: str = "local"
    ray_address: str | None = None
    #: in-memory caches shared by the study's runs, keyed by what they were computed from
    memory: dict = field(default_factory=dict, repr=False, compare=False)
    _image_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.cohort.name

    @property
    def has_clinical(self) -> bool:
        """Whether the cohort (its feature set) has clinical inputs; without them the study
        runs image-only and the notebooks skip the clinical and multimodal parts."""
        return self.cohort.has_clinical

    @property
    def tables_dir(self) -> Path:
        return self.outputs.tables(self.name)

    @property
    def figures_dir(self) -> Path:
        return self.outputs.figures(self.name)

    @property
    def results_dir(self) -> Path:
        return self.outputs.results(self.name)

    @property
    def runs_dir(self) -> Path:
        return self.outputs.runs(self.name)

    def encoder_weights_for(self, encoder: str) -> str | None:
        """The weights file given for ``encoder`` (:attr:`encoder_weights`, which is the study's
        encoder's); None: the weights folder or a package's / timm's weights apply."""
        return self.encoder_weights if encoder == self.profile.encoder else None

    def with_settings(self, **overrides: Any) -> "Study":
        """The same study (cohort, folds, caches) under a profile with some settings changed."""
        return replace(self, profile=replace(self.profile, **overrides), _image_key=None)

    def with_feature_set(self, name: str) -> "Study":
        """The same study with another set of clinical inputs (same folds, images, profile)."""
        return replace(self, cohort=self.cohort.with_feature_set(name) if
                       name != self.cohort.feature_set else self.cohort)

    def with_features(self, names: list[str]) -> "Study":
        """The same study with only these clinical inputs (e.g. those two cohorts share)."""
        return replace(self, cohort=self.cohort.with_features(names))

    def with_split_seed(self, seed: int) -> "Study":
        """The same study (cohort, profile, training seed, caches) on the folds of split seed
        ``seed``, ``splits_<k>fold_seed<seed>.csv`` beside the study's (reused when it exists,
        made otherwise): folds the study does not report, to choose something on (a CAM
        layer; notebook 06's recipe)."""
        k = self.profile.folds
        path = self.tables_dir / f"splits_{k}fold_seed{seed}.csv"
        return replace(self, splits=get_or_make_splits(self.cohort, path, k, seed),
                       splits_path=path)

    def image_key(self) -> str:
        """Cache key of the cohort's images under the profile's image settings (memoised:
        it hashes every image file once per study)."""
        if self._image_key is None:
            p = self.profile
            self._image_key = cache_key(self.cohort, p.image_size, p.use_roi, p.roi_margin)
        return self._image_key

    def images(self) -> ImageSet:
        """The cohort's images decoded once (memory, disk cache, or decoding)."""
        p = self.profile
        return image_tensor(self.cohort, p.image_size, p.use_roi, p.roi_margin,
                            cache_dir=self.cache_dir, key=self.image_key(),
                            memory=self.memory)

    def describe(self) -> pd.Series:
        """A one-column summary for the notebook to show."""
        s = self.cohort.summary()
        feats = ", ".join(self.cohort.config.features) or "none (image-only study)"
        refs = ", ".join(self.cohort.config.references) or "none declared"
        return pd.Series({"profile": self.profile.name, "device": self.device,
                          "cohort": s["name"], "feature set": self.cohort.feature_set,
                          "clinical inputs": feats, "reader references": refs,
                          "subjects": s["n_subjects"],
                          "images": s["n_images"], "positive subjects": s["n_positive_subjects"],
                          "folds": self.profile.folds, "splits file": str(self.splits_path),
                          "outputs": str(self.outputs.root)})


def resolve_device(device: str = "auto") -> str:
    """'cuda' when asked for 'auto' and CUDA is available, else 'cpu' (or what was given)."""
    if device and device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the one determinism call)."""
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def own_splits(cohort: Cohort, folds: int) -> Path | None:
    """The cohort's own folds (``splits`` in cohort.yaml, e.g. its authors'), when it declares
    them with ``folds`` folds; None otherwise (the study then makes its own)."""
    if not cohort.config.splits:
        return None
    path = cohort.root / cohort.config.splits
    try:
        k = pd.read_csv(path, usecols=["fold"])["fold"].nunique()
    except (ValueError, OSError):
        return path  # load_splits reports what is wrong with it
    if k != folds:
        log.warning("cohort %s declares its own %d folds (%s) but %d are asked for: the study "
                    "makes its own", cohort.name, k, path.name, folds)
        return None
    return path


def open_study(profile: str = "quick", cohort: str | Path = "breast-lesions-usg",
               device: str = "auto", seed: int = 0, output_dir: str | Path | None = "",
               splits_file: str = "", feature_set: str | None = None,
               settings: dict | None = None, weights_dir: str | None = None,
               executor: str = "local", ray_address: str | None = None,
               cache_dir: str | Path | None = None, encoder_weights: str | None = None,
               **overrides: Any) -> Study:
    """Load the profile (with overrides), the validated cohort and its folds.

    ``output_dir`` (empty: the repository) is where tables/, figures/ and results/ go.
    ``splits_file`` (empty: ``tables/<cohort>/splits_<k>fold_seed<seed>.csv``) is reused when it
    exists and is made otherwise. ``feature_set``: the clinical inputs, a set named in
    cohort.yaml or ``all``; None: the primary set, ``paper`` (the paper's inputs) when the
    cohort names it, else ``all``. ``settings`` and ``overrides``: any profile settings
    (validated by :class:`~phyllodes.profiles.Profile`; ``None`` values are ignored), e.g.
    ``settings={"pretrained": "none", "image_size": 64}``. ``encoder_weights``: a local weights
    file of the profile's encoder (:attr:`Study.encoder_weights`).
    """
    # warnings only: a notebook's outputs stay readable (the exclusions and normalisations are
    # shown by notebook 01 and python -m phyllodes validate)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    outputs = paths.Outputs.at(output_dir)
    # a notebook parameter left at None (e.g. folds) must not undo the same setting in settings
    prof = get_profile(profile, **{**(settings or {}),
                                   **{k: v for k, v in overrides.items() if v is not None}})
    coh = load_cohort(cohort, folds=prof.folds)
    if feature_set is None:
        feature_set = PRIMARY_FEATURE_SET if PRIMARY_FEATURE_SET in coh.feature_sets else "all"
    coh = coh.with_feature_set(feature_set)
    sp = Path(splits_file) if splits_file else own_splits(coh, prof.folds) or (
        outputs.tables(coh.name) / f"splits_{prof.folds}fold_seed{seed}.csv")
    splits = get_or_make_splits(coh, sp, prof.folds, seed)
    seed_everything(seed)
    return Study(profile=prof, cohort=coh, splits=splits, splits_path=sp,
                 device=resolve_device(device), seed=seed, outputs=outputs,
                 cache_dir=Path(cache_dir).resolve() if cache_dir else paths.DEFAULT_CACHE,
                 weights_dir=str(Path(weights_dir).resolve()) if weights_dir else None,
                 encoder_weights=str(Path(encoder_weights).resolve()) if encoder_weights
                 else None, executor=executor, ray_address=ray_address)


#: the names a notebook's parameters pass to :func:`open_study`: its arguments and the profile's
#: settings (a profile's ``name`` is chosen by ``profile``)
STUDY_PARAMETERS = frozenset(
    [n for n in inspect.signature(open_study).parameters if n != "overrides"]
    + [f.name for f in fields(Profile) if f.name != "name"])
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict)


def open_study_from(parameters: Mapping[str, Any], **fixed: Any) -> Study:
    """:func:`open_study` from a notebook's parameters (``globals()`` after its parameters cell,
    papermill's injected values included): every name in :data:`STUDY_PARAMETERS` is passed on,
    the notebook's own parameters (e.g. ``scorecam_images``) are not. ``fixed``: what this
    notebook sets itself (e.g. ``feature_set="all"``), which wins over a parameter.

    A study parameter must be a plain literal: a notebook name that shadows one with a module or
    a function is an error, not a silent setting."""
    picked = {k: v for k, v in parameters.items() if k in STUDY_PARAMETERS}
    bad = sorted(k for k, v in picked.items() if k not in fixed and not isinstance(v, _PLAIN))
    if bad:
        raise TypeError(f"notebook names {bad} are study parameters (open_study's arguments and "
                        "the profile's settings) but hold a "
                        + ", ".join(type(picked[k]).__name__ for k in bad)
                        + ", not a plain value: rename them in the notebook")
    return open_study(**{**picked, **fixed})
