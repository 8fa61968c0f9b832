"""Agent ids in the "agents down" banner and every Plotly label built from data
(agent ids, alert types, action types) go through the one escaping function."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import agent_heartbeats, system_alerts
from lib.core.text import md_escape, plotly_text
from lib.core.timeutil import utcnow
from lib.ui.queue_monitor import Keys as QueueKeys
from lib.ui.system_alerts import Keys as AlertKeys
from tests.support.queue_rows import add_account, insert_rows, queue_row

TAG = "<b>x</b><a href='javascript:alert(1)'>y</a>"
AGENT = f"agent-{TAG}*bold*"


def specs(at) -> list[str]:
    return [el.proto.spec for el in at.get("plotly_chart")]


def labels(spec: str) -> str:
    """Every string of a figure's data and layout, joined."""
    out = []

    def walk(v):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    fig = json.loads(spec)
    walk(fig.get("data"))
    walk(fig.get("layout", {}).get("yaxis"))
    walk(fig.get("layout", {}).get("xaxis"))
    return "\n".join(out)


def test_agent_ids_are_escaped_in_the_banner_and_the_timeline(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        conn.execute(sa.insert(agent_heartbeats), [
            {"id": uuid.uuid4(), "agent_id": AGENT, "status": "healthy", "last_beat_at": now - timedelta(minutes=m),
             "created_at": now - timedelta(minutes=m), "updated_at": now - timedelta(minutes=m)}
            for m in (5, 6, 7)])
    eng.dispose()
    at = run_page(sqlite_url, "pages/agent_status.py")
    banner = " ".join(e.value for e in at.error)
    assert md_escape(AGENT) in banner and AGENT not in banner
    text = "\n".join(labels(s) for s in specs(at))
    assert plotly_text(AGENT) in text
    assert "<b>" not in text and "<a " not in text


def test_alert_types_are_escaped_in_the_chart(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        conn.execute(sa.insert(system_alerts).values(id=uuid.uuid4(), alert_type=TAG, message="m", resolved=False,
                                                     created_at=now, updated_at=now))
    eng.dispose()
    at = run_page(sqlite_url, "pages/system_alerts.py")
    at.session_state[AlertKeys.CHART] = True  # the lazy "Alerts over time" expander, opened
    at.run()
    text = "\n".join(json.dumps(json.loads(s).get("data")) for s in specs(at))
    assert text
    assert json.dumps(plotly_text(TAG))[1:-1] in text
    assert "<b>" not in text and "<a " not in text


def test_action_types_are_escaped_in_the_queue_chart(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "acme", now)
        insert_rows(conn, [queue_row(account=acc, now=now, action_type=TAG)])
    eng.dispose()
    at = run_page(sqlite_url, "pages/queue_monitor.py")
    at.session_state[QueueKeys.COUNTS_TAB] = "Chart"  # the counts chart's lazy tab, opened
    at.run()
    text = "\n".join(json.dumps(json.loads(s).get("data")) for s in specs(at))
    assert text
    assert json.dumps(plotly_text(TAG))[1:-1] in text
    assert "<b>" not in text and "<a " not in text
