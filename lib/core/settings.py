"""One frozen Settings object: environment variables first, then secrets.toml, then defaults.

Streamlit's own `st.secrets` reads the same `.streamlit/secrets.toml`; we read it with tomllib
so the worker and the tests get the same answer without importing streamlit (and without
`st.secrets` raising when no file exists).
"""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

from lib.core.schema import ACTION_TYPES
from lib.core.timeutil import fmt_duration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "data" / "dashboard.sqlite"
SECRETS_FILES = (PROJECT_ROOT / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml")


# Graph API versions and the day each stops working, as Meta's changelog lists them ("Available
# Until"; None: not announced yet). The default is the newest one. One home for this table: the
# worker warns (log and one alert) when the configured version is within GRAPH_VERSION_WARN_DAYS.
GRAPH_VERSIONS: dict[str, date | None] = {
    "v26.0": None,
    "v25.0": date(2028, 7, 29),
    "v24.0": date(2028, 2, 18),
    "v23.0": date(2027, 10, 8),
    "v22.0": date(2027, 5, 20),
    "v21.0": date(2027, 1, 21),
    "v20.0": date(2026, 9, 24),
    "v19.0": date(2026, 5, 21),
}
GRAPH_VERSION = "v26.0"
GRAPH_VERSION_WARN_DAYS = 60
# Meta: Instagram API with Facebook Login is served by graph.facebook.com, with Instagram Login
# by graph.instagram.com (IG Container reference, "Host URL").
GRAPH_HOSTS = {
    "facebook_login": f"https://graph.facebook.com/{GRAPH_VERSION}",
    "instagram_login": f"https://graph.instagram.com/{GRAPH_VERSION}",
}


def graph_version_of(url: str) -> str | None:
    """'v25.0' from a Graph base URL such as https://graph.facebook.com/v25.0 (None without one)."""
    m = re.search(r"/(v\d+\.\d+)(?:/|$)", url or "")
    return m.group(1) if m else None


def graph_version_warning(url: str, today: date) -> str | None:
    """A warning when the URL's Graph version ends within GRAPH_VERSION_WARN_DAYS (or has ended)."""
    version = graph_version_of(url)
    end = GRAPH_VERSIONS.get(version or "")
    if end is None:
        return None
    left = (end - today).days
    if left > GRAPH_VERSION_WARN_DAYS:
        return None
    when = f"ended on {end:%B %d, %Y}" if left < 0 else f"is available until {end:%B %d, %Y} ({left} days)"
    return (f"Graph API {version} {when}: set INSTAGRAM_GRAPH_URL to {GRAPH_VERSION} "
            f"(or unset it to use the default, {GRAPH_VERSION})")


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    # Each field's env var is its name in upper case (database_url -> DATABASE_URL).
    database_url: str = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    oversight_api_url: str = "http://127.0.0.1:8765"
    oversight_chat_path: str = "/api/instagram/oversight/chat"
    instagram_graph_url: str = ""  # empty: the host that INSTAGRAM_API names (see graph_url)
    instagram_api: str = "facebook_login"  # facebook_login | instagram_login: whose token the accounts hold
    graph_connect_timeout_s: float = 5.0
    graph_read_timeout_s: float = 30.0
    display_timezone: str = "UTC"
    poll_interval_s: int = 30  # spec POLL_INTERVAL_MS
    max_stream_duration_s: int = 300  # spec MAX_STREAM_DURATION_MS
    max_retries: int = 5  # spec MAX_RETRIES
    batch_size: int = 20  # spec BATCH_SIZE
    worker_cron: str = "*/5 * * * *"  # spec DEFAULT_CRON
    processing_lease_s: int = 600  # a row processing longer is taken back (the worker died mid-attempt)
    watchdog_interval_s: int = 30
    local_user: str = "local"
    # Access control (README "Identity and roles"); lists are comma-separated.
    trusted_user_header: str = ""  # e.g. X-Forwarded-Email when behind oauth2-proxy
    trusted_groups_header: str = ""  # e.g. X-Forwarded-Groups
    sign_out_url: str = "/oauth2/sign_out"  # the proxy's sign-out, shown in header mode
    operator_emails: str = ""
    operator_domains: str = ""
    operator_groups: str = ""
    groups_claim: str = "groups"  # OIDC claim that lists the user's groups
    # docs/security.md: header identity off loopback needs the proxy's addresses (IPs or CIDRs)
    trusted_proxy_ips: str = ""
    # OIDC: the email is the identity only when this claim is true (providers without
    # email_verified name their own claim here)
    oidc_email_verified_claim: str = "email_verified"
    # Oversight chat client
    oversight_connect_timeout_s: float = 5.0
    oversight_read_timeout_s: float = 60.0  # longest silence (no token, no ping) before we call the stream dropped
    oversight_max_question_chars: int = 2000  # the oversight backend accepts questions up to 2,000 characters
    # Account health: debug_token needs an app token ("<app id>|<app secret>"); never shown
    meta_app_token: str = ""
    token_expiry_warn_days: int = 7  # a token_expiring alert this many days before the token expires
    # Instagram content publishing (docs/worker.md)
    container_timeout_s: int = 1800  # a container still IN_PROGRESS this long after its creation is a failed attempt
    container_check_interval_s: int = 60  # a waiting row reads its container's status about once a minute
    # Alert notifications (docs/notifications.md): Apprise URLs carry secrets, so never in repr/logs
    alert_notify_urls: str = field(default="", repr=False)  # every alert
    alert_notify_urls_critical: str = field(default="", repr=False)  # extra routes for one severity
    alert_notify_urls_error: str = field(default="", repr=False)
    alert_notify_urls_warning: str = field(default="", repr=False)
    alert_repeat_interval_s: int = 3600  # at most one digest of repeats per alert per interval
    dashboard_url: str = ""  # public base URL, for links in messages
    alert_notify_timeout_s: float = 10.0  # one delivery (Apprise call) at most
    alert_notify_max_attempts: int = 12  # then the delivery is given up (shown on the page)
    alert_notify_interval_s: float = 15.0  # the worker service delivers this often between ticks
    # Analysts (Metrics anomaly flags, weekly digest; docs/metrics.md)
    anomaly_threshold: float = 3.5  # |robust z| beyond this flags a day (median/MAD of the previous 28 days)
    anomaly_alerts: str = "off"  # on: flags are raised as metric_anomaly alerts (the worker, and operators by hand)
    digest_cron: str = "0 8 * * 1"  # the weekly digest: Monday 08:00 UTC
    digest_scope: str = "all"  # all: one digest for every account; per_account: one digest per account
    # The agents' HTTP API (python -m worker.api, docs/api.md); API_TOKENS holds secrets: never in repr/logs
    api_tokens: str = field(default="", repr=False)  # name:role:token or name:role:sha256:<hex>, comma/space separated
    api_port: int = 8600
    api_address: str = "127.0.0.1"
    api_rate_limit_per_min: int = 600  # requests per minute per caller, then 429 with Retry-After
    api_max_body_bytes: int = 65536  # a bigger request body is refused with 413 before it is parsed
    worker_poll_s: float = 5.0  # the worker service looks for newly due rows this often between ticks; 0: off
    # Review before sending (docs/review.md)
    review_actions: str = ""  # action types held for a person's approval unless a policy says otherwise
    review_wait_alert_s: int = 3600  # a review_waiting alert when a row waits longer than this; 0: never
    # Service levels (docs/incidents.md): action_type:percent:duration, comma-separated (minutes without a unit)
    slo_targets: str = "reply_comment:95:15m, reply_dm:95:15m, send_dm:95:60m, publish_post:95:60m, repost_ugc:95:60m"
    slo_window_days: int = 7  # a target is met or missed over this many days
    slo_burn_rate: float = 14.4  # an slo_burn alert when the last hour spends the budget this much faster than even

    @property
    def anomaly_alerts_on(self) -> bool:
        return self.anomaly_alerts.strip().lower() in ("1", "on", "true", "yes")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def graph_url(self) -> str:
        """INSTAGRAM_GRAPH_URL when set, else the Graph host of INSTAGRAM_API (version included)."""
        return self.instagram_graph_url or GRAPH_HOSTS[self.instagram_api]

    @property
    def masked_database_url(self) -> str:
        return mask_url(self.database_url)


def normalize_database_url(url: str) -> str:
    """Accept the URLs Supabase and older tools print and pick the psycopg2 driver.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which we do not install.
    """
    url = url.strip()
    if not url:
        raise SettingsError("DATABASE_URL is empty")
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg2://" + url[len(prefix):]
            break
    if not (url.startswith("postgresql+") or url.startswith("sqlite")):
        raise SettingsError(
            f"DATABASE_URL must start with postgresql://, postgres:// or sqlite:// (got {mask_url(url)!r})"
        )
    if mask_url(url) == "<unparseable URL>":  # SQLAlchemy's own message would quote the whole URL
        raise SettingsError("DATABASE_URL cannot be parsed as an SQLAlchemy URL (not shown: it may hold a password)")
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to show and log.

    SQLAlchemy's own parser decides where the password ends (it is what connects, so the two
    cannot disagree): a password holding '#', '/', '?' or '@' is masked whole. A URL it cannot
    parse is not shown at all."""
    from sqlalchemy.engine import make_url  # lazy: settings stay cheap to import
    from sqlalchemy.exc import ArgumentError  # lazy: as above

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return "<unparseable URL>"
    if url.count("@") > 1:  # a raw '@' in the password: the parser may cut it anywhere, show no userinfo
        return f"{parsed.drivername}://***@{url.rsplit('@', 1)[1]}"
    return parsed.render_as_string(hide_password=True)


def read_secrets_files(paths: Sequence[Path] = SECRETS_FILES) -> dict[str, Any]:
    """Merged top-level keys of the secrets files that exist (project file wins)."""
    merged: dict[str, Any] = {}
    for path in reversed(paths):
        if path.is_file():
            try:
                merged.update(tomllib.loads(path.read_text()))
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path} is not valid TOML: {exc}") from exc
            except (OSError, UnicodeDecodeError) as exc:  # unreadable: fail closed, name the file only
                raise SettingsError(f"{path} cannot be read ({type(exc).__name__})") from exc
    return merged


def load_settings(env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> Settings:
    env = os.environ if env is None else env
    secrets = read_secrets_files() if secrets is None else secrets
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.name.upper()
        raw = env.get(name)
        if raw is None or raw == "":
            raw = secrets.get(name, secrets.get(f.name))
        if raw is None:
            continue
        values[f.name] = _coerce(f.name, str(f.type), raw)
    settings = Settings(**values)
    if settings.instagram_api not in GRAPH_HOSTS:
        raise SettingsError(f"INSTAGRAM_API must be one of {', '.join(GRAPH_HOSTS)} (got {settings.instagram_api!r})")
    if settings.anomaly_threshold <= 0:
        raise SettingsError(f"ANOMALY_THRESHOLD must be a positive number (got {settings.anomaly_threshold!r})")
    if settings.digest_scope not in ("all", "per_account"):
        raise SettingsError(f"DIGEST_SCOPE must be all or per_account (got {settings.digest_scope!r})")
    if settings.worker_poll_s < 0:
        raise SettingsError(f"WORKER_POLL_S must be 0 (off) or a positive number of seconds (got {settings.worker_poll_s!r})")
    if settings.api_rate_limit_per_min < 1 or settings.api_max_body_bytes < 1024:
        raise SettingsError("API_RATE_LIMIT_PER_MIN must be at least 1 and API_MAX_BODY_BYTES at least 1024")
    pass

    try:
        parse_targets(settings.slo_targets)
    except ValueError as exc:
        raise SettingsError(f"SLO_TARGETS: {exc}") from exc
    if settings.slo_window_days < 1 or settings.slo_burn_rate <= 0:
        raise SettingsError("SLO_WINDOW_DAYS must be at least 1 and SLO_BURN_RATE positive")
    return replace(settings, database_url=normalize_database_url(settings.database_url))


def _coerce(name: str, type_name: str, raw: Any) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name.upper()} must be a number (got {raw!r})") from exc
    return str(raw)


_TARGET = re.compile(r"^\s*([a-z_]+)\s*:\s*(\d+(?:\.\d+)?)\s*%?\s*:\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


_UNITS = {"s": 1, "m": 60, "h": 3600, None: 60}


@dataclass(frozen=True)
class SloTarget:
    action_type: str
    objective: float  # 0-1: the share of rows that must be sent within threshold_s
    threshold_s: int

    @property
    def budget(self) -> float:
        return 1.0 - self.objective

    def describe(self) -> str:
        return f"{self.objective * 100:g} % of {self.action_type} within {fmt_duration(self.threshold_s)}"


def parse_targets(text: str | None) -> list[SloTarget]:
    """'reply_dm:95:15m, reply_comment:99:30m' -> targets (minutes when no unit). ValueError names the bad entry."""
    out = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        m = _TARGET.match(part)
        if not m:
            raise ValueError(f"{part.strip()!r} is not action_type:percent:duration (e.g. reply_dm:95:15m)")
        action, pct, amount, unit = m.groups()
        if action not in ACTION_TYPES:
            raise ValueError(f"{action!r} is not an action type ({', '.join(ACTION_TYPES)})")
        if not 0 < float(pct) < 100:
            raise ValueError(f"{part.strip()!r}: the percentage must be above 0 and below 100")
        seconds = round(float(amount) * _UNITS[unit])
        if seconds <= 0:
            raise ValueError(f"{part.strip()!r}: the duration must be positive")
        out.append(SloTarget(action, float(pct) / 100, seconds))
    if len({t.action_type for t in out}) != len(out):
        raise ValueError("one target per action type")
    return out
