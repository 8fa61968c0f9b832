"""Who is using the dashboard and what they may do (pure rules; lib/ui reads the request).

Roles: `viewer` sees every page and exports CSVs; `operator` may also retry queue rows, resolve
alerts and ask the Oversight Brain. Unknown users are viewers. In local mode (no identity
provider configured) with no operator list, the one local user is an operator.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

VIEWER = "viewer"
OPERATOR = "operator"


class PermissionDenied(PermissionError):
    """A write was attempted by someone who may not write."""


@dataclass(frozen=True)
class Actor:
    name: str  # what audit_log.user_id and dashboard_user_id record: the email where there is one
    role: str = VIEWER
    provider: str = "local"  # "local", "header" or "oidc"

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR


def require_operator(actor: Actor, action: str) -> None:
    """Defence in depth: every lib write calls this, whatever the page showed."""
    if not isinstance(actor, Actor) or not actor.is_operator:
        who = getattr(actor, "name", actor)
        raise PermissionDenied(f"{who} may not {action}: operators only")


def split_list(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """'a@x.com, b@y.com' -> ('a@x.com', 'b@y.com'), lower-cased, empties dropped."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(i.strip().lower() for i in items if i and str(i).strip())


def role_for(
    user: str,
    groups: Iterable[str] = (),
    *,
    operator_emails: str = "",
    operator_domains: str = "",
    operator_groups: str = "",
    local_mode: bool = False,
) -> str:
    emails, domains, wanted_groups = split_list(operator_emails), split_list(operator_domains), split_list(operator_groups)
    if local_mode and not (emails or domains or wanted_groups):
        return OPERATOR
    user = (user or "").strip().lower()
    if user and user in emails:
        return OPERATOR
    if "@" in user and user.rsplit("@", 1)[1] in {d.lstrip("@") for d in domains}:
        return OPERATOR
    if wanted_groups and set(split_list(list(groups))) & set(wanted_groups):
        return OPERATOR
    return VIEWER


def token_expired(claims: dict, now: datetime) -> bool:
    """True when the ID token's `exp` has passed or is missing/invalid (fail closed)."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return True
    return exp <= now.timestamp()


def groups_from_claim(value) -> tuple[str, ...]:
    """OIDC groups claims come as a list, or as one comma/space separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(g for g in value.replace(",", " ").split() if g)
    if isinstance(value, (list, tuple)):
        return tuple(str(g) for g in value)
    return ()
