"""The refresh interval said is the one used: POLL_INTERVAL_S sets the fragments' run_every, the
sidebar's label, every "refreshes every N s" caption and the live loaders' cache TTL."""
import json
import subprocess
import sys

import pytest

from lib.core.db import init_db, make_engine
from lib.ui.shell import cache_ttl_s
from tests.app.conftest import ROOT

LIVE_PAGES = ("pages/overview.py", "pages/agent_status.py", "pages/queue_monitor.py", "pages/system_alerts.py")


@pytest.mark.parametrize("page", LIVE_PAGES)
def test_the_interval_shown_is_the_configured_one(run_page, sqlite_url, page):
    init_db(make_engine(sqlite_url))
    from lib.core.timeutil import utcnow
    from sandbox.seed import seed_demo

    seed_demo(make_engine(sqlite_url), now=utcnow())
    at = run_page(sqlite_url, page, env={"POLL_INTERVAL_S": "12"})
    assert at.sidebar.toggle(key="live").label == "Live refresh (12 s)"
    captions = [c.value for c in at.caption if c.value.startswith("Updated ")]
    assert captions and all(c.endswith(" · refreshes every 12 s") for c in captions), captions
    assert not any("30 s" in c.value for c in at.caption)
    at.sidebar.toggle(key="live").set_value(False).run()
    assert all("live refresh paused" in c.value for c in at.caption if c.value.startswith("Updated "))


def test_cache_ttl_follows_the_interval():
    assert cache_ttl_s(30) == 25 and cache_ttl_s(12) == 10 and cache_ttl_s(1) == 1
    # the loaders take their ttl at import: ask a fresh process with another interval
    code = ("import json; from lib.ui import activity_feed, metrics, oversight_chat, overview, queue_monitor, shell, "
            "system_alerts, agent_status; mods = [activity_feed, metrics, oversight_chat, queue_monitor, system_alerts, "
            "agent_status, shell]; print(json.dumps({f'{m.__name__}.{n}': f._info.ttl for m in mods "
            "for n, f in vars(m).items() if hasattr(f, '_info') and getattr(f._info, 'ttl', None) is not None "
            "and f.__module__ == m.__name__}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"POLL_INTERVAL_S": "12", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    ttls = json.loads(out.strip().splitlines()[-1])
    live = {name for name, ttl in ttls.items() if ttl == 10.0}
    assert len(live) >= 20, ttls  # the live loaders (each page module's); the rest are the deliberate ones below
    # the others are deliberate: 5 s liveness and database pings, 60 s accounts, 300 s filter options
    assert {ttl for name, ttl in ttls.items() if name not in live} <= {5, 60, 300}, ttls
