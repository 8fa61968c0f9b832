"""`python -m bench --browser`: page times where people wait, in a real browser (Playwright with
Debian's chromium), against a floor (bench/floor/floor_app.py) measured in the same run.

Two ways of opening each page, median of --runs:
* new tab: a new tab of a browser whose cache is warm (its static files loaded once before), as
  when opening a shared link; timed from the navigation to "ready";
* menu switch: a click in the sidebar menu from another page in the same tab, to "ready".
"Ready": the script is idle, the page's title is shown, no skeleton placeholder is left, every
Plotly chart has drawn its SVG and every dataframe its canvas (those displayed: not in a closed
expander or another tab, which are never drawn). The app's data caches are as a
running server has them (the first open of a page fills them; the median of 3 is a warm one).
Volumes: --volumes demo (the demo data set, seeded fresh), small or scale (bench/data.py's SQLite
databases, built once: ~2 min for scale). Only SQLite: the browser's share does not depend on it.
Nothing is asserted.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.data import FULL, ROOT, SMALL, ensure_sqlite
from lib.core.timeutil import iso, utcnow
from lib.ui.nav import MENU_KEY, existing_pages
from tests.support.servers import StreamlitServer

RESULTS = ROOT / "bench" / "results"
FLOOR_APP = ROOT / "bench" / "floor" / "floor_app.py"
TARGET_RATIO = 1.2
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
READY_JS = """title => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute("data-test-script-state") !== "notRunning") return false;
  const h1 = [...document.querySelectorAll("h1")].some(h => h.innerText.trim() === title);
  if (!h1) return false;
  const skeletons = "[data-testid='stSkeleton'], [data-testid='stSkeletonElement'], [data-testid='stAppSkeleton']";
  if (document.querySelector(skeletons)) return false;
  // only what is displayed: a chart or table in a closed expander or another tab is never drawn
  const shown = el => el.getClientRects().length > 0;
  const all = sel => [...document.querySelectorAll(sel)];
  if (all("[data-testid='stPlotlyChart']").some(c => shown(c) && !c.querySelector(".main-svg"))) return false;
  if (all("[data-testid='stDataFrame']").some(d => shown(d) && !d.querySelector("canvas"))) return false;
  return true;
}"""


def _ready(page, title: str, timeout_ms: float = 180_000) -> None:  # a loaded 2-CPU machine: minutes
    page.wait_for_function(READY_JS, arg=title, polling="raf", timeout=timeout_ms)


def _new_tab(context, url: str, title: str) -> float:
    page = context.new_page()
    try:
        t = time.perf_counter()
        page.goto(url, wait_until="commit")
        _ready(page, title)
        return time.perf_counter() - t
    finally:
        page.close()


def _switch(context, origin_url: str, origin_title: str, link, title: str) -> float:
    page = context.new_page()
    try:
        page.goto(origin_url)
        _ready(page, origin_title)
        page.wait_for_timeout(300)  # let the origin settle (late fragments, fonts)
        target = link(page)
        t = time.perf_counter()
        target.click()
        _ready(page, title)
        return time.perf_counter() - t
    finally:
        page.close()


def _samples(context, base: str, it: dict) -> tuple[float, float]:
    return (_new_tab(context, base + it["path"], it["title"]),
            _switch(context, base + it["origin_path"], it["origin_title"], it["link"], it["title"]))


def _measure(context, app_url: str, floor_url: str, items: list[dict], floor_item: dict, runs: int, log) -> dict:
    """Each run of a page is paired with a run of the floor right before it, so the load of a
    shared machine weighs on both alike; a ratio is the median of the paired ratios."""
    out, floor_tabs, floor_switches = {}, [], []
    _samples(context, floor_url, floor_item)  # fills the browser cache
    for it in items:
        _samples(context, app_url, it)  # fills the browser cache and the app's data caches
        pairs = []
        for _ in range(runs):
            pairs.append((_samples(context, floor_url, floor_item), _samples(context, app_url, it)))
        tabs = [p[1][0] for p in pairs]
        switches = [p[1][1] for p in pairs]
        floor_tabs += [p[0][0] for p in pairs]
        floor_switches += [p[0][1] for p in pairs]
        out[it["name"]] = {
            "new_tab_s": statistics.median(tabs), "switch_s": statistics.median(switches),
            "new_tab_ratio": statistics.median(p[1][0] / p[0][0] for p in pairs),
            "switch_ratio": statistics.median(p[1][1] / p[0][1] for p in pairs),
            "new_tab_runs": tabs, "switch_runs": switches,
            "floor_new_tab_runs": [p[0][0] for p in pairs], "floor_switch_runs": [p[0][1] for p in pairs]}
        r = out[it["name"]]
        log(f"  {it['name']:<16} new tab {r['new_tab_s']:.2f} s (×{r['new_tab_ratio']:.2f})  "
            f"switch {r['switch_s']:.2f} s (×{r['switch_ratio']:.2f})")
    floor = {"new_tab_s": statistics.median(floor_tabs), "switch_s": statistics.median(floor_switches)}
    return {"floor": floor, "pages": out}


def _menu_link(title: str):
    # the label exactly: a link's text also holds its icon's ligature name, and System Alerts'
    # "notifications_active" contains "Notifications" (the bench waited on the wrong page forever)
    return lambda page: (page.locator(f".st-key-{MENU_KEY}").get_by_test_id("stPageLink")
                         .filter(has=page.get_by_text(title, exact=True)).first)


def database(volumes: str, log) -> tuple[str, dict]:
    if volumes == "demo":
        from lib.core.db import init_db, make_engine
        from sandbox.seed import seed_demo

        path = Path(tempfile.mkdtemp(prefix="bench-browser-")) / "demo.sqlite"
        url = f"sqlite:///{path}"
        eng = make_engine(url)
        init_db(eng)
        counts = seed_demo(eng, now=utcnow())
        eng.dispose()
        return url, {"volumes": "demo", "rows": counts}
    url, info = ensure_sqlite(volumes, SMALL if volumes == "small" else FULL, rebuild=False, log=log)
    return url, info


def run(volumes: str = "demo", runs: int = 3, pages: list[str] | None = None, log=print) -> dict:
    from playwright.sync_api import sync_playwright

    url, info = database(volumes, log)
    specs = [p for p in existing_pages() if pages is None or (p.url_path or "overview") in pages]
    origin = next(p for p in existing_pages() if p.path == "pages/oversight_chat.py")  # a light page (no account)
    other = next(p for p in existing_pages() if p.path == "pages/agent_status.py")
    items = []
    for spec in specs:
        src = other if spec == origin else origin
        items.append({"name": spec.url_path or "overview", "path": "/" + spec.url_path, "title": spec.title,
                      "origin_path": "/" + src.url_path, "origin_title": src.title, "link": _menu_link(spec.title)})
    floor_item = {"name": "floor", "path": "/floor", "title": "Floor", "origin_path": "/other", "origin_title": "Other",
                  "link": lambda page: page.get_by_test_id("stSidebarNav").get_by_text("Floor", exact=True)}
    result = {"measured_at": iso(utcnow()), "volumes": volumes, "data": info, "runs": runs,
              "nproc": os.cpu_count(), "load_before": os.getloadavg()[0]}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on a kill too
    app = StreamlitServer({"DATABASE_URL": url})
    floor_env = {}
    floor = _FloorServer(floor_env)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            warm = context.new_page()  # the first request: "/" runs app.py (normal mode from now on)
            warm.goto(app.url + "/")
            _ready(warm, "Overview")
            warm.close()
            log("== pages (each run paired with a run of the floor) ==")
            result.update(_measure(context, app.url, floor.url, items, floor_item, runs, log))
            browser.close()
    finally:
        app.stop()
        floor.stop()
    result["load_after"] = os.getloadavg()[0]
    return result


class _FloorServer(StreamlitServer):
    """The floor app on its own free port (StreamlitServer runs app.py; this runs the floor)."""

    def __init__(self, env):
        import subprocess

        from tests.support.pg import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"streamlit-floor-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(FLOOR_APP), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(self.port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=FLOOR_APP.parent, env={**os.environ, **env}, stdout=self.log, stderr=self.log)
        self._wait_healthy()


def markdown(result: dict) -> str:
    f = result["floor"]
    lines = [f"Measured {result['measured_at']} on {result['nproc']} CPUs (load {result['load_before']:.1f} → "
             f"{result['load_after']:.1f}); volumes: {result['volumes']} (SQLite); Chromium at 1440×900; median of "
             f"{result['runs']}, each run paired with a run of the floor (ratio = median of the paired ratios). "
             "Floor (bare Streamlit page: title, 4 metrics, 50-row dataframe, 1 Plotly bar "
             f"chart): new tab {f['new_tab_s']:.2f} s, menu switch {f['switch_s']:.2f} s.", "",
             "| page | new tab | page / floor | menu switch | page / floor |", "|---|---:|---:|---:|---:|"]
    for name, p in result["pages"].items():
        a, b = p["new_tab_ratio"], p["switch_ratio"]
        lines.append(f"| {name} | {p['new_tab_s']:.2f} s | {a:.2f}{' ✗' if a > TARGET_RATIO else ''} | "
                     f"{p['switch_s']:.2f} s | {b:.2f}{' ✗' if b > TARGET_RATIO else ''} |")
    lines += ["", f"Target: every page within {TARGET_RATIO}× of the floor both ways (✗: missed)."]
    return "\n".join(lines) + "\n"


def main(args, log=print) -> int:
    result = run(args.volumes, args.runs, None if not args.pages_given else args.pages.split(","), log=log)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"browser-{args.volumes}" + ("" if not args.pages_given else "-partial")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = markdown(result)
    (RESULTS / f"{stem}.md").write_text(md)
    print()
    print(md)
    log(f"written bench/results/{stem}.json and bench/results/{stem}.md")
    return 0
