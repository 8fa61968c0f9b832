"""The page registry: one place that app.py and the guard's fallback menu read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.settings import PROJECT_ROOT


@dataclass(frozen=True)
class PageSpec:
    section: str
    path: str  # relative to the project root; the URL is the file's stem ("/agent_status")
    title: str
    icon: str
    default: bool = False


PAGES = (
    PageSpec("Monitor", "pages/overview.py", "Overview", ":material/dashboard:", default=True),
    PageSpec("Monitor", "pages/agent_status.py", "Agent Status", ":material/monitor_heart:"),
    PageSpec("Monitor", "pages/queue_monitor.py", "Queue Monitor", ":material/queue:"),
    PageSpec("Monitor", "pages/system_alerts.py", "System Alerts", ":material/notifications_active:"),
    PageSpec("Monitor", "pages/notifications.py", "Notifications", ":material/campaign:"),
    PageSpec("Analyze", "pages/activity_feed.py", "Activity Feed", ":material/timeline:"),
    PageSpec("Analyze", "pages/metrics.py", "Metrics", ":material/insights:"),
    PageSpec("Interact", "pages/oversight_chat.py", "Oversight Chat", ":material/forum:"),
)


def existing_pages() -> list[PageSpec]:
    """Only pages whose file exists are registered: no placeholders in the menu."""
    pages = [p for p in PAGES if (PROJECT_ROOT / p.path).is_file()]
    if pages and not any(p.default for p in pages):
        first = pages[0]
        pages[0] = PageSpec(first.section, first.path, first.title, first.icon, default=True)
    return pages


def page_file(path: str) -> Path:
    return PROJECT_ROOT / path
