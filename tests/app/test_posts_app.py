"""Posts page and the Metrics anomaly markers through AppTest, on the demo data (SQLite) and PostgreSQL."""
import base64
import json
import uuid
from datetime import timedelta

import numpy as np

from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.ui.metrics import Keys as MetricsKeys
from tests.support.reports import add_accounts, add_reports, report

PAGE = "pages/posts.py"


def test_posts_page_on_the_demo_data(run_page, demo_url):
    at = run_page(demo_url, PAGE)
    assert not at.exception
    [table] = [d for d in at.dataframe if d.proto.id and "posts_table" in (d.proto.id or "")] or at.dataframe[:1]
    df = table.value
    assert {"instagram_id", "caption", "engagement", "attempts", "reported_as"} <= set(df.columns)
    assert df["engagement"].notna().any()  # the demo's reports speak about media the queue published
    first = df["engagement"].dropna()
    assert list(first) == sorted(first, reverse=True)  # sorted by engagement
    assert any("published post" in c.value for c in at.caption)
    at.text_input(key="posts_search").set_value("zzzz-no-such-caption").run()
    assert not at.exception and any("No published posts match" in i.value for i in at.info)


def _daily(url):
    eng = make_engine(url)
    init_db(eng)
    today = utcnow().date()
    with eng.begin() as conn:
        (acc,) = add_accounts(conn, "alpha")
        rows = [report(acc, "daily", today - timedelta(days=d), reach=1000 + (d % 4) * 10 + (6000 if d == 3 else 0),
                       comparison=None) for d in range(1, 70)]
        add_reports(conn, rows)
    eng.dispose()


def test_metrics_daily_chart_has_anomaly_markers(run_page, sqlite_url, pg_server):
    for url in (sqlite_url, pg_server.create_database("posts_" + uuid.uuid4().hex[:8])):
        _daily(url)
        at = run_page(url, "pages/metrics.py")
        at.button_group(key=MetricsKeys.TYPE).set_value("daily").run()
        assert not at.exception, [e.value for e in at.exception]
        charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        names = [t.get("name") for c in charts for t in c["data"]]
        assert "Anomaly" in names
        marker = next(t for c in charts for t in c["data"] if t.get("name") == "Anomaly")
        y = marker["y"]
        if isinstance(y, dict):  # plotly's typed-array encoding
            y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]).tolist()
        assert y == [7030]  # the planted day: 1000 + 3 * 10 + 6000
