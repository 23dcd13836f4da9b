"""The report as one self-contained HTML file: tables, and interactive plotly figures.

plotly.js is inlined once in the page head (no CDN: the machines and air-gapped clusters that open
these reports have no internet). Each figure's plotly JSON sits in a `<script
type="application/json" class="figure-json" data-figure="ID">` element, drawn by one small script
at the end of the page, so the data can also be read back by a parser without running JavaScript
(the tests do). Every point carries its trial's slug as `customdata`.
"""

from __future__ import annotations

import html

from enginesweep.evaluation.reports.report_model import Figure, Section, SweepReport, Table

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
caption { caption-side: bottom; font-size: 0.85em; color: #555; text-align: left; padding-top: 0.3em; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.85em; color: #555; }
.plot { width: 100%; height: 520px; }
.empty { font-style: italic; color: #666; }
nav a { margin-right: 1em; }
"""

# One figure that fails to draw says so in its place and leaves the others drawn.
_DRAW = """
document.querySelectorAll('script.figure-json').forEach(function (element) {
  var target = 'plot-' + element.dataset.figure;
  try {
    var figure = JSON.parse(element.textContent);
    Plotly.newPlot(target, figure.data, figure.layout, {responsive: true, displaylogo: false});
  } catch (error) {
    var place = document.getElementById(target);
    if (place) { place.textContent = 'This figure could not be drawn: ' + error; }
  }
});
"""


def plotly_json(figure: Figure) -> str:
    """The figure as plotly JSON (data and layout), provenance in the title."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for series in figure.series:
        common = {
            "name": series.name,
            "x": series.x,
            "y": series.y,
            "customdata": series.slugs,
            "hovertext": series.hover,
        }
        if series.mode == "bar":
            fig.add_trace(go.Bar(**common, hoverinfo="text+y"))
        else:
            fig.add_trace(
                go.Scatter(
                    **common,
                    mode=series.mode,
                    hoverinfo="text+x+y",
                    marker={"symbol": series.symbol, "size": 14 if series.symbol == "star" else 9},
                )
            )
    for line in figure.reference_lines:
        draw = fig.add_vline if line.axis == "x" else fig.add_hline
        draw(line.value, line_dash="dash", line_color="grey", annotation_text=line.label)
    fig.update_layout(
        # Plotly reads titles as a small HTML subset: <, > and & escaped, quotes left as they are.
        title={
            "text": f"{html.escape(figure.title, quote=False)}<br>"
            f"<sup>{html.escape(figure.provenance, quote=False)}</sup>"
        },
        xaxis_title=figure.x_title,
        yaxis_title=figure.y_title,
        template="plotly_white",
        barmode="stack" if figure.stacked else "group",
        legend={"font": {"size": 10}},
    )
    return fig.to_json()


def _script_safe(text: str) -> str:
    """JSON that cannot end its <script> element early: <, > and & as JSON escapes."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    )
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(figure: Figure) -> str:
    notes = "".join(f"<br>{html.escape(note)}" for note in figure.notes)
    caption = f"<figcaption>{html.escape(figure.full_title)}{notes}</figcaption>"
    if not figure.has_points:
        reason = figure.empty_reason or "no points"
        return (
            f'<figure class="report-figure empty" id="figure-{figure.id}">'
            f'<p class="empty">No plot ({html.escape(figure.title)}): {html.escape(reason)}.'
            f"</p>{caption}</figure>"
        )
    return (
        f'<figure class="report-figure" id="figure-{figure.id}">'
        f'<div class="plot" id="plot-{figure.id}"></div>'
        f'<script type="application/json" class="figure-json" data-figure="{figure.id}">'
        f"{_script_safe(plotly_json(figure))}</script>{caption}</figure>"
    )


def _section(section: Section) -> str:
    parts = [f'<section id="{section.id}"><h2>{html.escape(section.heading)}</h2>']
    parts += [f"<p>{html.escape(text)}</p>" for text in section.paragraphs]
    parts += [_table(table) for table in section.tables]
    parts += [_figure(figure) for figure in section.figures]
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: SweepReport) -> str:
    """The whole page, plotly.js inlined once."""
    from plotly.offline import get_plotlyjs

    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.heading)}</a>' for s in report.sections)
    body = "\n".join(_section(section) for section in report.sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(report.title)}</title>\n<style>{_STYLE}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<h1>{html.escape(report.title)}</h1>\n<nav>{nav}</nav>\n{body}\n"
        f"<script>{_DRAW}</script>\n</body>\n</html>\n"
    )
