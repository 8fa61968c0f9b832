"""Identity from the configured provider: OIDC (st.login), a trusted proxy header, or local mode.

OIDC applies when secrets.toml has an [auth] section; else a trusted header when
TRUSTED_USER_HEADER is set; else local mode (one local user, an operator only while the server
listens on loopback). Everything fails closed: unreadable secrets, a partial [auth] table, an
unverified email, a header off loopback without TRUSTED_PROXY_IPS, a repeated header
(docs/security.md). Roles come from lib.core.identity.role_for.
"""
from __future__ import annotations

import os

import streamlit as st

from lib.core.identity import (
    VIEWER,
    Actor,
    IdentityRefused,
    check_auth_table,
    groups_from_claim,
    header_identity,
    local_role,
    oidc_identity,
    role_for,
    token_expired,
)
from lib.core.settings import Settings
from lib.core.timeutil import utcnow

OPERATORS_ONLY = "Operators only: your role is viewer."  # the help of every write a viewer sees disabled


class _SecretsUnreadable(Exception):
    pass


def _auth_table():
    """secrets [auth] (None when there is no secrets file or no [auth] table).

    Only a missing file means "no OIDC": any other failure to read secrets fails closed."""
    try:
        if "auth" not in st.secrets:
            return None
        return st.secrets["auth"]
    except FileNotFoundError as exc:  # StreamlitSecretNotFoundError: no file at all, or one that does not parse
        if getattr(exc, "error_id", None) == "no-secrets-found":
            return None
        raise _SecretsUnreadable(getattr(exc, "error_id", None) or type(exc).__name__) from exc
    except Exception as exc:  # unreadable or invalid secrets: never fall back to header or local mode
        raise _SecretsUnreadable(type(exc).__name__) from exc


def oidc_configured() -> bool:
    try:
        return _auth_table() is not None
    except _SecretsUnreadable:
        return True  # fail closed: authenticate() refuses with a message


def _role(settings: Settings, user: str, groups=(), local_mode: bool = False) -> str:
    return role_for(
        user,
        groups,
        operator_emails=settings.operator_emails,
        operator_domains=settings.operator_domains,
        operator_groups=settings.operator_groups,
        local_mode=local_mode,
    )


def _lists(settings: Settings) -> dict[str, str]:
    return dict(operator_emails=settings.operator_emails, operator_domains=settings.operator_domains,
                operator_groups=settings.operator_groups)


def bind_address() -> str | None:
    """The effective server.address (config file, CLI flag or STREAMLIT_SERVER_ADDRESS)."""
    return st.get_option("server.address")


class _NeedsSignIn(Exception):
    def __init__(self, expired: bool):
        self.expired = expired


def resolve_actor(settings: Settings) -> Actor:
    """The current request's Actor without drawing anything; raises IdentityRefused or _NeedsSignIn.

    Called by the page guard and again at the moment of every write (current_actor)."""
    try:
        auth = _auth_table()
    except _SecretsUnreadable as exc:
        raise IdentityRefused(
            f"The secrets file cannot be read ({exc}): sign-in is switched off and nothing is shown until it is fixed."
        ) from exc
    if auth is not None:
        check_auth_table(auth)
        return _oidc_actor(settings)
    if settings.trusted_user_header:
        return _header_actor(settings)
    return Actor(settings.local_user, local_role(settings.local_user, bind_address=bind_address(), **_lists(settings)),
                 "local")


def _oidc_actor(settings: Settings) -> Actor:
    if not st.user.get("is_logged_in"):
        raise _NeedsSignIn(expired=False)
    claims = st.user.to_dict()
    if token_expired(claims, utcnow()):
        # Streamlit keeps its identity cookie for 30 days and does not check the token's expiry
        raise _NeedsSignIn(expired=True)
    name = oidc_identity(claims, verified_claim=settings.oidc_email_verified_claim)
    groups = groups_from_claim(claims.get(settings.groups_claim))
    return Actor(name, _role(settings, name, groups), "oidc")


def _header_actor(settings: Settings) -> Actor:
    headers = st.context.headers
    header = settings.trusted_user_header
    name = header_identity(headers.get_all(header), header=header, bind_address=bind_address(),
                           client_ip=st.context.ip_address, trusted_proxy_ips=settings.trusted_proxy_ips,
                           # what the app server (uvicorn) in this process read: environment only
                           forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS"))
    groups = ()
    if settings.trusted_groups_header:
        values = headers.get_all(settings.trusted_groups_header)
        if len(values) > 1:
            raise IdentityRefused(f"The request carries the {settings.trusted_groups_header} header more than once: refused.")
        groups = groups_from_claim(values[0] if values else None)
    return Actor(name, _role(settings, name, groups), "header")


def authenticate(settings: Settings) -> Actor:
    """The current user, or a sign-in / refusal screen and st.stop()."""
    try:
        return resolve_actor(settings)
    except IdentityRefused as exc:
        st.error(str(exc), icon=":material/lock:")
        st.stop()
    except ValueError as exc:  # TRUSTED_PROXY_IPS that does not parse
        st.error(f"Configuration error: {exc}", icon=":material/settings:")
        st.stop()
    except _NeedsSignIn as exc:
        if exc.expired:
            st.warning("Your sign-in has expired. Please sign in again.", icon=":material/timer_off:")
            st.button("Sign in again", on_click=st.logout, icon=":material/login:", type="primary", key="_relogin")
        else:
            st.info("Sign in to use the Agent Dashboard.", icon=":material/lock:")
            st.button("Sign in", on_click=st.login, icon=":material/login:", type="primary", key="_login")
        st.stop()


def current_actor(settings: Settings) -> Actor:
    """Re-authenticate at the moment of a write (button callbacks, fragments, dialogs): the role
    and the token's expiry as they are now, not the Actor of the last full run. Anything short of
    a valid identity comes back as a viewer, so lib's require_operator refuses the write."""
    try:
        return resolve_actor(settings)
    except (IdentityRefused, _NeedsSignIn, ValueError):
        return Actor("unauthenticated", VIEWER, "none")


def show_identity(settings: Settings, user: Actor) -> None:
    """Sidebar: who is signed in, their role, and a sign-out where the provider has one."""
    name = user.name.replace("`", "'")
    st.caption(f"Signed in as `{name}` · {user.role}")  # a code span: no Markdown, no autolink
    if user.provider == "local":
        st.badge("local mode", icon=":material/computer:", color="gray")
    elif user.provider == "oidc":
        st.button("Sign out", on_click=st.logout, icon=":material/logout:", key="_logout")
    elif settings.sign_out_url:
        st.link_button("Sign out", settings.sign_out_url, icon=":material/logout:")
    if not user.is_operator:
        st.caption("Viewer: you can browse and export; retry, resolve and chat need the operator role.")
