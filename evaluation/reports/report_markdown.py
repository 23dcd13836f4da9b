"""The report as markdown: the same sections and tables, each figure as a link to its PNG
(`figures/<id>.png`, drawn by `report_png`) under a title that names its provenance."""

from __future__ import annotations

from enginesweep.evaluation.reports.report_model import Figure, Section, SweepReport, Table


def _cell(text: str) -> str:
    # A pipe ends a cell and a newline ends the row: neither may stay inside one.
    return " ".join(text.split()).replace("|", "\\|")


def _table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"*{_cell(table.caption)}*"]
    return lines + [""]


def _figure(figure: Figure, figures_dir: str) -> list[str]:
    lines = [f"**{figure.title}** ({figure.provenance})", ""]
    if figure.has_points:
        lines.append(f"![{figure.full_title}]({figures_dir}/{figure.id}.png)")
    else:
        lines.append(f"No plot: {figure.empty_reason or 'no points'}.")
    lines += [""] + [f"- {note}" for note in figure.notes]
    return lines + ([""] if figure.notes else [])


def _section(section: Section, figures_dir: str) -> list[str]:
    lines = [f"## {section.heading}", ""]
    for text in section.paragraphs:
        lines += [text, ""]
    for table in section.tables:
        lines += _table(table)
    for figure in section.figures:
        lines += _figure(figure, figures_dir)
    return lines


def render_markdown(report: SweepReport, figures_dir: str = "figures") -> str:
    """The whole report; `figures_dir` is where the PNGs lie relative to the markdown file."""
    lines = [f"# {report.title}", ""]
    for section in report.sections:
        lines += _section(section, figures_dir)
    return "\n".join(lines).rstrip() + "\n"
