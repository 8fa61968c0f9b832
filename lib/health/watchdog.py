"""Agent watchdog (liveness from the newest beat; one open alert per agent): agent_down alerts on transitions only.

An agent whose newest beat is past its schedule's deadline (lib.activity.agent_schedules: the next expected
beat + grace; by default 60 s after the beat) gets one unresolved
`agent_down` alert per down period; when it beats again the alert resolves itself. An alert
an operator resolved while the agent is still down is not raised again for the same down
period (nothing new happened), only after the agent has beaten since.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.activity.agent_schedules import as_schedule, load_schedules
from lib.activity.heartbeats import LIVENESS_THRESHOLD, Rule, is_alive
from lib.alerts.store import auto_resolve, open_or_update_alert
from lib.core.schema import agent_heartbeats as hb
from lib.core.schema import system_alerts as sa_t
from lib.core.timeutil import as_utc, iso


def sync_agent_down_alerts(conn: sa.Connection, *, now: datetime,
                           threshold: Rule = LIVENESS_THRESHOLD) -> dict[str, list[str]]:
    """Raise/resolve agent_down alerts. -> {"raised": [agent ids], "resolved": [agent ids]}.
    Each agent is judged by its schedule; agents without one by `threshold`."""
    schedules = load_schedules(conn)
    default = as_schedule(threshold)
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
        rule = schedules.get(agent_id, default)
        if is_alive(last, now, rule):
            if info["open"] and auto_resolve(conn, alert_type="agent_down", agent_id=agent_id, now=now):
                resolved.append(agent_id)
            continue
        if info["open"] or (info["newest"] is not None and last is not None and info["newest"] >= last):
            continue  # already raised for this down period
        alert_id = open_or_update_alert(  # None: a maintenance window covers the agent
            conn, alert_type="agent_down", agent_id=agent_id, now=now,
            message=f"Agent {agent_id} has not sent a heartbeat since {iso(last) if last else 'ever'}",
            details={"last_beat_at": iso(last) if last else None,
                     "threshold_s": int((rule.deadline(last) - last).total_seconds()) if last else None,
                     "schedule": rule.describe(), "expected_by": iso(rule.due(last)) if last else None,
                     "source": "worker_watchdog", "occurred_at": iso(now)},
        )
        if alert_id is not None:
            raised.append(agent_id)
    return {"raised": raised, "resolved": resolved}
