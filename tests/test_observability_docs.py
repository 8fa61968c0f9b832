"""docs/observability.md: the scrape config, the alert rules and the Grafana dashboard are valid
(promtool check config / check rules, the rules fire on synthetic series with promtool test rules,
every dashboard query is valid PromQL), and the documented metric names are the exported ones."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lib.core import counters
from lib.core.timeutil import utcnow
from lib.health.metrics import Snapshot, families

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "observability.md"
PROMTOOL = shutil.which("promtool")  # Debian's prometheus package; scripts/test installs it

def blocks() -> dict[str, str]:
    """The fenced blocks that follow a `<!-- file: NAME -->` marker."""
    text = DOC.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", text, re.S)}


def promtool(*args, cwd):
    assert PROMTOOL, "promtool is required (apt-get install prometheus; scripts/test does it)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def files(tmp_path):
    for name, body in blocks().items():
        (tmp_path / name).write_text(body + "\n")
    return tmp_path


def test_the_doc_has_the_scrape_config_the_rules_and_the_dashboard():
    assert set(blocks()) == {"prometheus.yml", "agent_dashboard_rules.yml", "grafana-dashboard.json"}


def test_promtool_accepts_the_scrape_config_and_the_rules(files):
    rules = promtool("check", "rules", "agent_dashboard_rules.yml", cwd=files)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 5 rules found" in rules.stdout
    config = promtool("check", "config", "prometheus.yml", cwd=files)
    assert config.returncode == 0, config.stdout + config.stderr


RULE_TESTS = """
rule_files: [agent_dashboard_rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'up{job="agent_dashboard_worker", instance="w1"}', values: '1x40'}
      - {series: 'agent_dashboard_worker_ticks_total{outcome="ok", instance="w1"}', values: '0+1x5 5x35'}
      # two workers export the same gauges: max without (instance) must not double them
      - {series: 'agent_dashboard_queue_rows{status="dlq", action_type="send_dm", instance="w1"}', values: '0+1x40'}
      - {series: 'agent_dashboard_queue_rows{status="dlq", action_type="send_dm", instance="w2"}', values: '0+1x40'}
      - {series: 'agent_dashboard_queue_oldest_pending_seconds{instance="w1"}', values: '1500+60x40'}
      - {series: 'agent_dashboard_agent_heartbeat_age_seconds{agent_id="agent-1", instance="w1"}', values: '0+60x40'}
      - {series: 'agent_dashboard_agent_heartbeat_age_seconds{agent_id="agent-2", instance="w1"}', values: '5x40'}
      - {series: 'agent_dashboard_graph_usage_ratio{account="acme", kind="call_count", instance="w1"}', values: '0.5 0.9x40'}
      - {series: 'agent_dashboard_graph_usage_ratio{account="shop", kind="call_count", instance="w1"}', values: '0.3x40'}
    alert_rule_test:
      - {eval_time: 4m, alertname: AgentDashboardWorkerNotTicking, exp_alerts: []}
      - eval_time: 30m
        alertname: AgentDashboardWorkerNotTicking
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "No worker has completed a tick for 15 minutes"
              description: "Check that python -m worker runs (its /healthz) and that the database answers (/readyz)."
      - {eval_time: 5m, alertname: AgentDashboardDLQGrowing, exp_alerts: []}
      - eval_time: 40m
        alertname: AgentDashboardDLQGrowing
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "The dead-letter queue grew by 30 rows in 30 minutes"
              description: "Rows that need an operator: Queue Monitor, dead-letter queue."
      - {eval_time: 3m, alertname: AgentDashboardOldestPendingOver30m, exp_alerts: []}
      - eval_time: 15m
        alertname: AgentDashboardOldestPendingOver30m
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "A pending row has waited 40m 0s"
              description: "The worker is behind, stopped, or its accounts are held back (disconnected or throttled)."
      - eval_time: 5m
        alertname: AgentDashboardAgentHeartbeatStale
        exp_alerts:
          - exp_labels: {severity: critical, agent_id: agent-1}
            exp_annotations:
              summary: "Agent agent-1 has not sent a heartbeat for 5m 0s"
      - eval_time: 10m
        alertname: AgentDashboardGraphUsageHigh
        exp_alerts:
          - exp_labels: {severity: warning, account: acme, kind: call_count}
            exp_annotations:
              summary: "Graph API usage of acme (call_count) is at 90%"
              description: "At 100 % Instagram throttles the account; the worker leaves it alone until access returns."
  - interval: 1m
    input_series:
      - {series: 'up{job="agent_dashboard_worker", instance="w1"}', values: '0x40'}
    alert_rule_test:
      - eval_time: 10m
        alertname: AgentDashboardWorkerNotTicking
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "No worker has completed a tick for 15 minutes"
              description: "Check that python -m worker runs (its /healthz) and that the database answers (/readyz)."
"""


def test_the_alert_rules_fire_on_synthetic_series(files):
    (files / "rules_test.yml").write_text(RULE_TESTS)
    out = promtool("test", "rules", "rules_test.yml", cwd=files)
    assert out.returncode == 0, out.stdout + out.stderr


def dashboard_exprs() -> list[str]:
    dash = json.loads(blocks()["grafana-dashboard.json"])
    assert dash["panels"] and dash["uid"]
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_every_dashboard_query_is_valid_promql(files):
    rules = "groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:q{i}\n        expr: {json.dumps(e)}\n" for i, e in enumerate(dashboard_exprs()))
    (files / "dashboard_rules.yml").write_text(rules)
    out = promtool("check", "rules", "dashboard_rules.yml", cwd=files)
    assert out.returncode == 0, out.stdout + out.stderr


def exported_names() -> set[str]:
    text = generate_latest(counters.REGISTRY).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    names |= {f.name for f in families(Snapshot(), utcnow())}
    return {n for n in names if n.startswith("agent_dashboard_")}


def test_documented_names_are_the_exported_names_and_queries_use_only_them():
    documented = set(re.findall(r"^\| `(agent_dashboard_\w+)` \|", DOC.read_text(), re.M))
    exported = {n + ("_total" if n + "_total" in documented else "") for n in exported_names()}
    assert documented == exported
    assert len(documented) == 11
    used = set()
    for expr in dashboard_exprs() + re.findall(r"expr: (.*)", blocks()["agent_dashboard_rules.yml"]):
        used |= {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"(?<![\"\w])agent_dashboard_\w+", expr)}
    assert used == documented  # the dashboard and the rules cover every metric, and use nothing else
