"""Where alert notifications go: ALERT_NOTIFY_URLS (and the per-severity lists) as routes, each with a
label that names its scheme and host but never a secret, and the scrubbing of those secrets from any text
(Apprise's own log lines included).
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from lib.alerts.store import SEVERITIES
from lib.core.settings import Settings


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    id: str  # stable, secret-free: what the outbox stores
    url: str = field(repr=False)  # the Apprise URL: a secret, never logged or shown
    severities: tuple[str, ...]
    label: str  # masked, safe to show and log
    valid: bool = True
    problem: str | None = None

    def takes(self, sev: str) -> bool:
        return sev in self.severities


def split_urls(value: str | None) -> list[str]:
    """Apprise URLs separated by whitespace and/or commas."""
    return [u for u in re.split(r"[\s,]+", value or "") if u]


def route_id(url: str) -> str:
    return "r" + hashlib.sha256(url.encode()).hexdigest()[:10]


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")


_DNS_NAME = re.compile(r"^(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")


def _label_host(url: str) -> str | None:
    """The URL's host when it is one: an IP address, localhost or a dotted DNS name. Many Apprise
    services put a credential where a host would be (ntfy://<topic>, tgram://<bot token>,
    discord://<webhook id>/...): those are not host names and are never shown."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    if host == "localhost":
        return host
    try:
        ip = ipaddress.ip_address(host)
        return f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        pass
    return host if _DNS_NAME.match(host) else None


def route_label(url: str, rid: str | None = None) -> str:
    """How a route is shown, stored (notification_outbox.route_label, audit details) and logged:
    scheme + host + a short fingerprint (the first digits of its route id), e.g.
    `jsons://hooks.example.com #3f9a1c`. Never a user name, password, path segment, query value or
    ntfy topic: Apprise's privacy mode keeps paths and topics, and those often are the credential."""
    head, sep, _ = url.partition("://")
    scheme = head.strip().lower() if sep and _SCHEME.match(head.strip().lower()) else "?"
    fingerprint = (rid or route_id(url)).lstrip("r")[:6]
    return f"{scheme}://{_label_host(url) or '…'} #{fingerprint}"


def mask_notify_url(url: str) -> str:
    """The route's label (route_label): the one way a notification URL is ever shown."""
    return route_label(url)


def understood(url: str) -> bool:
    """Apprise can build a notifier from this URL."""
    try:
        import apprise  # lazy: Apprise loads its plugins at import; only checking a URL needs it

        return apprise.Apprise.instantiate(url) is not None
    except Exception:  # noqa: BLE001 - a URL Apprise chokes on is not understood
        return False


def stored_label(label: str | None, rid: str | None) -> str | None:
    """A route label read back from notification_outbox, in today's form: rows written before the
    labels were cut to scheme + host may hold a path, a topic or a masked user name."""
    if not label or label.startswith("("):  # "(route no longer configured)"
        return label
    return route_label(label.split(" #", 1)[0], rid)


def _secret_parts(url: str) -> list[str]:
    """Pieces of a URL that may be secret, longest first (for scrubbing error texts)."""
    pieces = {url}
    try:
        parts = urlsplit(url)
        pieces.update(p for p in (parts.username, parts.password, parts.hostname) if p)
        pieces.update(seg for seg in parts.path.split("/") if seg)
        pieces.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True) if v)
    except ValueError:
        pass
    return sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True)


def scrub(text: str, route: Route | None) -> str:
    """Error text with the route's URL and its secret-looking pieces replaced by ***."""
    if route is None or not text:
        return text
    for piece in _secret_parts(route.url):
        if piece in ("127.0.0.1", "localhost"):
            continue
        text = text.replace(piece, "***")
    return text


def routes(settings: Settings) -> list[Route]:
    """The configured routes: ALERT_NOTIFY_URLS get every severity, ALERT_NOTIFY_URLS_<SEVERITY> one
    more each. A URL listed twice is one route (a CRITICAL alert reaches it once)."""
    wanted: dict[str, set[str]] = {}
    for url in split_urls(settings.alert_notify_urls):
        wanted.setdefault(url, set()).update(SEVERITIES)
    for sev in SEVERITIES:
        for url in split_urls(getattr(settings, f"alert_notify_urls_{sev.lower()}")):
            wanted.setdefault(url, set()).add(sev)
    out = []
    for url, sevs in wanted.items():
        label = route_label(url)
        valid = understood(url)
        out.append(Route(id=route_id(url), url=url, severities=tuple(s for s in SEVERITIES if s in sevs),
                         label=label, valid=valid,
                         problem=None if valid else "Apprise does not understand this URL (unknown scheme or bad syntax)"))
    return out


class _ScrubFilter(logging.Filter):
    """Replaces the routes' secret pieces in Apprise's own log records (they go to the worker's log)."""

    def __init__(self, route_list: list[Route]) -> None:
        super().__init__()
        self.route_list = route_list

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = text
        for route in self.route_list:
            clean = scrub(clean, route)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def scrub_apprise_logs(settings: Settings) -> None:
    """Install (once per set of routes) a filter on the `apprise` logger that masks route secrets."""
    logger = logging.getLogger("apprise")
    route_list = routes(settings)
    for f in list(logger.filters):
        if isinstance(f, _ScrubFilter):
            if [r.id for r in f.route_list] == [r.id for r in route_list]:
                return
            logger.removeFilter(f)
    logger.addFilter(_ScrubFilter(route_list))
