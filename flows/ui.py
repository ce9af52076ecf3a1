"""The MLflow UI, seen in a real browser: start `mlflow ui` on loopback, open the compare view of an onboarding's
runs in headless Chromium, check that the runs and a metric row are on screen, and save a screenshot.

Used by ``transferrec ui --snapshot FILE`` (a picture of the newest onboarding for a report) and by the browser
test. The browser part needs the ``browser`` extra (Playwright's Python driver) and a Chromium binary: Debian's
``chromium`` package (``/usr/bin/chromium``) or ``$TRANSFERREC_CHROMIUM``; Playwright's own browser download is
never used (it needs the internet).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from flows.services import free_port, start_mlflow, stop_process, wait_healthy

CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update")


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The MLflow UI's compare view of ``run_ids``."""
    return (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(run_ids))}"
            f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}")


def chromium_path() -> str:
    """Chromium to drive: ``$TRANSFERREC_CHROMIUM``, else ``chromium``/``chromium-browser`` on PATH."""
    for candidate in (os.environ.get("TRANSFERREC_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("no Chromium found: install Debian's `chromium` package or set TRANSFERREC_CHROMIUM")


# The compare view's metric table is a virtualised grid (react-virtualized): a name column and a value grid, each
# with its own scroll, rendering only the rows in view. Scroll both until the metric's row exists, then centre it.
_SCROLL_TO_METRIC = """(key) => {
  const grids = document.querySelectorAll('.ReactVirtualized__Grid');
  if (grids.length < 2) return null;
  const [names, values] = grids;
  const link = [...names.querySelectorAll('a')].find(a => a.textContent.trim() === key);
  if (!link) {
    if (values.scrollTop + values.clientHeight >= values.scrollHeight) return 'end';
    names.scrollTop = values.scrollTop = values.scrollTop + values.clientHeight * 0.6;
    return null;
  }
  const top = link.closest('[style*="top"]').style.top;
  names.scrollTop = values.scrollTop = Math.max(0, parseFloat(top) - values.clientHeight / 3);
  return top;
}"""

# What is really on screen at the centre of each cell of that row (clipped rows are not): the name, then values.
_ROW_ON_SCREEN = """([key, top]) => {
  const [names, values] = document.querySelectorAll('.ReactVirtualized__Grid');
  const hit = (el) => { const r = el.getBoundingClientRect();
                        const at = document.elementFromPoint(r.left + Math.min(r.width / 2, 40), r.top + r.height / 2);
                        return at !== null && (el.contains(at) || at.contains(el)); };
  const link = [...names.querySelectorAll('a')].find(a => a.textContent.trim() === key);
  const cells = [...values.querySelectorAll('[style*="top"]')].filter(c => c.style.top === top)
      .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left));
  return {name_visible: !!link && hit(link), values: cells.map(c => c.textContent.trim()),
          values_visible: cells.length > 0 && cells.every(hit)};
}"""


@dataclass(frozen=True)
class CompareSnapshot:
    """What the browser showed: the run names in the compare view's header row, the metric row's values in the same
    order, and the screenshot's path."""

    run_names: list[str]
    metric: str
    values: list[str]
    screenshot: Path


def snapshot_compare(url: str, metric: str, out: Path, *, run_names: list[str], timeout_s: float = 90.0,
                     width: int | None = None, height: int = 1000) -> CompareSnapshot:
    """Open the compare view at ``url`` in headless Chromium, wait for every run name, scroll the metric table to
    ``metric``, check its name and values are really on screen (not clipped), and save a screenshot to ``out``
    showing the run details and that row (``width``: by default wide enough for every run's column). Raises
    ``AssertionError`` naming what is missing."""
    from playwright.sync_api import sync_playwright

    width = width or max(1500, 400 + 200 * len(run_names))

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_FLAGS))
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        credentials = {"username": user, "password": password} if user and password else None
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, http_credentials=credentials)
            page.goto(url, timeout=timeout_s * 1000)
            for name in run_names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=timeout_s * 1000)
            close = page.get_by_role("button", name="Close")  # the side assistant panel, if the UI opens one
            if close.count():
                close.first.click()
            for section in ("Visualizations", "Parameters"):  # fold what sits between run details and metrics
                header = page.get_by_text(section, exact=True)
                if header.count():
                    header.first.click()
            page.get_by_text("Run details", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
            top = None
            deadline = time.monotonic() + timeout_s
            while top is None and time.monotonic() < deadline:
                top = page.evaluate(_SCROLL_TO_METRIC, metric)
                if top == "end":
                    raise AssertionError(f"metric {metric!r} is not in the compare view's metric table")
                if top is None:
                    time.sleep(0.15)
            if top is None:
                raise AssertionError(f"the compare view's metric table did not render within {timeout_s:.0f} s")
            page.wait_for_timeout(400)
            header_names = [t.strip() for t in page.locator("tr", has_text="Run Name:").first.locator("td")
                            .all_inner_texts()]
            row = page.evaluate(_ROW_ON_SCREEN, [metric, top])
            if not (row["name_visible"] and row["values_visible"]):
                raise AssertionError(f"metric row {metric!r} is rendered but not on screen: {row}")
            if len(row["values"]) != len(header_names):
                raise AssertionError(f"metric row {metric!r} shows {len(row['values'])} values for "
                                     f"{len(header_names)} runs (a wider view shows them all)")
            bottom = page.locator(".ReactVirtualized__Grid").nth(1).bounding_box()
            clip = {"x": 0, "y": 0, "width": width, "height": min(height, bottom["y"] + bottom["height"] + 16)}
            page.screenshot(path=str(out), clip=clip)
        finally:
            browser.close()
    return CompareSnapshot(run_names=header_names, metric=metric, values=row["values"], screenshot=out)


def onboarding_model_runs(uri: str, target_domain: str) -> tuple[str, list[str], list[str]]:
    """The experiment id, and the model child runs (ids, names; transfer first) of the newest onboarding of
    ``target_domain`` in the store at ``uri``."""
    from tasks import tracking
    from tasks.registry import BASELINES
    from tasks.tracking import experiment_name

    name = experiment_name(target_domain)
    parents = tracking.recent_onboardings(uri, name, limit=1)
    if not parents:
        raise LookupError(f"no onboarding of {target_domain!r} in {uri} (experiment {name!r})")
    children = tracking.runs_table(uri, name, parent_id=parents[0]["run_id"])
    by_name = dict(zip(children["tags.mlflow.runName"], children["run_id"], strict=True))
    names = [n for n in ("transfer", *BASELINES) if n in by_name]
    experiment_id = str(children["experiment_id"].iloc[0])
    return experiment_id, [by_name[n] for n in names], names


def snapshot_newest_onboarding(uri: str, target_domain: str, out: Path, *,
                               metric: str = "test/ndcg_at_10") -> CompareSnapshot:
    """Screenshot of the compare view of the newest onboarding of ``target_domain``. A SQLite store gets its own
    `mlflow ui` on a free loopback port for the time of the picture; an ``http(s)://`` tracking server is opened as
    it is (with ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` as basic-auth credentials when set)."""
    experiment_id, run_ids, names = onboarding_model_runs(uri, target_domain)
    if uri.startswith(("http://", "https://")):
        return snapshot_compare(compare_url(uri.rstrip("/"), experiment_id, run_ids), metric, out, run_names=names)
    port = free_port()
    log = out.parent / f".mlflow-ui-{port}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    server = start_mlflow(["ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
                           "--workers", "1"], log=log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, server, log=log)
        return snapshot_compare(compare_url(base, experiment_id, run_ids), metric, out, run_names=names)
    finally:
        stop_process(server)
        log.unlink(missing_ok=True)
