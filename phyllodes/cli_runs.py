"""Command-line entry points for training runs and grids (filled in with the training core)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    return None


def dispatch(args) -> int:
    raise SystemExit(f"unknown command {args.command}")
