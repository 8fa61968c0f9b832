"""Screenshots of three pages for the README, taken from the demo data at 1440x900.

    scripts/screenshots [--out docs/images]

Seeds a throwaway SQLite database with the demo data (as of now), starts the app on a free port of
127.0.0.1, opens Overview, Queue Monitor (with a dead-letter row opened) and System Alerts in
Debian's Chromium, and writes overview.png, queue-monitor.png and system-alerts.png. Run it after a
change to those pages so the README shows the app as it is."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from lib.core.db import init_db, make_engine  # noqa: E402
from lib.core.timeutil import utcnow  # noqa: E402
from sandbox.seed import seed_demo  # noqa: E402
from tests.conftest import CHROMIUM  # noqa: E402
from tests.e2e.conftest import open_first_queue_row  # noqa: E402
from tests.support.servers import StreamlitServer  # noqa: E402

VIEWPORT = {"width": 1440, "height": 900}
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def settle(page) -> None:
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(1_500)  # the grid's canvas and the charts draw after the run ends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder for the PNG files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.sqlite'}"
        eng = make_engine(url)
        init_db(eng)
        seed_demo(eng, now=utcnow())
        eng.dispose()
        server = StreamlitServer({"DATABASE_URL": url})
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                             "--disable-dev-shm-usage"])
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(server.url + "/overview")
                settle(page)
                page.screenshot(path=out / "overview.png")

                page.goto(server.url + "/queue_monitor")
                settle(page)
                open_first_queue_row(page)
                settle(page)
                page.screenshot(path=out / "queue-monitor.png")

                page.goto(server.url + "/system_alerts")
                settle(page)
                page.screenshot(path=out / "system-alerts.png")
                browser.close()
        finally:
            server.stop()
    for name in ("overview.png", "queue-monitor.png", "system-alerts.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
