"""Incidents on every database: a real sequence (an agent stops for three minutes, the alert is notified,
acknowledged with a comment, the agent restarts) read back as a timeline with its durations, listed with
filters, and exported as a Markdown postmortem."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from lib.activity.agent_schedules import make_schedule, set_schedule
from lib.activity.heartbeats import record_beat
from lib.activity.worker_ticks import record_tick_finish, record_tick_start
from lib.alerts.incidents import IncidentFilter, incident, list_incidents, postmortem_markdown, timeline_rows
from lib.core.identity import OPERATOR, Actor
from lib.core.settings import Settings
from lib.health.watchdog import sync_agent_down_alerts
from lib.notify.outbox import notify_tick
from lib.notify.silences import acknowledge
from sandbox.notify_sink import NotifySink

OP = Actor("ops@example.com", OPERATOR)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def run_sequence(engine, sink) -> None:
    settings = replace(Settings(database_url=str(engine.url), alert_notify_urls=sink.apprise_url(),
                                alert_notify_timeout_s=5.0))
    with engine.begin() as conn:
        for i in range(0, 121, 10):  # beating every 10 s for two minutes
            record_beat(conn, "engagement", now=T0 + i * S)
            sync_agent_down_alerts(conn, now=T0 + i * S)
        # stopped at 09:02:00: down after 60 s, the watchdog (every 30 s) raises at 09:03:30
        for i in range(150, 301, 30):
            sync_agent_down_alerts(conn, now=T0 + i * S)
        tick = record_tick_start(conn, now=T0 + 260 * S, host="w1", pid=7)
        record_tick_finish(conn, tick, now=T0 + 261 * S, claimed=3, sent=2, failed=1, dlq=0, rescued=0, error=None)
    notify_tick(engine, settings, now=T0 + 215 * S)
    with engine.begin() as conn:
        [alert_id] = [a.alert_id for a in list_incidents(conn, filters=IncidentFilter())]
        acknowledge(conn, [alert_id], actor=OP, now=T0 + 240 * S, note="restarting the engagement agent")
        set_schedule(conn, "engagement", make_schedule(period_s=30, grace_s=30), actor=OP, now=T0 + 250 * S)
        record_beat(conn, "engagement", now=T0 + 300 * S)  # restarted at 09:05:00, three minutes after it stopped
        assert sync_agent_down_alerts(conn, now=T0 + 310 * S)["resolved"] == ["engagement"]
    notify_tick(engine, settings, now=T0 + 320 * S)


def test_the_timeline_of_an_agent_stopped_for_three_minutes(engine):
    with NotifySink() as sink:
        run_sequence(engine, sink)
    with engine.connect() as conn:
        (summary,) = list_incidents(conn, filters=IncidentFilter(since=T0))
        inc = incident(conn, summary.alert_id, now=T0 + 400 * S)
    s = inc.summary
    assert (s.alert_type, s.agent_id, s.state) == ("agent_down", "engagement", "resolved")
    assert s.opened_at == T0 + 210 * S and s.time_to_acknowledge() == 30 * S and s.time_to_resolve() == 100 * S
    kinds = [(e.at - T0, e.kind) for e in inc.events]
    assert kinds == [
        (120 * S, "cause"),  # the last beat before the gap
        (210 * S, "opened"),
        (215 * S, "notification"),  # opened: sent
        (240 * S, "acknowledged"),
        (250 * S, "action"),  # the schedule change on the same agent
        (260 * S, "tick"),
        (300 * S, "cause"),  # beats again
        (310 * S, "resolved"),
        (320 * S, "notification"),  # resolved: sent
    ]
    texts = [e.text for e in inc.events]
    assert texts[2] == "opened message sent to " + inc.events[2].text.split(" sent to ")[1]
    assert texts[3] == "acknowledged: “restarting the engagement agent”" and inc.events[3].by == OP.name
    assert texts[5] == "worker tick: 2 sent, 1 failed, 0 dead-lettered"
    assert texts[6] == "engagement beats again after a gap of 3 min"
    assert texts[7] == "resolved by the worker (the agent beats again)"
    assert (inc.notifications_sent, inc.notifications_failed, inc.ticks_total) == (2, 0, 1)
    assert timeline_rows(inc)[0]["after"] == "-1 min"
    md = postmortem_markdown(inc, now=T0 + 400 * S)
    assert md.startswith("# Postmortem draft: agent\\_down · engagement")
    assert "- Time to acknowledge: 30 s" in md and "- Time to resolve: 1 min" in md
    assert "restarting the engagement agent" in md and "## Root cause" in md


def test_the_list_filters_by_state_type_agent_and_time(engine):
    with NotifySink() as sink:
        run_sequence(engine, sink)
    with engine.connect() as conn:
        assert len(list_incidents(conn, filters=IncidentFilter(state="resolved", alert_type="agent_down"))) == 1
        assert list_incidents(conn, filters=IncidentFilter(state="open")) == []
        assert list_incidents(conn, filters=IncidentFilter(agent_id="other")) == []
        assert list_incidents(conn, filters=IncidentFilter(since=T0 + 3600 * S)) == []
        assert incident(conn, "00000000-0000-0000-0000-000000000000", now=T0) is None
