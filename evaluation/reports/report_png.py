"""Static PNGs of the report's figures with matplotlib (Agg: no display), for MLflow's artifact
viewer and the markdown report, which show images but run no JavaScript. The title carries the
figure's provenance, as in the HTML."""

from __future__ import annotations

from pathlib import Path

from enginesweep.evaluation.reports.report_model import Figure

_MARKERS = {"circle": "o", "star": "*", "diamond": "D", "x": "X", "square": "s"}


def render_png(figure: Figure, path: Path) -> Path:
    """Draw `figure` into `path` (parents created); a figure without points is not drawn (the
    report says why in words), so callers check `figure.has_points` first."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display on servers and CI
    import matplotlib.pyplot as plt

    if not figure.has_points:
        raise ValueError(f"figure {figure.id} has no points: {figure.empty_reason}")
    path.parent.mkdir(parents=True, exist_ok=True)
    bars = any(series.mode == "bar" for series in figure.series)
    categories = {x for series in figure.series for x in series.x if isinstance(x, str)}
    width = max(8.0, 0.6 * len(categories))  # trial names along x need room
    fig, ax = plt.subplots(figsize=(min(width, 24.0), 5.5), layout="constrained")
    try:
        if bars:
            _bars(ax, figure)
        else:
            for series in figure.series:
                line = series.mode == "lines+markers"
                ax.plot(
                    series.x,
                    series.y,
                    label=series.name,
                    linestyle="-" if line else "none",
                    marker="o" if line else _MARKERS[series.symbol],
                    markersize=9 if series.symbol == "star" else 6,
                )
            if categories:  # trial names: slanted, each ending under its tick
                plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=7)
        for line in figure.reference_lines:
            draw = ax.axvline if line.axis == "x" else ax.axhline
            draw(line.value, color="grey", linestyle="--", linewidth=1, label=line.label)
        ax.set_title(f"{figure.title}\n{figure.provenance}", fontsize=10)
        ax.set_xlabel(figure.x_title)
        ax.set_ylabel(figure.y_title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _bars(ax, figure: Figure) -> None:
    """Bars by category (x); stacked when the figure says so, side by side otherwise."""
    categories = list(dict.fromkeys(str(x) for series in figure.series for x in series.x))
    positions = range(len(categories))
    bottoms = [0.0] * len(categories)
    count = len(figure.series)
    for i, series in enumerate(figure.series):
        values = dict(zip((str(x) for x in series.x), series.y))
        heights = [values.get(category, 0.0) for category in categories]
        if figure.stacked:
            ax.bar(positions, heights, bottom=bottoms, label=series.name)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        else:
            width = 0.8 / count
            ax.bar([p - 0.4 + width * (i + 0.5) for p in positions], heights, width=width, label=series.name)
    ax.set_xticks(list(positions), categories, rotation=30, ha="right", fontsize=7)
