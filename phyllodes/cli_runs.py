"""``python -m phyllodes run`` (one run) and ``python -m phyllodes grid`` (many), from a shell.

A grid can be split over machines by giving each one a different ``--folds`` or ``--models``
and a shared ``--output``: finished runs are skipped, so reruns are cheap. ``grid`` ends with a
summary table: each model's pooled subject AUC with its 95% CI and the fold mean ± SD.
"""

from __future__ import annotations

from phyllodes.keys import CLASSICAL
from phyllodes.models.network import FUSIONS, MODALITIES
from phyllodes.profiles import PROFILES


def _common(p) -> None:
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--cohort", default="breast-lesions-usg")
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="", help="root of results/ (default: the repository)")
    p.add_argument("--splits-file", default="")
    p.add_argument("--encoder-weights", default=None, help="local weights file of the encoder")
    p.add_argument("--weights-dir", default=None, help="a folder of encoder weights files, one "
                   "per encoder name")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="a profile setting, NAME=VALUE (repeatable), e.g. --set image_size=64")
    p.add_argument("--overwrite", action="store_true", help="recompute finished runs")


def _csv(choices: tuple[str, ...] | None = None):
    """An argparse type: a comma-separated list, each item one of ``choices`` (when given)."""
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if choices is not None and t not in choices]
        if bad:
            import argparse
            raise argparse.ArgumentTypeError(f"{', '.join(bad)}: choose from {', '.join(choices)}")
        return items
    return parse


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="train one run (skipped if already finished)")
    _common(r)
    r.add_argument("--modality", required=True, choices=MODALITIES)
    r.add_argument("--model", required=True,
                   help="encoder (timm name) or clinical model: mlp, " + ", ".join(CLASSICAL))
    r.add_argument("--fusion", default="concat", choices=FUSIONS)
    r.add_argument("--fold", type=int, required=True)
    r.add_argument("--seed", type=int, default=0)

    g = sub.add_parser("grid", help="train every run of a grid (finished runs skipped)")
    _common(g)
    g.add_argument("--modalities", type=_csv(MODALITIES), default=list(MODALITIES))
    g.add_argument("--clinical-models", type=_csv(("mlp", *CLASSICAL)), default=["mlp"])
    g.add_argument("--models", type=_csv(), default=[],
                   help="encoders (default: the profile's encoder)")
    g.add_argument("--fusions", type=_csv(FUSIONS), default=[],
                   help="default: the profile's fusion")
    g.add_argument("--folds", default="all", help="e.g. 0,1 (default all)")
    g.add_argument("--seeds", default="0")
    from phyllodes.train.grid import EXECUTORS
    g.add_argument("--executor", default="local", choices=EXECUTORS)
    g.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    g.add_argument("--max-retries", type=int, default=2)


def _study(args, seed: int = 0):
    from phyllodes.profiles import parse_settings
    from phyllodes.study import open_study
    try:
        settings = parse_settings(args.settings)
    except ValueError as e:
        raise SystemExit(f"python -m phyllodes {args.command}: {e}") from None
    return open_study(args.profile, args.cohort, device=args.device, seed=seed,
                      output_dir=args.output, splits_file=args.splits_file, settings=settings,
                      weights_dir=args.weights_dir)


def dispatch(args) -> int:
    from phyllodes.train.runs import execute_run
    from phyllodes.train.spec import RunSpec

    if args.command == "run":
        study = _study(args)
        spec = RunSpec(args.modality, args.model, args.fusion, args.fold, args.seed)
        d = execute_run(study, spec, overwrite=args.overwrite,
                        encoder_weights=args.encoder_weights)
        print(d)
        return 0
    if args.command == "grid":
        from phyllodes.train.grid import grid_specs, grid_summary, run_grid
        study = _study(args)
        p = study.profile
        encoders = args.models or [p.encoder]
        models = {"clinical": args.clinical_models, "image": encoders, "multimodal": encoders}
        fusions = args.fusions or [p.fusion]
        folds = range(p.folds) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
        specs = grid_specs(args.modalities, models, fusions, folds, seeds)
        opts = {"max_retries": args.max_retries} if args.executor == "ray" else {}
        dirs = run_grid(study, specs, overwrite=args.overwrite,
                        encoder_weights=args.encoder_weights, executor=args.executor,
                        address=args.address, **opts)
        for d in dirs:
            print(d)
        print()
        print(grid_summary(dirs, n_boot=p.n_boot, seed=0))
        return 0
    raise SystemExit(f"unknown command {args.command}")
