"""The sweep report as data: sections of paragraphs, tables and figures, each figure labelled with
the provenance of its numbers. Renderers (HTML with plotly, markdown, PNG with matplotlib) read
this model and add nothing of their own, so the three always show the same numbers.

Every point of a figure carries the slug of its trial (`Series.slugs`), so a reader (or a test)
can tell which trial each point is; an empty figure carries the reason it is empty.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Series(_Model):
    """One trace: points (x, y), the trial of each point, and a hover label per point."""

    name: str
    x: list[float | str] = Field(description="Numbers, or categories (trial slugs) for bars.")
    y: list[float]
    slugs: list[str] = Field(description="The trial each point belongs to.")
    hover: list[str]
    mode: Literal["markers", "lines+markers", "bar"] = "markers"
    symbol: Literal["circle", "star", "diamond", "x", "square"] = "circle"

    @model_validator(mode="after")
    def _same_lengths(self) -> Series:
        lengths = {len(self.x), len(self.y), len(self.slugs), len(self.hover)}
        if len(lengths) != 1:
            raise ValueError(f"series {self.name}: x, y, slugs and hover differ in length")
        return self


class ReferenceLine(_Model):
    """A limit drawn across a figure (the SLA's TTFT p99, say)."""

    axis: Literal["x", "y"]
    value: float
    label: str


class Figure(_Model):
    """One plot. `provenance` is shown with the title in every renderer."""

    id: str = Field(pattern=r"^[a-z0-9-]+$", description="Stable name: HTML id and PNG file name.")
    title: str
    provenance: str = Field(
        description="Where the numbers come from: measured on what, or predicted by what."
    )
    x_title: str
    y_title: str
    series: list[Series]
    reference_lines: list[ReferenceLine] = []
    stacked: bool = Field(default=False, description="Bars stacked (the memory breakdown).")
    empty_reason: str | None = Field(
        default=None, description="Why the figure has no points; None when it has some."
    )
    notes: list[str] = Field(default=[], description="Trials left out and why, caveats.")

    @property
    def has_points(self) -> bool:
        return any(series.y for series in self.series)

    @property
    def full_title(self) -> str:
        return f"{self.title} ({self.provenance})"


class Table(_Model):
    """Rows of text cells under headers; the caption says where the numbers come from."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


class Section(_Model):
    """One heading of the report with its content, in order: paragraphs, tables, figures."""

    id: str = Field(pattern=r"^[a-z0-9-]+$")
    heading: str
    paragraphs: list[str] = []
    tables: list[Table] = []
    figures: list[Figure] = []


class SweepReport(_Model):
    """The whole report of one sweep run."""

    title: str
    sweep: str
    run_id: str | None
    sections: list[Section]

    @property
    def figures(self) -> list[Figure]:
        return [figure for section in self.sections for figure in section.figures]
