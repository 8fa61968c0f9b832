"""What a notification says: the title and body of an incident's opening, its digest of repeats and its
resolution, in the configured time zone, with a link to the dashboard when DASHBOARD_URL is set.
"""
from __future__ import annotations

from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from lib.core.settings import Settings
from lib.core.text import clip
from lib.core.timeutil import fmt_duration

MESSAGE_CHARS = 500  # of the alert's message in a notification


NOTIFY_TYPES = {"CRITICAL": "failure", "ERROR": "failure", "WARNING": "warning"}


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
def group_key(alert_type: str, business_account_id, agent_id) -> str:
    return f"{alert_type}|{business_account_id or ''}|{agent_id or ''}"


def subject(account_name: str | None, agent_id: str | None) -> str:
    return account_name or agent_id or "system"


def alert_link(settings: Settings, *, alert_type: str, account_name: str | None, state: str) -> str | None:
    """DASHBOARD_URL + the System Alerts URL with its filters (type, status, account)."""
    base = (settings.dashboard_url or "").rstrip("/")
    if not base:
        return None
    if alert_type == "review_waiting":  # rows waiting for review (lib/queue/review.py): the review page itself
        return f"{base}/review"
    query = [("alert_type", alert_type), ("alert_state", state), ("alert_view", "each")]
    if account_name:
        query.append(("account", account_name))
    return f"{base}/system_alerts?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query)


def _fmt(ts: datetime | None, tz: ZoneInfo, with_date: bool = True) -> str:
    if ts is None:
        return "—"
    local = ts.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M %Z" if with_date else "%H:%M %Z")


def _tz(settings: Settings) -> ZoneInfo:
    try:
        return ZoneInfo(settings.display_timezone or "UTC")
    except Exception:  # noqa: BLE001 - a bad zone name must not stop notifications
        return ZoneInfo("UTC")


def title_for(sev: str, alert_type: str, subj: str) -> str:
    return f"[{sev}] {alert_type} · {subj}"


def opened_message(settings: Settings, *, sev: str, alert_type: str, subj: str, message: str | None,
                   agent_id: str | None, account_name: str | None, first_seen: datetime | None,
                   occurrences: int, silence_ended: bool = False) -> tuple[str, str]:
    tz = _tz(settings)
    lines = [clip((message or "(no message)").replace("\r", " "), MESSAGE_CHARS), ""]
    if account_name:
        lines.append(f"Account: {account_name}")
    if agent_id:
        lines.append(f"Agent: {agent_id}")
    lines.append(f"First seen: {_fmt(first_seen, tz)}")
    if occurrences > 1:
        lines.append(f"Seen {occurrences} times so far.")
    if silence_ended:
        lines.append("It was silenced when it opened; the silence has ended.")
    link = alert_link(settings, alert_type=alert_type, account_name=account_name, state="open")
    if link:
        lines.append(f"Open in the dashboard: {link}")
    return title_for(sev, alert_type, subj), "\n".join(lines)


def digest_message(settings: Settings, *, sev: str, alert_type: str, subj: str, repeats: int,
                   since: datetime | None, account_name: str | None, total: int) -> tuple[str, str]:
    tz = _tz(settings)
    times = "time" if repeats == 1 else "times"
    lines = [f"Repeated {repeats} {times} since {_fmt(since, tz, with_date=False)} (still open; {total} in all).",
             "Acknowledge it on the System Alerts page to stop these digests."]
    link = alert_link(settings, alert_type=alert_type, account_name=account_name, state="open")
    if link:
        lines.append(f"Open in the dashboard: {link}")
    return f"{title_for(sev, alert_type, subj)} — repeated {repeats} {times}", "\n".join(lines)


def resolved_message(settings: Settings, *, sev: str, alert_type: str, subj: str, resolver: str,
                     opened: datetime | None, now: datetime, total: int, account_name: str | None) -> tuple[str, str]:
    tz = _tz(settings)
    lines = [f"Resolved by {resolver} at {_fmt(now, tz)}."]
    if opened is not None:
        lines.append(f"Open for {fmt_duration((now - opened).total_seconds())}; {total} occurrence{'s' if total != 1 else ''}.")
    link = alert_link(settings, alert_type=alert_type, account_name=account_name, state="resolved")
    if link:
        lines.append(f"In the dashboard: {link}")
    return f"[RESOLVED] {title_for(sev, alert_type, subj)}", "\n".join(lines)
