"""The MLflow UI in a real browser, on a finished sweep: what a user does after `enginesweep run`.

The session's tiny sweep (bf16 and fp8 trials through the `enginesweep run` CLI, shared with
test_sweep_flow: `tiny_sweep_run`) is what the user looks at; `enginesweep ui SPEC` serves its
store on 127.0.0.1; headless Chromium
(Debian's `chromium`, driven by Playwright, no browser download) opens the experiment's runs,
expands the sweep's parent run, selects the two trial runs (named by their slugs) and presses
"Compare"; the compare view must show each trial's slug and, for every headline metric the runs
carry (read off the runs with MlflowClient, `ttft_p99_ms` and `itl_p99_ms` required), the value
MLflow displays for each trial, in the metrics table and as an axis of the parallel-coordinates
plot. A full-page screenshot of that view is saved as a test artifact (its path is printed):
`tests/artifacts/` (ignored by git), or `$ENGINESWEEP_TEST_ARTIFACTS` where CI collects them.

The UI server (a session of its own) and the browser (a fresh profile folder) are always
stopped, by process group and by pid, and the test checks that nothing of either is left.
A missing Chromium is an error naming `scripts/setup-test-services`, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from enginesweep.engines.processes import http_ok, kill_marked, session_pids, stop_process_group, wait_ready
from enginesweep.engines.triton.server import free_port
from enginesweep.evaluation.selection.headline import HEADLINE_METRICS
from testkit.postgres_server import _children  # live children of a pid, from /proc
from testkit.tiny_sweep import TRIALS, SweepRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "enginesweep"
CHROMIUM = Path("/usr/bin/chromium")
SETUP_HINT = "run scripts/setup-test-services (it installs Debian's chromium package)"
# Headless as root on a machine without a display or internet: no sandbox (root), no GPU, and
# nothing that phones home (the closed network refuses those connections, many at a time).
# Playwright adds --headless itself; the profile folder is a fresh one per launch.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
REQUIRED_METRICS = ("ttft_p99_ms", "itl_p99_ms")
VIEWPORT = {"width": 1920, "height": 1200}
UI_TIMEOUT_MS = 60_000  # first page loads on a busy 2-core machine


def require_chromium(path: Path = CHROMIUM) -> Path:
    """Debian's Chromium; a missing one is an error with the fix, never a skip."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(f"Chromium not found at {path}: {SETUP_HINT}")
    return path


def artifact_dir() -> Path:
    """Where screenshots go: `$ENGINESWEEP_TEST_ARTIFACTS` (CI) or `tests/artifacts/`."""
    default = Path(__file__).parents[1] / "artifacts"
    folder = Path(os.environ.get("ENGINESWEEP_TEST_ARTIFACTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def mlflow_format_metric(value: float) -> str:
    """A metric value as MLflow's UI displays it: `Utils.formatMetric` of MLflow 3.17's bundle
    (mlflow/server/js/build/static/js/main.*.js), JavaScript's rounding and number printing."""

    def js_round(x: float) -> int:  # Math.round: halves go up, not to even
        return math.floor(x + 0.5)

    def js_str(x: float) -> str:  # Number#toString for the magnitudes formatMetric leaves
        return str(int(x)) if x == int(x) and abs(x) < 1e21 else repr(x)

    if value == 0:
        return "0"
    if abs(value) < 0.001:  # toExponential(3): "1.234e-4", not Python's "1.234e-04"
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    scale = 1000 if abs(value) < 10 else 100 if abs(value) < 100 else 10
    return js_str(js_round(scale * value) / scale)


# --- the sweep and its runs -------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRun:
    run_id: str
    slug: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Sweep:
    spec: Path
    root: Path
    experiment_id: str
    parent_run_id: str
    trials: tuple[TrialRun, ...]
    headline: tuple[str, ...]  # the headline metrics every trial run carries


@pytest.fixture(scope="module")
def sweep(tiny_sweep_run: SweepRun) -> Sweep:
    """The session's two-trial sweep (bf16, fp8), and its runs as MLflow's client reads them:
    the first sweep run of the store and its trial runs (test_sweep_flow, which shares the
    store, runs the sweep again after this module)."""
    from mlflow.tracking import MlflowClient

    require_chromium()
    done, root = tiny_sweep_run.done, tiny_sweep_run.root
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'ws' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("enginesweep")
    parents = client.search_runs(
        [experiment.experiment_id], "tags.`enginesweep.kind` = 'sweep'", order_by=["start_time ASC"]
    )
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    trials = tuple(
        TrialRun(r.info.run_id, r.info.run_name, dict(r.data.metrics))
        for r in runs
        if r.data.tags.get("enginesweep.kind") == "trial"
    )
    assert sorted(t.slug for t in trials) == sorted(TRIALS)
    # Which headline metrics exist is the tracker's business; these two always do.
    headline = tuple(name for name in HEADLINE_METRICS if all(name in t.metrics for t in trials))
    assert set(REQUIRED_METRICS) <= set(headline), [sorted(t.metrics) for t in trials]
    return Sweep(
        tiny_sweep_run.spec, root, experiment.experiment_id, parents[0].info.run_id, trials, headline
    )


# --- the UI server and the browser ------------------------------------------------------------


@dataclass
class RunningUI:
    url: str
    runs_link: str = ""  # the sweep's runs page, as `enginesweep ui` prints it
    leftovers: list[int] = field(default_factory=list)  # pids found alive after the stop


@contextlib.contextmanager
def enginesweep_ui(spec: Path, log_path: Path) -> Iterator[RunningUI]:
    """`enginesweep ui SPEC --port P` in a session of its own until the block ends. Stopped with
    SIGTERM to its process group (the verb then stops its `mlflow server`, a session of its own,
    and waits for it); whatever of that server's session is still alive after that is recorded in
    `leftovers` and SIGKILLed by pid."""
    port = free_port()
    with log_path.open("ab") as log:
        verb = subprocess.Popen(
            [str(SCRIPT), "ui", str(spec), "--port", str(port)],
            cwd=spec.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = RunningUI(f"http://127.0.0.1:{port}")
    try:
        wait_ready(
            verb,
            lambda: http_ok(f"{ui.url}/health"),
            timeout_s=120,
            what="enginesweep ui",
            log_tail=lambda: log_path.read_text(errors="replace")[-3000:],
        )
        printed = re.search(r"the sweep's runs: (\S+)", log_path.read_text(errors="replace"))
        assert printed, "enginesweep ui printed no link to the sweep's runs"
        ui.runs_link = printed.group(1)
        yield ui
    finally:
        servers = _children(verb.pid)  # `mlflow server`: setsid, so its pid is its session id
        stop_process_group(verb)
        ui.leftovers = sorted({pid for sid in servers for pid in session_pids(sid)})
        for pid in ui.leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ui(sweep: Sweep) -> Iterator[RunningUI]:
    with enginesweep_ui(sweep.spec, sweep.root / "mlflow-ui.log") as running:
        yield running
    assert running.leftovers == [], f"the UI left processes behind: {running.leftovers}"


@pytest.fixture
def page(tmp_path: Path):
    """A page of headless Chromium with a fresh profile; the browser is closed after the test and
    any process still using that profile is killed by pid (then the test fails)."""
    from playwright.sync_api import sync_playwright

    chromium = require_chromium()
    profile = tmp_path / "chromium-profile"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(chromium),
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport=VIEWPORT,
        )
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
    # Playwright kills the browser when its context closes; the profile path names every one of
    # its processes, so any survivor is found (and killed) by pid.
    survivors = kill_marked(str(profile))
    assert survivors == [], f"Chromium processes outlived the browser: {survivors}"


def save_screenshot(page, name: str) -> Path:
    """A screenshot of the whole page. MLflow scrolls inside its <main>, not the document, so the
    viewport is first made as tall as that content."""
    overflow = page.evaluate(
        "() => { const m = document.querySelector('main'); return m ? m.scrollHeight - m.clientHeight : 0; }"
    )
    if overflow > 0:
        page.set_viewport_size({"width": VIEWPORT["width"], "height": VIEWPORT["height"] + overflow})
        page.wait_for_timeout(500)  # plots re-render to the new size
    path = artifact_dir() / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


# --- what the browser sees --------------------------------------------------------------------


def compare_url(ui_url: str, sweep: Sweep) -> str:
    """MLflow 3.17's compare page for the trial runs, as its own `getCompareRunPageRoute` builds
    it (routes in mlflow/server/js/build/static/js/main.*.js): a hash route with JSON lists."""
    runs = json.dumps([t.run_id for t in sweep.trials])
    return f"{ui_url}/#/compare-runs?runs={runs}&experiments={json.dumps([sweep.experiment_id])}"


def close_assistant(page) -> None:
    """Close MLflow's assistant side panel: it takes a third of the width from the runs."""
    page.locator("[data-component-id='mlflow.assistant.chat_panel.close']").click()


def pick(page, select, option: str) -> None:
    """Add `option` to an (antd) multi-select of the plot: open it, type, click the exact match
    (Enter on the typed name picked no `accuracy_delta`, a part of several metric names)."""
    select.click()
    page.keyboard.type(option)
    page.locator(f".du-bois-light-select-item-option[title='{option}']:visible").click()
    page.keyboard.press("Escape")


def metrics_table(page, wanted: set[str]) -> dict[str, list[str]]:
    """The compare view's metrics table as displayed: metric name -> the shown value per run
    column. It is a virtualized grid 300 px tall (only the rows near the view exist in the DOM),
    so it is scrolled through and read at each position, rows keyed by their pixel offset; a
    pass that missed any of `wanted` (the grid re-renders after the scroll event, late on a
    busy machine) is repeated with longer waits."""
    section = page.locator(
        ".du-bois-light-collapse-item", has=page.locator("[aria-label='collapse Metrics']")
    )
    grids = section.locator(".ReactVirtualized__Grid")
    assert grids.count() == 2, "the metrics table is no longer a names grid beside a values grid"
    names_grid, values_grid = grids.nth(0), grids.nth(1)
    names: dict[str, str] = {}
    cells: dict[str, dict[float, str]] = {}

    def table() -> dict[str, list[str]]:
        return {name: [text for _, text in sorted(cells.get(top, {}).items())] for top, name in names.items()}

    for wait_ms in (150, 600, 2000):
        height = values_grid.evaluate("g => g.scrollHeight")
        for top in range(0, height + 200, 200):
            values_grid.evaluate("(g, y) => { g.scrollTop = y; }", top)
            page.wait_for_timeout(wait_ms)
            for row_top, name in names_grid.evaluate(
                "g => [...g.querySelectorAll('a[title=\"Plot chart\"]')]"
                ".map(a => [a.parentElement.style.top, a.textContent])"
            ):
                names[row_top] = name
            for row_top, left, text in values_grid.evaluate(
                "g => [...g.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer > div')]"
                ".map(c => [c.style.top, parseFloat(c.style.left), c.textContent])"
            ):
                cells.setdefault(row_top, {})[left] = text
        shown = table()
        if wanted <= {name for name, values in shown.items() if values}:
            break
    return shown


def test_missing_chromium_is_an_error_naming_the_setup_script(tmp_path: Path):
    with pytest.raises(RuntimeError, match="run scripts/setup-test-services"):
        require_chromium(tmp_path / "chromium")


def expect_trial_rows(page, sweep: Sweep) -> None:
    """The runs table shows the sweep's parent run; expanded, its trial runs by their slugs."""
    # ag-grid draws each row once per pinned section; the left one holds the name and checkbox.
    rows = page.locator(".ag-pinned-left-cols-container [role=row]")
    parent = rows.and_(page.locator(f"[row-id='{sweep.parent_run_id}']"))
    parent.wait_for()
    assert "tiny-sweep" in parent.inner_text()
    first = rows.and_(page.locator(f"[row-id='{sweep.trials[0].run_id}']"))
    page.wait_for_timeout(1000)  # children of a parent the UI remembers expanded come with it
    if first.count() == 0:
        parent.locator("button").first.click()  # the expander of a run with children
    for trial in sweep.trials:
        row = rows.and_(page.locator(f"[row-id='{trial.run_id}']"))
        row.wait_for()
        # the name cell truncates long slugs: the link's own text is the whole name
        assert row.get_by_role("link", name=trial.slug, exact=True).count() == 1, row.inner_text()


def test_the_printed_link_and_the_experiment_list_open_the_trial_runs(sweep: Sweep, ui: RunningUI, page):
    """The link `enginesweep ui` prints opens the sweep's runs. From the experiment list, with the
    sidebar's switch on "Model training" (the printed hint: MLflow 3.17 opens any experiment in
    its GenAI view otherwise), a click on the experiment shows the same runs."""
    assert ui.runs_link.endswith(f"/#/experiments/{sweep.experiment_id}/runs?workflowType=machine_learning")
    page.goto(ui.runs_link)
    close_assistant(page)
    expect_trial_rows(page, sweep)
    save_screenshot(page, "mlflow-ui-printed-link.png")
    page.goto(f"{ui.url}/#/experiments")
    page.get_by_text("Model training", exact=True).click()
    page.locator("[data-testid='experiment-list-item-link'][title='enginesweep']").click()
    page.wait_for_url(f"**/#/experiments/{sweep.experiment_id}/runs**")
    expect_trial_rows(page, sweep)
    save_screenshot(page, "mlflow-ui-from-the-list.png")


def test_the_runs_page_finds_the_sweeps_trials_and_compares_them(sweep: Sweep, ui: RunningUI, page):
    """The user's way in: the experiment's runs, the sweep's parent run expanded to its trial
    runs (named by their slugs), both selected, "Compare"."""
    page.goto(f"{ui.url}/#/experiments/{sweep.experiment_id}/runs?workflowType=machine_learning")
    close_assistant(page)
    expect_trial_rows(page, sweep)
    rows = page.locator(".ag-pinned-left-cols-container [role=row]")
    for trial in sweep.trials:
        rows.and_(page.locator(f"[row-id='{trial.run_id}']")).locator("input.ag-checkbox-input").check()
    save_screenshot(page, "mlflow-ui-runs.png")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_url("**/#/compare-runs?**")
    page.get_by_text(f"Comparing {len(sweep.trials)} Runs").wait_for()
    url = page.url.replace("%22", '"')
    assert all(f'"{trial.run_id}"' in url for trial in sweep.trials), page.url


def test_the_compare_view_shows_each_trial_and_its_headline_metrics(sweep: Sweep, ui: RunningUI, page):
    page.goto(compare_url(ui.url, sweep))
    page.get_by_text(f"Comparing {len(sweep.trials)} Runs from 1 Experiment").wait_for()
    close_assistant(page)

    # The parallel-coordinates plot: the quantization format and every headline metric, one axis
    # each, a line per trial (MLflow preselects a few params and one metric).
    page.get_by_role("button", name="Clear All").click()
    params_select, metrics_select = page.locator(".du-bois-light-select-multiple").all()
    pick(page, params_select, "quant")
    for name in sweep.headline:
        pick(page, metrics_select, name)
    axes = page.locator(".parcoords .axis-title")
    axes.nth(len(sweep.headline)).wait_for()  # quant + the metrics drawn
    # The screenshot shows the plot, the runs and the metrics table; the sections below them are
    # folded (the artifact viewer would stretch over the tall viewport the screenshot needs).
    headers = page.locator(".du-bois-light-collapse-header")
    for section in ("Parameters", "Artifacts", "Tags"):
        headers.filter(has_text=re.compile(f"^{section}$")).click()
    page.wait_for_timeout(500)  # the folding animation, before the page's height is measured
    screenshot = save_screenshot(page, "mlflow-ui-compare.png")
    assert screenshot.stat().st_size > 50_000  # a drawn page, not a blank one

    # Columns are the runs, in the order of the Run details' header.
    header = page.locator("tr", has=page.locator("th", has_text="Run ID:")).get_by_role("link")
    columns = header.all_inner_texts()
    trials = {t.run_id: t for t in sweep.trials}
    assert sorted(columns) == sorted(trials)
    run_names = page.locator("tr", has=page.locator("th", has_text="Run Name:")).locator("td")
    assert run_names.all_inner_texts() == [trials[run_id].slug for run_id in columns]

    assert axes.all_text_contents() == ["quant", *sweep.headline]
    every_metric = {name for trial in sweep.trials for name in trial.metrics}
    table = metrics_table(page, every_metric)
    assert set(table) == every_metric  # the table shows exactly the runs' metrics
    for name in sweep.headline:
        shown = table.get(name)
        expected = [mlflow_format_metric(trials[run_id].metrics[name]) for run_id in columns]
        assert shown == expected, f"{name}: the compare view shows {shown}, the runs hold {expected}"
