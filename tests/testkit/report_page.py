"""Reading a rendered sweep report back for the tests: its sections, table rows, text and each
figure's plotly JSON (from the `<script type="application/json">` elements the page draws from),
with `html.parser` and `json`, not string searches. Shared by the unit and integration suites
(`testkit.report_page`)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

SECTIONS = {
    "summary": "Summary",
    "traffic": "Traffic",
    "champion": "Champion",
    "trials": "Trials",
    "pareto": "Pareto plots",
    "latency-curves": "Latency vs throughput",
    "predicted-vs-measured": "Predicted vs measured",
    "memory": "Memory breakdown",
    "capacity": "Capacity plan",
}
ONE_POINT_PER_TRIAL = ("pareto-goodput-ttft", "pareto-cost-accuracy", "pareto-size-throughput")


class ReportPage(HTMLParser):
    """Sections (id -> heading), figures (id -> plotly JSON, or None when drawn empty), table
    rows (cell texts, by section), every paragraph and caption, and what the page would fetch
    from elsewhere (`external`: script and link sources; a self-contained page has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.figures: dict[str, dict | None] = {}
        self.rows: list[tuple[str, list[str]]] = []  # (section id, cells)
        self.text: list[str] = []
        self.external: list[str] = []
        self._section: str | None = None
        self._in: str | None = None
        self._figure_json: str | None = None
        self._buffer = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "link", "img", "iframe") and (attrs.get("src") or attrs.get("href")):
            self.external.append(attrs.get("src") or attrs.get("href"))
        if tag == "section":
            self._section = attrs["id"]
        elif tag == "figure":
            self.figures[attrs["id"].removeprefix("figure-")] = None
        elif tag == "script" and attrs.get("type") == "application/json":
            self._figure_json, self._buffer = attrs["data-figure"], ""
        elif tag == "tr":
            self.rows.append((self._section, []))
        if tag in ("h2", "td", "p", "figcaption"):
            self._in, self._buffer = tag, ""

    def handle_data(self, data):
        self._buffer += data

    def handle_endtag(self, tag):
        if tag == "script" and self._figure_json is not None:
            self.figures[self._figure_json] = json.loads(self._buffer)
            self._figure_json = None
        elif tag == self._in:
            if tag == "h2":
                self.sections[self._section] = self._buffer.strip()
            elif tag == "td":
                self.rows[-1][1].append(self._buffer)
            else:
                self.text.append(self._buffer)
            self._in = None


def parse(page: str) -> ReportPage:
    parser = ReportPage()
    parser.feed(page)
    return parser


def points_by_trial(figure: dict) -> dict[str, int]:
    """How many points of the figure each trial has (over every trace; customdata = slug)."""
    counts: dict[str, int] = {}
    for trace in figure["data"]:
        assert len(trace["customdata"]) == len(trace["x"]) == len(trace["y"])
        for slug in trace["customdata"]:
            counts[slug] = counts.get(slug, 0) + 1
    return counts


def point_of(figure: dict, slug: str) -> tuple:
    """The (x, y) of trial `slug`'s one point in the figure."""
    found = [
        (trace["x"][i], trace["y"][i])
        for trace in figure["data"]
        for i, name in enumerate(trace["customdata"])
        if name == slug
    ]
    assert len(found) == 1, (slug, found)
    return found[0]
