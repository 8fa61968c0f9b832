"""The worker's periodic checks besides the queue: the Graph API version's end of life, and access tokens
that expire soon (debug_token), each kept as one open alert.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.alerts.store import TOKEN_EXPIRING, auto_resolve, open_or_update_alert
from lib.core.redact import redact
from lib.core.schema import graph_usage as gu
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.settings import Settings, graph_version_warning
from lib.core.timeutil import iso
from lib.instagram import usage as graph_usage
from lib.instagram.client import AccountCreds, GraphClient, InvalidPayload
from lib.instagram.errors import GraphError

log = logging.getLogger("worker")  # these run in the worker: its log



def check_graph_version(engine: Engine, settings: Settings, *, now: datetime) -> str | None:
    """A warning (logged, and one graph_api_version alert kept open) while the configured Graph
    version is within its last days; the alert resolves itself once the version is changed."""
    warning = graph_version_warning(settings.graph_url, now.date())
    with engine.begin() as conn:
        if warning:
            open_or_update_alert(conn, alert_type=GRAPH_VERSION_ALERT, now=now, message=warning,
                                 details={"source": "worker"})
        else:
            auto_resolve(conn, alert_type=GRAPH_VERSION_ALERT, now=now)
    if warning:
        log.warning(warning)
    return warning


GRAPH_VERSION_ALERT = "graph_api_version"


TOKEN_CHECK_EVERY = timedelta(hours=6)


TOKEN_CHECKS_PER_TICK = 10


def check_tokens(engine: Engine, settings: Settings, client: GraphClient, *, now: datetime) -> int:
    """With META_APP_TOKEN set: read each connected account's token expiry with debug_token (at
    most every 6 h per account), record it in graph_usage, and keep one token_expiring alert per
    account open while the token expires within TOKEN_EXPIRY_WARN_DAYS (resolved once it is
    refreshed). Without the setting nothing is called: the expiry is unknown."""
    if not settings.meta_app_token:
        return 0
    due_before = now - TOKEN_CHECK_EVERY
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(accounts.c.id, accounts.c.instagram_business_id, accounts.c.access_token, accounts.c.username)
            .select_from(accounts.outerjoin(gu, gu.c.business_account_id == accounts.c.id))
            .where(accounts.c.is_connected.is_not(False), accounts.c.access_token.is_not(None),
                   sa.or_(gu.c.token_checked_at.is_(None), gu.c.token_checked_at < due_before))
            .limit(TOKEN_CHECKS_PER_TICK)
        ).all()
    checked = 0
    for a in rows:
        acct = AccountCreds(a.id, a.instagram_business_id, a.access_token, a.username)
        try:
            data = client.debug_token(acct, settings.meta_app_token)
        except (GraphError, InvalidPayload) as exc:
            log.warning("debug_token for account %s failed: %s", a.username or a.id,
                        redact(str(exc), secrets=(a.access_token, settings.meta_app_token)))
            continue
        raw = data.get("expires_at")
        expires = datetime.fromtimestamp(int(raw), tz=now.tzinfo) if isinstance(raw, (int, float)) and raw > 0 else None
        with engine.begin() as conn:
            graph_usage.record_token(conn, account_id=a.id, expires_at=expires, now=now)
            warn = timedelta(days=settings.token_expiry_warn_days)
            if expires is not None and expires - now <= warn:
                days = max(0, round((expires - now).total_seconds() / 86400))
                open_or_update_alert(conn, alert_type=TOKEN_EXPIRING, business_account_id=a.id, now=now,
                                     message=f"The Instagram access token of {a.username or a.id} expires "
                                             f"{'in ' + str(days) + ' days' if days else 'within a day'} "
                                             f"({iso(expires)}); reconnect the account to renew it",
                                     details={"expires_at": iso(expires), "source": "worker"})
            else:
                auto_resolve(conn, alert_type=TOKEN_EXPIRING, business_account_id=a.id, now=now)
        checked += 1
    return checked
