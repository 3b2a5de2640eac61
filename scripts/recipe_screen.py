"""Screen recipe changes on selection folds, never on the study's seed-0 folds.

How the second selection round of the image recipe was measured (README "The image recipe, and
how it was chosen"). Each variant (a JSON object of Profile overrides) is trained on the folds
of every split seed given (default 1 and 2) with every run seed given (default 0 and 1). The
script prints each run's pooled subject AUC and their mean. Runs go to their own output folder
and are reused when run again. Example (about 2 minutes per variant on 2 CPU cores):

    python scripts/recipe_screen.py image '{"recipe": {}, "margin": {"roi_margin": 0.05}}'
    python scripts/recipe_screen.py multimodal '{"recipe": {}}' --splits 3

Point estimates only. To compare two variants with CIs and DeLong tests, add the winner to
``phyllodes.profiles.RECIPE_ABLATION`` and run notebook 06.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score

    from phyllodes.evaluate.comparisons import pooled_subject_test
    from phyllodes.study import open_study
    from phyllodes.train.grid import grid_specs, run_grid
    from phyllodes.train.runs import load_predictions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modality", choices=("image", "multimodal"))
    ap.add_argument("variants", help='JSON: {"name": {profile overrides}, ...}')
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--cohort", default="breast-lesions-usg")
    ap.add_argument("--splits", default="1,2", help="split seeds (never 0: the study's folds)")
    ap.add_argument("--run-seeds", default="0,1")
    ap.add_argument("--output", default="results/recipe_screen")
    args = ap.parse_args(argv)
    splits = [int(s) for s in args.splits.split(",")]
    if 0 in splits:
        ap.error("split seed 0 holds the study's reported folds: screen on other seeds")
    run_seeds = [int(s) for s in args.run_seeds.split(",")]
    for name, overrides in json.loads(args.variants).items():
        aucs = {}
        for split_seed in splits:
            st = open_study(args.profile, args.cohort, device="cpu", seed=split_seed,
                            output_dir=args.output).with_settings(**overrides)
            p = st.profile
            specs = grid_specs([args.modality], {args.modality: [p.encoder]}, [p.fusion],
                               range(p.folds), run_seeds)
            preds = load_predictions(run_grid(st, specs))
            s = pooled_subject_test(preds.assign(model_label=preds["seed"].astype(str)),
                                    "model_label")
            w = s.pivot_table(index="subject_id", columns="model_label", values="prob")
            y = s.groupby("subject_id")["y"].first().loc[w.index]
            aucs[split_seed] = [roc_auc_score(y, w[c]) for c in w.columns]
        every = [a for v in aucs.values() for a in v]
        print(f"{args.modality} {name}: mean {np.mean(every):.4f}  " + "  ".join(
            f"split {k}: " + ", ".join(f"{a:.3f}" for a in v) for k, v in aucs.items()),
            flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
