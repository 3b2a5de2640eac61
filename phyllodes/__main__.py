"""Command line: ``python -m phyllodes <command>`` (``--help`` lists them)."""

from __future__ import annotations

import argparse
import logging
import sys

from phyllodes.profiles import PROFILES, parse_settings

SET_HELP = ("a profile setting for this run, NAME=VALUE (repeatable), e.g. --set "
            "pretrained=none --set image_size=64; validated by the Profile and recorded in "
            "every run's config")


#: commands with their own argument parser (everything after the name goes to them): the module
#: whose ``main`` takes the rest, and the help line
DELEGATED = {
    "readme": ("phyllodes.report.readme", "regenerate README.md's generated sections"),
    "check": ("phyllodes.ops.check", "rerun the study into a scratch folder and compare its "
              "tables with the committed ones"),
    "report": ("phyllodes.report.html", "rebuild the HTML report from existing outputs"),
    "fetch-weights": ("phyllodes.ops.preflight", "download timm's ImageNet weights of a "
                      "profile's encoders (on a machine with internet)"),
    "import-dicom": ("phyllodes.data.sources.dicom", "a hospital DICOM export + clinical "
                     "spreadsheet -> a de-identified cohort"),
}


def _notebooks(args, parser) -> int:
    from phyllodes.ops.runner import main_notebooks
    try:
        args.settings = parse_settings(args.settings)
    except ValueError as e:
        parser.error(str(e))
    return main_notebooks(args)


def _add_notebooks(sub) -> None:
    nb = sub.add_parser("notebooks", help="execute the numbered notebooks with papermill")
    nb.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    nb.add_argument("--cohort", default="breast-lesions-usg")
    nb.add_argument("--device", default="auto")
    nb.add_argument("--seed", type=int, default=0)
    nb.add_argument("--output", default=None, help="root of tables/, figures/, results/")
    nb.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 01,03")
    nb.add_argument("--weights-dir", default=None, help="a folder of encoder weights files, "
                    "one per encoder name (<encoder>.pth/.pt/.safetensors/.bin)")
    nb.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                    help=SET_HELP)
    nb.set_defaults(handler=_notebooks)


def _convert_breast(args, parser) -> int:
    from phyllodes.data.sources.breast import convert_breast
    t = convert_breast(args.source, args.out, args.max_side, args.overwrite)
    print(f"wrote {len(t)} rows to {args.out}/cohort.csv")
    return 0


def _convert_busbra(args, parser) -> int:
    from phyllodes.data.sources.busbra import convert_busbra
    t = convert_busbra(args.source, args.out, max_side=args.max_side, context=args.context,
                       overwrite=args.overwrite)
    print(f"wrote {len(t)} images of {t['subject_id'].nunique()} patients to "
          f"{args.out}/cohort.csv")
    return 0


def _synthetic(args, parser) -> int:
    from phyllodes.data.sources.synthetic import make_synthetic_cohort
    out = make_synthetic_cohort(args.out, args.subjects, args.seed, args.image_size)
    print(f"wrote a synthetic cohort to {out}")
    return 0


def _add_cohort_writers(sub) -> None:
    cv = sub.add_parser("convert-breast", help="derive the bundled cohort from the "
                        "BrEaST-Lesions_USG release")
    cv.add_argument("--source", required=True, help="folder of the original release")
    cv.add_argument("--out", default="data/public/breast-lesions-usg")
    cv.add_argument("--max-side", type=int, default=320)
    cv.add_argument("--overwrite", action="store_true")
    cv.set_defaults(handler=_convert_breast)

    cb = sub.add_parser("convert-busbra", help="derive the bundled external-validation cohort "
                        "from the BUS-BRA release")
    cb.add_argument("--source", required=True, help="folder of the original release")
    cb.add_argument("--out", default="data/public/bus-bra")
    cb.add_argument("--max-side", type=int, default=256)
    cb.add_argument("--context", type=float, default=0.5,
                    help="context around the lesion box, a fraction of its size per side")
    cb.add_argument("--overwrite", action="store_true")
    cb.set_defaults(handler=_convert_busbra)

    sy = sub.add_parser("synthetic", help="write a seeded synthetic cohort (hospital schema)")
    sy.add_argument("--out", required=True)
    sy.add_argument("--subjects", type=int, default=40)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--image-size", type=int, default=64)
    sy.set_defaults(handler=_synthetic)


def _validate(args, parser) -> int:
    from phyllodes.data.cohort import validate_cohort
    try:
        report = validate_cohort(args.cohort, folds=args.folds or None,
                                 check_images=not args.no_images)
    except FileNotFoundError as e:
        print(f"validate: {e}", file=sys.stderr)
        return 1
    print(report.text(show=None if args.all else 12))
    return 0 if report.ok else 1


def _add_validate(sub) -> None:
    va = sub.add_parser("validate", help="check a cohort against the data contract: every "
                        "problem of every stage, and what will be used (exit status 0/1)")
    va.add_argument("cohort", help="a cohort folder, or a name under data/public or data/private")
    va.add_argument("--folds", type=int, default=5, help="folds the classes must fill (0: no "
                    "fold check)")
    va.add_argument("--all", action="store_true", help="list every problem (default: at most "
                    "12 of each kind, and a count)")
    va.add_argument("--no-images", action="store_true", help="check paths only, do not open "
                    "the images")
    va.set_defaults(handler=_validate)


def parser() -> argparse.ArgumentParser:
    """Every command: its arguments, and the function that runs it (``handler``)."""
    from phyllodes import cli_runs
    from phyllodes.handover import cli as handover_cli
    p = argparse.ArgumentParser(prog="python -m phyllodes", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_notebooks(sub)
    _add_cohort_writers(sub)
    _add_validate(sub)
    for module in (cli_runs, handover_cli):
        before = set(sub.choices)
        module.add_parsers(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(handler=lambda a, _p, m=module: m.dispatch(a))
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text + f" (python -m phyllodes {name} --help)",
                       add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    if argv and argv[0] in DELEGATED:
        import importlib
        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args, p)


if __name__ == "__main__":
    sys.exit(main())
