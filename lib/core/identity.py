"""Who is using the dashboard and what they may do (pure rules; lib/ui reads the request).

Roles: `viewer` sees every page and exports CSVs; `operator` may also retry queue rows, resolve
alerts and ask the Oversight Brain. Unknown users are viewers. In local mode (no identity
provider configured) with no operator list, the one local user is an operator.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lib.core.text import md_escape  # refusal messages are shown as Markdown: what the request carried is escaped

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


def token_expired(claims: dict[str, Any], now: datetime) -> bool:
    """True when the ID token's `exp` has passed or is missing/invalid (fail closed)."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return True
    return exp <= now.timestamp()


def groups_from_claim(value: object) -> tuple[str, ...]:
    """OIDC groups claims come as a list, or as one comma/space separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(g for g in value.replace(",", " ").split() if g)
    if isinstance(value, (list, tuple)):
        return tuple(str(g) for g in value)
    return ()


# -- who may reach the port: the bind address, the proxy's addresses, the request's client ----------

class IdentityRefused(Exception):
    """The request cannot be given an identity; str(exc) is the message shown instead of the app.
    It never contains a secret (only setting names, addresses and header names)."""


def is_loopback(address: str | None) -> bool:
    """True when a server bound to `address` can only be reached from this machine.

    Streamlit binds every interface when server.address is unset, so None/"" is not loopback."""
    host = (address or "").strip().strip("[]").lower()
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def parse_proxy_ips(value: str | Iterable[str] | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """TRUSTED_PROXY_IPS: comma-separated addresses or CIDR networks. An entry that is neither raises
    ValueError (a typo must not silently trust nobody or everybody)."""
    out = []
    for item in split_list(value):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"TRUSTED_PROXY_IPS: {item!r} is not an IP address or network") from exc
    return tuple(out)


def client_is_trusted(client_ip: str | None, trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not client_ip:
        return False
    try:
        ip = ipaddress.ip_address(client_ip.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in trusted)


def forwarded_trust_is_off(forwarded_allow_ips: str | None) -> bool:
    """True when the app server takes the client address from the connection only.

    Streamlit's server (uvicorn) replaces the client address with the X-Forwarded-For value on
    connections from FORWARDED_ALLOW_IPS, which defaults to 127.0.0.1 and ::1 when unset: then a
    caller on this machine chooses the address that TRUSTED_PROXY_IPS is checked against. Only an
    explicitly empty FORWARDED_ALLOW_IPS trusts no forwarder."""
    if forwarded_allow_ips is None:
        return False
    return not [item for item in forwarded_allow_ips.split(",") if item.strip()]


def header_identity(
    values: Iterable[str], *, header: str, bind_address: str | None, client_ip: str | None, trusted_proxy_ips: str,
    forwarded_allow_ips: str | None = None,
) -> str:
    """The user a sign-in proxy names in `header`, or IdentityRefused.

    * Off loopback the header is trusted only from TRUSTED_PROXY_IPS: with the list empty nothing is
      served, whoever asks; with it set, only requests whose client address is listed.
    * On loopback with TRUSTED_PROXY_IPS set, the list is enforced all the same.
    * With TRUSTED_PROXY_IPS set, nothing is served until FORWARDED_ALLOW_IPS (the environment
      variable the app server reads) is set to an empty value: the address checked must be the
      connection's, not one the caller wrote into X-Forwarded-For.
    * A header that arrives more than once (or two values folded into one with a comma) is refused.
    """
    proxies = parse_proxy_ips(trusted_proxy_ips)
    if proxies and not forwarded_trust_is_off(forwarded_allow_ips):
        raise IdentityRefused(
            "Header identity is switched off: TRUSTED_PROXY_IPS is set, but the app server takes the client "
            "address from X-Forwarded-For on connections from "
            f"{'127.0.0.1 and ::1' if forwarded_allow_ips is None else 'FORWARDED_ALLOW_IPS'}, so a caller could "
            "choose the address that is checked. Start the app with FORWARDED_ALLOW_IPS set to an empty value "
            "(FORWARDED_ALLOW_IPS=) so that the address checked is the connection's own."
        )
    if not is_loopback(bind_address) and not proxies:
        raise IdentityRefused(
            f"Header identity is switched off: the server listens on {bind_address or 'every interface'}, "
            f"not only on loopback, and TRUSTED_PROXY_IPS is empty, so anyone who can reach the port could "
            f"send a forged {header} header. List the sign-in proxy's addresses in TRUSTED_PROXY_IPS, or "
            "bind the server to 127.0.0.1 (--server.address 127.0.0.1)."
        )
    if proxies and not client_is_trusted(client_ip, proxies):
        raise IdentityRefused(
            f"This request did not come through the sign-in proxy (client address {md_escape(client_ip or 'unknown')} "
            "is not in TRUSTED_PROXY_IPS). Open the dashboard through its sign-in proxy."
        )
    values = [v for v in values if v is not None]
    if len(values) > 1 or any("," in v for v in values):
        raise IdentityRefused(f"The request carries the {header} header more than once: refused.")
    name = values[0].strip() if values else ""
    if not name:
        raise IdentityRefused(
            f"No signed-in user: the request carries no {header} header. Open the dashboard through its sign-in proxy."
        )
    return name


def local_role(user: str, *, bind_address: str | None, **lists: str) -> str:
    """Local mode: the local user is an operator only while the server is bound to loopback."""
    if not is_loopback(bind_address):
        return VIEWER
    return role_for(user, local_mode=True, **lists)


# -- OpenID Connect ----------------------------------------------------------------------------------

AUTH_TOP_KEYS = ("redirect_uri", "cookie_secret")
AUTH_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


def check_auth_table(auth: Any) -> None:
    """A usable secrets [auth] table, or IdentityRefused naming the missing keys (never a value).

    Streamlit wants redirect_uri and cookie_secret at the top and client_id, client_secret and
    server_metadata_url either at the top (the default provider) or in an [auth.<provider>] table."""
    if not isinstance(auth, Mapping):
        raise IdentityRefused("The [auth] entry of secrets.toml is not a table: sign-in is switched off.")
    missing = [k for k in AUTH_TOP_KEYS if not auth.get(k)]
    providers = [auth] + [v for v in auth.values() if isinstance(v, Mapping)]
    if not any(all(p.get(k) for k in AUTH_PROVIDER_KEYS) for p in providers):
        missing += [k for k in AUTH_PROVIDER_KEYS if not auth.get(k)]
    if missing:
        raise IdentityRefused(
            "The [auth] table in secrets.toml is incomplete (missing: " + ", ".join(missing) + "): sign-in is "
            "switched off and nothing is shown until it is fixed."
        )


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def oidc_identity(claims: Mapping[str, Any], *, verified_claim: str = "email_verified") -> str:
    """The user's email from the ID token, only when the provider says it is verified.

    No fallback to preferred_username or sub: those are not emails and roles are given by email."""
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        raise IdentityRefused("Your sign-in carries no email address, so the dashboard cannot tell who you are.")
    if not _true(claims.get(verified_claim)):
        raise IdentityRefused(
            f"Your identity provider has not verified the email {md_escape(email.strip())} (claim {verified_claim!r} is not "
            "true). Verify it with the provider, or ask the administrator."
        )
    return email.strip()
