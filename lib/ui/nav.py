"""The page registry and the one menu every page draws (sections, titles, icons).

Streamlit's own menu is switched off (`client.showSidebarNavigation = false`,
`st.navigation(position="hidden")`): with a pages/ folder, a deep link that is the first request
of a fresh server runs the page in Streamlit's old pages-directory mode, whose menu is the list
of files ("app, activity feed, ..."). The guard draws this menu instead, in both modes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from lib.core.settings import PROJECT_ROOT

ENTRYPOINT = "app.py"
MENU_KEY = "nav-menu"  # the menu's container: .st-key-nav-menu in the browser


@dataclass(frozen=True)
class PageSpec:
    section: str
    path: str  # relative to the project root; the URL is the file's stem ("/agent_status")
    title: str
    icon: str
    default: bool = False

    @property
    def url_path(self) -> str:
        """The page's URL path: "" for the default page (it is served at "/")."""
        return "" if self.default else Path(self.path).stem


PAGES = (
    PageSpec("Monitor", "pages/overview.py", "Overview", ":material/dashboard:", default=True),
    PageSpec("Monitor", "pages/agent_status.py", "Agent Status", ":material/monitor_heart:"),
    PageSpec("Monitor", "pages/queue_monitor.py", "Queue Monitor", ":material/queue:"),
    PageSpec("Monitor", "pages/review.py", "Review", ":material/fact_check:"),
    PageSpec("Monitor", "pages/system_alerts.py", "System Alerts", ":material/notifications_active:"),
    PageSpec("Monitor", "pages/accounts.py", "Accounts", ":material/manage_accounts:"),
    PageSpec("Monitor", "pages/notifications.py", "Notifications", ":material/campaign:"),
    PageSpec("Monitor", "pages/incidents.py", "Incidents", ":material/crisis_alert:"),
    PageSpec("Analyze", "pages/activity_feed.py", "Activity Feed", ":material/timeline:"),
    PageSpec("Analyze", "pages/metrics.py", "Metrics", ":material/insights:"),
    PageSpec("Analyze", "pages/posts.py", "Posts", ":material/photo_library:"),
    PageSpec("Analyze", "pages/digest.py", "Weekly digest", ":material/mark_email_read:"),
    PageSpec("Interact", "pages/oversight_chat.py", "Oversight Chat", ":material/forum:"),
)


def existing_pages() -> list[PageSpec]:
    """Only pages whose file exists are registered: no placeholders in the menu."""
    pages = [p for p in PAGES if (PROJECT_ROOT / p.path).is_file()]
    if pages and not any(p.default for p in pages):
        first = pages[0]
        pages[0] = PageSpec(first.section, first.path, first.title, first.icon, default=True)
    return pages


def sections(pages: list[PageSpec] | None = None) -> dict[str, list[PageSpec]]:
    """Section name -> its pages, in registry order."""
    out: dict[str, list[PageSpec]] = {}
    for spec in existing_pages() if pages is None else pages:
        out.setdefault(spec.section, []).append(spec)
    return out


def page_file(path: str) -> Path:
    return PROJECT_ROOT / path


def _pages_directory_mode() -> bool:
    """True while this run is in Streamlit's pages-directory mode (app.py has not registered the
    pages yet): then the entry point itself is one of the registered pages."""
    ctx = get_script_run_ctx()
    if ctx is None:
        return False
    entry = os.path.realpath(PROJECT_ROOT / ENTRYPOINT)
    return any(p.get("script_path") == entry for p in ctx.pages_manager.get_pages().values())


def _link_target(spec: PageSpec, directory_mode: bool) -> str:
    # In pages-directory mode pages/overview.py would be served at /overview; the entry point is
    # served at "/" and, once run, registers the pages and shows the default page.
    return ENTRYPOINT if spec.default and directory_mode else spec.path


def menu_slot():
    """The menu's place at the top of the sidebar; call first, fill it with show_menu last."""
    return st.sidebar.container(key=MENU_KEY, gap=None)


def show_menu(slot, query_params: dict[str, str] | None = None) -> None:
    """The sectioned menu; the current page is highlighted. `query_params` ride on every link
    (the sidebar's ?account=), so a click and a link opened in a new tab keep the scope."""
    groups = sections()
    if sum(len(p) for p in groups.values()) < 2:
        return
    directory_mode = _pages_directory_mode()
    with slot:
        for section, pages in groups.items():
            st.caption(section)
            for spec in pages:
                st.page_link(_link_target(spec, directory_mode), label=spec.title, icon=spec.icon, width="stretch",
                             query_params=query_params or None)
        st.divider()
