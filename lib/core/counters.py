"""This process's Prometheus registry and counters: worker ticks, executed rows, Graph calls and notification
deliveries. Counting is cheap and never touches the database; lib/health/metrics.py adds the gauges read
from the database and worker/metrics_server.py serves the registry.
"""
from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics

PREFIX = "agent_dashboard_"
NO_CATEGORY = "none"
NO_ANSWER = "error"  # graph request status label when no HTTP answer came (timeout, connection error)

# -- the process's own metrics ------------------------------------------------------------------

disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated  # no *_created series: they double the series count and no rule here uses them
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

WORKER_TICKS = Counter(PREFIX + "worker_ticks", "Worker ticks by outcome (ok, failed).", ["outcome"],
                       registry=REGISTRY)
TICK_DURATION = Histogram(PREFIX + "worker_tick_duration_seconds", "Duration of a worker tick.",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600), registry=REGISTRY)
ACTIONS = Counter(PREFIX + "actions", "Executed post_queue rows by action type, outcome (sent, failed, dlq, "
                  "waiting) and error category.", ["action_type", "outcome", "error_category"], registry=REGISTRY)
GRAPH_REQUESTS = Histogram(PREFIX + "graph_request_duration_seconds",
                           "Graph API calls by endpoint template and HTTP status ('error': no answer).",
                           ["endpoint", "status"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
                           registry=REGISTRY)
NOTIFICATIONS = Counter(PREFIX + "notifications", "Alert notifications by outcome.", ["outcome"], registry=REGISTRY)

for _outcome in ("ok", "failed"):
    WORKER_TICKS.labels(_outcome)
for _outcome in ("sent", "failed"):
    NOTIFICATIONS.labels(_outcome)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:()-]{1,64}$")
_TEMPLATE_RE = re.compile(r"^/(\{[a-z-]+\}|me)(/[a-z_]+)?$")


def name_label(value: Any, default: str = "unknown") -> str:
    """A label value that is a short name; anything else (free text, None) becomes `default`."""
    text = "" if value is None else str(value)
    return text if _NAME_RE.match(text) else default


def endpoint_label(template: str) -> str:
    """The Graph client's endpoint template (`/{ig-user-id}/media`, `/me/messages`); anything that
    does not look like one (a path with an id in it) is 'other', so no id ever becomes a label."""
    return template if _TEMPLATE_RE.match(template or "") else "other"


def observe_tick(outcome: str, seconds: float) -> None:
    WORKER_TICKS.labels("failed" if outcome == "failed" else "ok").inc()
    TICK_DURATION.observe(max(0.0, seconds))


def count_action(action_type: str, outcome: str, error_category: str | None = None) -> None:
    """One executed row: outcome sent | failed | dlq | waiting (a row that waits on Instagram)."""
    ACTIONS.labels(name_label(action_type), name_label(outcome), name_label(error_category, NO_CATEGORY)).inc()


def observe_graph_call(method: str, template: str, status: int | None, seconds: float, headers: dict[str, str]) -> None:
    """A GraphClient observer: (method, endpoint template, HTTP status or None, seconds, headers)."""
    GRAPH_REQUESTS.labels(endpoint_label(template), NO_ANSWER if status is None else str(int(status))).observe(
        max(0.0, seconds))


def count_notification(outcome: str) -> None:
    """For the notification delivery: count one delivery attempt by outcome (e.g. sent, failed)."""
    NOTIFICATIONS.labels(name_label(outcome)).inc()
