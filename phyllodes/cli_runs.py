"""``python -m phyllodes run`` (one run) and ``python -m phyllodes grid`` (many), from a shell.

A grid can be split over machines by giving each one a different ``--folds`` or ``--models``
and a shared ``--output``: finished runs are skipped, so reruns are cheap.
"""

from __future__ import annotations


def _common(p) -> None:
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    p.add_argument("--cohort", default="breast-lesions-usg")
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="", help="root of results/ (default: the repository)")
    p.add_argument("--splits-file", default="")
    p.add_argument("--encoder-weights", default=None, help="local weights file of the encoder")
    p.add_argument("--overwrite", action="store_true", help="recompute finished runs")


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="train one run (skipped if already finished)")
    _common(r)
    r.add_argument("--modality", required=True, choices=["clinical", "image", "multimodal"])
    r.add_argument("--model", required=True,
                   help="encoder (timm name) or clinical model: mlp, logreg, random_forest, "
                        "gradient_boosting")
    r.add_argument("--fusion", default="concat", choices=["concat", "late", "gated"])
    r.add_argument("--fold", type=int, required=True)
    r.add_argument("--seed", type=int, default=0)

    g = sub.add_parser("grid", help="train every run of a grid (finished runs skipped)")
    _common(g)
    g.add_argument("--modalities", default="clinical,image,multimodal")
    g.add_argument("--clinical-models", default="mlp")
    g.add_argument("--models", default="", help="encoders (default: the profile's encoder)")
    g.add_argument("--fusions", default="", help="default: the profile's fusion")
    g.add_argument("--folds", default="all", help="e.g. 0,1 (default all)")
    g.add_argument("--seeds", default="0")
    g.add_argument("--executor", default="local", choices=["local", "ray"])
    g.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    g.add_argument("--max-retries", type=int, default=2)


def _study(args, seed: int = 0):
    from .study import open_study
    return open_study(args.profile, args.cohort, device=args.device, seed=0,
                      output_dir=args.output, splits_file=args.splits_file)


def dispatch(args) -> int:
    from .runs import execute_run, grid_specs, run_grid
    from .training import RunSpec

    study = _study(args)
    if args.command == "run":
        spec = RunSpec(args.modality, args.model, args.fusion, args.fold, args.seed)
        d = execute_run(study, spec, overwrite=args.overwrite,
                        encoder_weights=args.encoder_weights)
        print(d)
        return 0
    if args.command == "grid":
        p = study.profile
        mods = [m for m in args.modalities.split(",") if m]
        encoders = [m for m in args.models.split(",") if m] or [p.encoder]
        models = {"clinical": args.clinical_models.split(","), "image": encoders,
                  "multimodal": encoders}
        fusions = [f for f in args.fusions.split(",") if f] or [p.fusion]
        folds = range(p.folds) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
        specs = grid_specs(mods, models, fusions, folds, seeds)
        opts = {"max_retries": args.max_retries} if args.executor == "ray" else {}
        dirs = run_grid(study, specs, overwrite=args.overwrite,
                        encoder_weights=args.encoder_weights, executor=args.executor,
                        address=args.address, **opts)
        for d in dirs:
            print(d)
        return 0
    raise SystemExit(f"unknown command {args.command}")
