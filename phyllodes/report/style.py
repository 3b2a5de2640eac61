"""One style for every figure: print sizes, a colour-blind-safe palette, legends off the data.

* Sizes follow a two-column paper: :data:`SINGLE` = 3.5 in (one column), :data:`DOUBLE` = 7.2 in;
  text is 7–8 pt so that it stays readable at that size, as PNG (300 dpi) and as PDF.
* :data:`PALETTE` is Okabe & Ito's colour-blind-safe set (Color Universal Design, 2008); models
  keep their colour across figures through :func:`colour_of`.
* :func:`legend_outside` puts a legend below the axes, never over the data.
* :func:`figure` makes a figure of the study's style; builders in :mod:`phyllodes.report.figures`
  call it instead of ``plt.subplots``.
"""

from __future__ import annotations

from contextlib import contextmanager

import matplotlib as mpl
import matplotlib.pyplot as plt

SINGLE = 3.5   #: inches, one column
DOUBLE = 7.2   #: inches, two columns
LEGEND_DROP_PT = 34  #: a legend below the axes starts this far under them (ticks + x label)
DPI = 300

#: Okabe-Ito: black, orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
           "#CC79A7")
#: the colours used for lines and bars, in order (black is kept for references)
SERIES = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442")
REFERENCE = "#555555"   #: chance lines, paper values, thresholds
PAPER = "#D55E00"       #: the paper's reported values

RC = {
    "font.size": 7.5, "axes.titlesize": 8, "axes.labelsize": 7.5, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 6.5, "legend.title_fontsize": 7,
    "figure.titlesize": 8.5, "lines.linewidth": 1.3, "lines.markersize": 3.5,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False,
    "axes.prop_cycle": mpl.cycler(color=SERIES), "legend.frameon": False,
    "figure.dpi": 110, "savefig.dpi": DPI, "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42, "ps.fonttype": 42, "image.cmap": "gray",
}

_colours: dict[str, str] = {}


def apply() -> None:
    """Set the study's style for every figure made afterwards (idempotent)."""
    mpl.rcParams.update(RC)


@contextmanager
def style():
    """The study's style, for a ``with`` block only."""
    with mpl.rc_context(RC):
        yield


def colour_of(name: str) -> str:
    """A stable colour per model name across all figures of a run."""
    if name not in _colours:
        _colours[name] = SERIES[len(_colours) % len(SERIES)]
    return _colours[name]


def figure(width: float = SINGLE, height: float | None = None, nrows: int = 1, ncols: int = 1,
           **kw):
    """``plt.subplots`` at a print width (inches) in the study's style."""
    apply()
    height = height if height is not None else width * 0.8
    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def legend_outside(ax, ncol: int = 1, title: str | None = None, handles=None, labels=None):
    """A legend below the axes and their x label (never over the data or the label), at a
    fixed distance in points whatever the axes' height; returns it."""
    from matplotlib.transforms import offset_copy
    kw = {} if handles is None else {"handles": handles, "labels": labels}
    below = offset_copy(ax.transAxes, fig=ax.figure, y=-LEGEND_DROP_PT, units="points")
    return ax.legend(loc="upper left", bbox_to_anchor=(0, 0), bbox_transform=below, ncol=ncol,
                     title=title, borderaxespad=0, **kw)
