"""``python -m phyllodes export`` and ``python -m phyllodes predict``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def add_parsers(sub) -> None:
    ex = sub.add_parser("export", help="a finished run -> a self-contained model folder "
                        "(safetensors + JSON, calibration, operating points, model card)")
    ex.add_argument("run", help="a finished run folder, e.g. results/<cohort>/runs/<run_id> "
                    "(notebook 07's final models: image-…-fall-…)")
    ex.add_argument("--out", required=True, help="the model folder to write")
    ex.add_argument("--cohort", default=None, help="the training cohort (default: the one the "
                    "run's config names, under data/)")
    ex.add_argument("--output", default=None, help="root of the study's tables/ (for the "
                    "model card; default: the repository)")
    ex.add_argument("--overwrite", action="store_true")

    pr = sub.add_parser("predict", help="predict one case or a folder of patients with an "
                        "exported model (calibrated risk, decision, Grad-CAM++ overlay)")
    pr.add_argument("--model", required=True, help="an exported model folder")
    what = pr.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="one case: its ultrasound image")
    what.add_argument("--cohort", help="a folder of patients (cohort.csv, and cohort.yaml or "
                      "the model's declaration; no label needed)")
    pr.add_argument("--roi", default=None, help="the lesion box of --image: x0,y0,x1,y1 pixels")
    pr.add_argument("--clinical", nargs="*", default=[], metavar="NAME=VALUE",
                    help="the case's clinical inputs, e.g. age=54 tumor_size_mm=31 (a missing "
                         "one is imputed as in training, and said so)")
    pr.add_argument("--out", default=None, help="folder for predictions.csv, "
                    "predictions_subjects.csv and the overlay PNG(s) (default: for --image, the "
                    "current folder's overlay only; for --cohort, <cohort>/predictions)")
    pr.add_argument("--overlays", type=int, default=1, help="--cohort: overlays of the first "
                    "N images (0: none)")
    pr.add_argument("--device", default="cpu")


def dispatch(args: argparse.Namespace) -> int:
    from phyllodes.data.cohort import CohortError
    from phyllodes.handover.export import ExportError
    from phyllodes.handover.predict import ModelFolderError, PredictError
    from phyllodes.train.runs import UnsafeRunFolderError
    try:
        return export(args) if args.command == "export" else predict(args)
    except (ExportError, ModelFolderError, PredictError, CohortError, UnsafeRunFolderError,
            FileExistsError, FileNotFoundError) as e:
        print(f"{args.command}: {e}", file=sys.stderr)
        return 1


def export(args: argparse.Namespace) -> int:
    import json

    from phyllodes import paths
    from phyllodes.data.cohort import load_cohort
    from phyllodes.handover.export import export_model
    from phyllodes.report.model_card import model_card
    run = Path(args.run)
    cohort = load_cohort(args.cohort or json.loads((run / "config.json").read_text())["cohort"])
    tables = paths.Outputs.at(args.output or "").tables(cohort.name)
    card = model_card(tables, model_json=None) if tables.is_dir() else None
    out = export_model(run, args.out, cohort, card=card, overwrite=args.overwrite)
    print(f"exported {run.name} to {out}" + ("" if card else " (no model card: the study's "
                                                            f"tables are not in {tables})"))
    return 0


def predict(args: argparse.Namespace) -> int:
    from phyllodes.handover.predict import case_folder, load_model, load_patients, parse_clinical
    model = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="phyllodes-case-") as tmp:
        if args.image:
            clinical = parse_clinical(args.clinical, model)
            folder = case_folder(model, args.image, args.roi, clinical, Path(tmp) / "case")
        else:
            if args.clinical or args.roi:
                raise SystemExit("predict: --clinical and --roi go with --image; a cohort's "
                                 "values are in its cohort.csv")
            folder = Path(args.cohort)
        preds = model.predict(load_patients(model, folder), device=args.device,
                              cache_dir=Path(tmp) / "cache")
        for note in preds.notes:
            print(f"note: {note}")
        if args.image:
            r = preds.subjects.iloc[0]
            print(f"probability {r['prob']:.4f} · calibrated risk {r['risk']:.3f} · "
                  f"{r['decision']} (threshold {model.threshold:.4f}, "
                  f"{model.doc['primary']} on inner validation)")
            out = Path(args.out or ".")
            png = out / f"{Path(args.image).stem}_gradcampp.png"
        else:
            out = Path(args.out) if args.out else folder / "predictions"
            out.mkdir(parents=True, exist_ok=True)
            preds.images.to_csv(out / "predictions.csv", index=False)
            preds.subjects.to_csv(out / "predictions_subjects.csv", index=False)
            n_pos = int((preds.subjects["prob"] >= model.threshold).sum())
            print(f"{len(preds.subjects)} subject(s), {len(preds.images)} image(s): {n_pos} "
                  f"above the threshold; wrote {out / 'predictions.csv'} and "
                  f"{out / 'predictions_subjects.csv'}")
            png = None
        if model.network is not None and model.doc["inputs"]["image"]:
            n = 1 if args.image else min(args.overlays, len(preds.images))
            for i in range(n):
                p = png or out / f"overlay_{i:03d}_gradcampp.png"
                model.cam_overlay(preds, i, p)
                print(f"wrote {p}")
    return 0
