"""Agent watchdog (DESIGN decisions 6 and 7): agent_down alerts on transitions only.

An agent whose newest beat is older than the liveness threshold gets one unresolved
`agent_down` alert per down period; when it beats again the alert resolves itself. An alert
an operator resolved while the agent is still down is not raised again for the same down
period (nothing new happened), only after the agent has beaten since.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.alerts import auto_resolve, open_or_update_alert
from lib.heartbeats import LIVENESS_THRESHOLD, is_alive
from lib.schema import agent_heartbeats as hb
from lib.schema import system_alerts as sa_t
from lib.timeutil import as_utc, iso


def sync_agent_down_alerts(conn: sa.Connection, *, now: datetime,
                           threshold: timedelta = LIVENESS_THRESHOLD) -> dict[str, list[str]]:
    """Raise/resolve agent_down alerts. -> {"raised": [agent ids], "resolved": [agent ids]}."""
    latest = {r.agent_id: as_utc(r.last) for r in conn.execute(
        sa.select(hb.c.agent_id, sa.func.max(hb.c.last_beat_at).label("last")).group_by(hb.c.agent_id))}
    agent_key = sa_t.c.details["agent_id"].as_string()
    alerts: dict[str, dict[str, Any]] = {}
    for r in conn.execute(
        sa.select(agent_key.label("agent_id"), sa_t.c.resolved, sa_t.c.created_at)
        .where(sa_t.c.alert_type == "agent_down")
    ):
        info = alerts.setdefault(r.agent_id, {"open": False, "newest": None})
        info["open"] = info["open"] or not r.resolved
        created = as_utc(r.created_at)
        if created is not None and (info["newest"] is None or created > info["newest"]):
            info["newest"] = created
    raised, resolved = [], []
    for agent_id, last in sorted(latest.items()):
        info = alerts.get(agent_id, {"open": False, "newest": None})
        if is_alive(last, now, threshold):
            if info["open"] and auto_resolve(conn, alert_type="agent_down", agent_id=agent_id, now=now):
                resolved.append(agent_id)
            continue
        if info["open"] or (info["newest"] is not None and last is not None and info["newest"] >= last):
            continue  # already raised for this down period
        open_or_update_alert(
            conn, alert_type="agent_down", agent_id=agent_id, now=now,
            message=f"Agent {agent_id} has not sent a heartbeat since {iso(last) if last else 'ever'}",
            details={"last_beat_at": iso(last) if last else None, "threshold_s": int(threshold.total_seconds()),
                     "source": "worker_watchdog", "occurred_at": iso(now)},
        )
        raised.append(agent_id)
    return {"raised": raised, "resolved": resolved}
