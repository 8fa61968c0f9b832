"""Where a page's browser time goes: a CPU profile of Chromium's renderer while a page opens in a
new tab (warm browser cache, warm app caches), self time summed by script chunk and by function.

    .venv/bin/python -m bench.browser_profile --pages metrics,activity_feed [--volumes demo|small|scale] [--switch]

--switch profiles a menu switch instead (from the page bench.browser starts its switches on).

Streamlit loads each element type's code as its own chunk (PlotlyChart.*.js, DataFrame.*.js,
StreamlitMarkdown.*.js, StreamlitSyntaxHighlighter.*.js for st.code, reactJsonViewCompat.*.js for
st.json), so the chunk names say which elements cost. The floor (bench/floor) is profiled first and
last for comparison. Nothing is written; load averages are printed beside every profile.
"""
from __future__ import annotations

import argparse
import collections
import os
import time

from bench.browser import CHROMIUM_ARGS, READY_JS, _FloorServer, _menu_link, database
from lib.ui.nav import existing_pages
from tests.support.servers import StreamlitServer


def _open(context, url: str, title: str) -> None:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(READY_JS, arg=title, polling=200, timeout=180_000)
    page.close()


def profile(context, url: str, title: str, top: int = 8, switch_from: tuple[str, str, object] | None = None) -> str:
    """A new tab of `url`, or with switch_from=(origin url, origin title, link) a click on the menu
    link from the origin page."""
    page = context.new_page()
    if switch_from is not None:
        page.goto(switch_from[0])
        page.wait_for_function(READY_JS, arg=switch_from[1], polling=200, timeout=180_000)
        page.wait_for_timeout(300)
    cdp = context.new_cdp_session(page)
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 500})  # µs
    cdp.send("Profiler.start")
    t = time.perf_counter()
    if switch_from is None:
        page.goto(url, wait_until="commit")
    else:
        switch_from[2](page).click()
    page.wait_for_function(READY_JS, arg=title, polling=200, timeout=180_000)
    wall = time.perf_counter() - t
    prof = cdp.send("Profiler.stop")["profile"]
    page.close()
    nodes = {n["id"]: n["callFrame"] for n in prof["nodes"]}
    by_script, by_fn = collections.Counter(), collections.Counter()
    for node_id, dt_us in zip(prof["samples"], prof["timeDeltas"]):
        frame = nodes[node_id]
        script = frame["url"].rsplit("/", 1)[-1] or frame["functionName"] or "(native)"
        by_script[script] += dt_us / 1000
        by_fn[f"{frame['functionName'] or '?'}@{script}"] += dt_us / 1000
    return (f"== {title}: ready in {wall:.2f} s, {sum(by_script.values()):.0f} ms sampled, load {os.getloadavg()[0]:.1f}\n"
            f"   by script (ms): {', '.join(f'{k} {v:.0f}' for k, v in by_script.most_common(top))}\n"
            f"   by function (ms): {', '.join(f'{k} {v:.0f}' for k, v in by_fn.most_common(top))}")


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(prog="python -m bench.browser_profile", description=__doc__.splitlines()[0])
    ap.add_argument("--pages", required=True, help="comma-separated url paths (overview for /)")
    ap.add_argument("--volumes", choices=("demo", "small", "scale"), default="demo")
    ap.add_argument("--switch", action="store_true", help="profile a menu switch instead of a new tab")
    args = ap.parse_args(argv)
    url, _info = database(args.volumes, print)
    specs = {(p.url_path or "overview"): p for p in existing_pages()}
    app, floor = StreamlitServer({"DATABASE_URL": url}), _FloorServer({})
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            _open(context, app.url + "/", "Overview")  # normal mode, static files cached
            _open(context, floor.url + "/floor", "Floor")
            floor_from = (floor.url + "/other", "Other", lambda page: page.get_by_test_id("stSidebarNav")
                          .get_by_text("Floor", exact=True)) if args.switch else None
            origin = specs["oversight_chat"]
            print(profile(context, floor.url + "/floor", "Floor", switch_from=floor_from), flush=True)
            for name in args.pages.split(","):
                spec = specs[name]
                _open(context, f"{app.url}/{spec.url_path}", spec.title)  # fills the app's data caches
                page_from = (f"{app.url}/{origin.url_path}", origin.title, _menu_link(spec.title)) if args.switch else None
                print(profile(context, f"{app.url}/{spec.url_path}", spec.title, switch_from=page_from), flush=True)
            print(profile(context, floor.url + "/floor", "Floor", switch_from=floor_from), flush=True)
            browser.close()
    finally:
        app.stop()
        floor.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
