"""Predict new patients with an exported model folder (:mod:`phyllodes.handover.export`).

``python -m phyllodes predict --model DIR`` with ``--image FILE [--roi x0,y0,x1,y1]
[--clinical age=54 tumor_size_mm=31 ...]`` for one case, or ``--cohort FOLDER`` for a folder of
patients read through the data contract (its own cohort.yaml, or the model's input declaration
when it has none; no label needed). Per image and per subject (the mean over its images, as the
study does) it gives the model's probability (``prob``, exactly what the study's predictions
hold for the same image), the calibrated ``risk`` (the model's calibration map, fit on its
inner-validation subjects) and the decision at the model's primary operating point; a
Grad-CAM++ overlay of a case is written as a PNG.

What is refused, with the reason: a model folder whose files differ from its ``MANIFEST.json``
or that holds a pickle (nothing from the folder is executed: JSON and safetensors only); a
cohort the contract refuses (the file, row and column); a clinical input the model does not
take; a model input the cohort does not declare (or declares with another type); a category
the model never saw in training. A missing clinical value is imputed as in training and the
output says so (``imputed`` column, and a note per input).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import special

from phyllodes.data.clinical import ClinicalEncoder
from phyllodes.data.cohort import Cohort, load_cohort
from phyllodes.data.contract import ROI_COLUMNS
from phyllodes.handover.folder import DECLARATION, ModelFolderError, verify_folder
from phyllodes.profiles import get_profile
from phyllodes.study import Study, resolve_device
from phyllodes.train.apply import network_probs, target_study
from phyllodes.train.runs import linear_model_from_data, run_key
from phyllodes.train.spec import RunSpec

log = logging.getLogger(__name__)


class PredictError(ValueError):
    """The patients cannot be predicted by this model as they are."""


@dataclass
class Predictions:
    """What :meth:`ExportedModel.predict` returns."""

    images: pd.DataFrame
    subjects: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    #: the patients' study under the model's image settings (for the Grad-CAM++ overlay)
    study: Study | None = None
    _tmp: object = field(default=None, repr=False)


@dataclass
class ExportedModel:
    """A model folder loaded as data: the network (or logistic regression), its clinical
    encoder, calibration map and operating points."""

    root: Path
    doc: dict
    network: object | None
    linear: object | None
    encoder: ClinicalEncoder | None

    @property
    def threshold(self) -> float:
        ops = self.doc["operating_points"]
        return float(ops[self.doc["primary"]]["threshold"])

    @property
    def positive(self) -> str:
        return "/".join(self.doc["training_data"]["positive_labels"])

    def risk(self, prob) -> np.ndarray:
        """The calibrated risk of probabilities (the model's calibration map)."""
        p = np.clip(np.asarray(prob, dtype=float), 1e-6, 1 - 1e-6)
        c = self.doc["calibration"]
        if c["method"] != "platt":
            return p
        return special.expit(c["intercept"] + c["slope"] * special.logit(p))

    def _check_inputs(self, cohort: Cohort, unknown: str = "refuse") -> list[str]:
        """Model inputs the cohort must declare (same type), categories it must know; the
        notes on what will be imputed. ``unknown='as_none'``: a category the training cohort
        never had is encoded as none of the known ones (what the study's one-hot encoding does)
        and noted, instead of refused (external validation of a cohort that records more
        categories)."""
        if self.encoder is None:
            return []
        cfg, notes = cohort.config, []
        declared = {"numeric": set(cfg.numeric_features) | set(cfg.image_numeric_features),
                    "categorical": set(cfg.categorical_features)
                    | set(cfg.image_categorical_features)}
        imgs = cohort.images
        for level, (num, cat) in self.encoder.levels.items():
            for kind, cols in (("numeric", num), ("categorical", cat)):
                for c in cols:
                    if c not in declared[kind]:
                        raise PredictError(
                            f"the model takes the {kind} input '{c}', which cohort "
                            f"'{cohort.name}' does not declare as {kind} ({cohort.root}): add "
                            f"the column and declare it (the model's declaration is "
                            f"{self.root / DECLARATION})")
        data = self.encoder.to_json()["preprocessors"]
        for level, (num, cat) in self.encoder.levels.items():
            if level not in data:  # no input at this level
                continue
            pre = data[level]
            if cat:
                known = dict(zip(pre["categorical"]["features"],
                                 pre["categorical"]["categories"][:len(cat)]))
                for c in cat:
                    cohort_levels = self.doc["inputs"]["categories"].get(c, [])
                    seen = imgs[c].notna()
                    bad = imgs[seen & ~imgs[c].isin([*known[c], *cohort_levels])]
                    if unknown == "as_none" and len(bad):
                        notes.append(f"{c}: {len(bad)} image row(s) with a category the "
                                     f"training cohort never had "
                                     f"({', '.join(sorted(map(str, set(bad[c]))))}): encoded as "
                                     "none of the known categories")
                        bad = bad.iloc[:0]
                    for _, row in bad.head(1).iterrows():
                        raise PredictError(
                            f"{cohort.root / 'cohort.csv'} line {row['csv_line']}, column "
                            f"'{c}': category {row[c]!r} was never seen in training; the model "
                            f"knows {sorted(map(str, cohort_levels or known[c]))}: correct it, "
                            "or leave it empty (it is then imputed as in training)")
                    rare = imgs[seen & ~imgs[c].isin(known[c]) & imgs[c].isin(cohort_levels)]
                    if len(rare):
                        notes.append(f"{c}: {len(rare)} image row(s) with a category of the "
                                     f"training cohort that this model's training subjects "
                                     f"lacked ({', '.join(sorted(map(str, set(rare[c]))))}): "
                                     "encoded as no category, as the study encoded them")
            fills = {}
            if num:
                fills.update(zip(pre["numeric"]["features"], pre["numeric"]["medians"]))
            if cat:
                fills.update(zip(pre["categorical"]["features"],
                                 pre["categorical"]["fill_values"]))
            for c in (*num, *cat):
                n = int(imgs[c].isna().sum())
                if n:
                    how = "the training median" if c in num else "the most frequent category"
                    notes.append(f"{c}: missing on {n} of {len(imgs)} image row(s), imputed as "
                                 f"in training ({how}, {fills[c]!r})")
        return notes

    def predict(self, cohort: Cohort, device: str = "cpu", cache_dir: Path | None = None,
                unknown_categories: str = "refuse") -> Predictions:
        """Predictions of every image and subject of ``cohort`` (see the module docstring;
        ``unknown_categories``: 'refuse' or 'as_none', see :meth:`_check_inputs`)."""
        if unknown_categories not in ("refuse", "as_none"):
            raise ValueError("unknown_categories must be 'refuse' or 'as_none'")
        notes = self._check_inputs(cohort, unknown_categories)
        settings = self.doc["settings"]
        tmp = None if cache_dir else tempfile.TemporaryDirectory(prefix="phyllodes-predict-")
        study = Study(profile=get_profile("quick"), cohort=cohort, splits=pd.DataFrame(),
                      splits_path=Path(), device=resolve_device(device), seed=0,
                      cache_dir=Path(cache_dir or tmp.name))
        target = target_study(study, settings)
        record = {**self.doc, "clinical_encoder": None}
        if self.network is not None:
            prob = network_probs(self.network, self.encoder, record, target, self.root.name)
        else:
            x = self.encoder.transform_images(cohort.images)
            prob = self.linear.predict_proba(x)[:, 1]
        imgs = cohort.images
        imputed = (imgs[self.doc["inputs"]["clinical"]].isna()
                   .apply(lambda r: ",".join(r.index[r]), axis=1)
                   if self.doc["inputs"]["clinical"] else pd.Series("", index=imgs.index))
        images = pd.DataFrame({"subject_id": imgs["subject_id"].to_numpy(),
                               "image_path": imgs["image_path"].to_numpy(),
                               "prob": np.asarray(prob, dtype=float),
                               "imputed": imputed.to_numpy()})
        subjects = (images.groupby("subject_id", sort=False)
                    .agg(prob=("prob", "mean"), n_images=("prob", "size"),
                         imputed=("imputed", lambda s: ",".join(sorted(
                             {c for v in s for c in v.split(",") if c}))))
                    .reset_index())
        for t in (images, subjects):
            t["risk"] = self.risk(t["prob"])
            t["decision"] = np.where(t["prob"] >= self.threshold, f"{self.positive} (above "
                                     f"the {self.doc['primary']} threshold)", "below threshold")
        if imgs["label"].astype(str).str.len().gt(0).any():  # labelled patients: carried along
            images["label"] = imgs["label"].to_numpy()
            subjects = subjects.merge(cohort.subjects[["subject_id", "label"]], on="subject_id")
        return Predictions(images, subjects, notes, target, tmp)

    def cam_overlay(self, preds: Predictions, index: int, path: Path) -> Path:
        """A Grad-CAM++ overlay PNG of image ``index`` (the network's image branch)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch

        from phyllodes.explain.maps import compute_cams
        if self.network is None or not self.doc["inputs"]["image"]:
            raise PredictError("this model takes no image: there is no map to draw")
        study = preds.study
        x = study.images().images[index:index + 1].float() / 255.0
        clin = (torch.as_tensor(self.encoder.transform_images(
            study.cohort.images.iloc[index:index + 1])) if self.encoder is not None
            and self.encoder.width else None)
        cam = compute_cams(self.network.cpu(), x, clin, method="gradcam++")[0]
        row = preds.images.iloc[index]
        fig, ax = plt.subplots(figsize=(4, 4.4))
        ax.imshow(x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.imshow(cam, cmap="inferno", alpha=0.45, vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"{row['subject_id']}: risk {row['risk']:.2f}\nGrad-CAM++ (where the "
                     "image branch looked)", fontsize=9)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path


def load_model(root: Path | str) -> ExportedModel:
    """An exported model folder, verified (:func:`verify_folder`) and loaded as data."""
    from safetensors.torch import load_file

    from phyllodes.train.trainer import build_model
    root = Path(root)
    doc = verify_folder(root)
    enc = doc.get("clinical_encoder")
    encoder = ClinicalEncoder.from_json({**enc, "fitted_subjects": []}) if enc else None
    network = linear = None
    if doc["model_kind"] == "network":
        spec = RunSpec(**doc["spec"])
        network = build_model(spec, {**doc["settings"], "freeze_fraction": 0.0},
                              int(doc["n_clinical"]), pretrained=False)
        try:
            network.load_state_dict(load_file(root / doc["weights"], device="cpu"))
        except Exception as e:  # a damaged or foreign weights file: refused, never guessed
            raise ModelFolderError(f"{root / doc['weights']}: cannot be loaded into the "
                                   f"{spec.label} network ({e})") from None
        network.eval()
    else:
        linear = linear_model_from_data(doc["model"])
    return ExportedModel(root, doc, network, linear, encoder)


def load_patients(model: ExportedModel, cohort_dir: Path | str) -> Cohort:
    """A folder of patients through the data contract, unlabelled allowed; read with the
    model's input declaration when the folder has no cohort.yaml."""
    cohort_dir = Path(cohort_dir)
    own = (cohort_dir / "cohort.yaml").is_file()
    return load_cohort(cohort_dir, folds=None, labelled=False,
                       yaml_file=None if own else model.root / DECLARATION)


def parse_clinical(items: list[str], model: ExportedModel) -> dict[str, str]:
    """``NAME=VALUE`` pairs; a name the model does not take is an error."""
    values: dict[str, str] = {}
    takes = model.doc["inputs"]["clinical"]
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise PredictError(f"--clinical {item!r}: write NAME=VALUE, e.g. age=54")
        if name not in takes:
            raise PredictError(f"--clinical {name}: the model takes no input '{name}'; it takes "
                               f"{', '.join(takes) or 'no clinical input'}")
        values[name] = value
    return values


def case_folder(model: ExportedModel, image: Path | str, roi: str | None,
                clinical: dict[str, str], folder: Path) -> Path:
    """One case as a cohort folder (the image copied in, one CSV row, the model's declaration),
    so that it goes through the same contract as a cohort."""
    image = Path(image)
    if not image.is_file():
        raise PredictError(f"--image {image}: no such file")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, folder / image.name)
    row = {"subject_id": "case", "image_path": image.name, "label": ""}
    if roi:
        parts = roi.split(",")
        if len(parts) != 4:
            raise PredictError(f"--roi {roi!r}: give x0,y0,x1,y1 in pixels")
        row.update(dict(zip(ROI_COLUMNS, parts)))
    for c in model.doc["inputs"]["clinical"]:
        row[c] = clinical.get(c, "")
    pd.DataFrame([row]).to_csv(folder / "cohort.csv", index=False)
    declaration = yaml.safe_load((model.root / DECLARATION).read_text())
    (folder / "cohort.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))
    return folder


def study_predictions(model: ExportedModel, study: Study) -> pd.DataFrame:
    """The exported model's predictions of every image of ``study``'s cohort in the format of
    :func:`phyllodes.train.apply.apply_run` (notebook 07 evaluates the exported model this
    way: what is handed over is what was validated). Labels are only carried along. A
    category the training cohort never had is encoded as none (as the study's own encoding
    does) and logged, not refused: an external cohort may record more categories."""
    preds = model.predict(study.cohort, device=study.device, cache_dir=study.cache_dir,
                          unknown_categories="as_none")
    for note in preds.notes:
        log.warning("%s on %s: %s", model.root.name, study.name, note)
    imgs, spec = study.cohort.images, model.doc["spec"]
    return pd.DataFrame({"subject_id": imgs["subject_id"].to_numpy(),
                         "image_path": imgs["image_path"].to_numpy(), "fold": spec["fold"],
                         "split": "external", "y": imgs["y"].to_numpy(),
                         "prob": preds.images["prob"].to_numpy(), "run_id": model.doc["run_id"],
                         "modality": spec["modality"], "model": spec["model"],
                         "fusion": spec["fusion"],
                         "model_key": run_key(RunSpec(**spec), model.doc["settings"]),
                         "model_label": model.doc["label"]})
