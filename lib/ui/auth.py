"""Identity from the configured provider: OIDC (st.login), a trusted proxy header, or local mode.

OIDC applies when secrets.toml has an [auth] section; else a trusted header when
TRUSTED_USER_HEADER is set; else local mode (one local user; the server must listen on
127.0.0.1 only). Roles come from lib.identity.role_for.
"""
from __future__ import annotations

import streamlit as st

from lib.identity import Actor, groups_from_claim, role_for, token_expired
from lib.settings import Settings
from lib.timeutil import utcnow


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all (StreamlitSecretNotFoundError) or unreadable
        return False


def _role(settings: Settings, user: str, groups=(), local_mode: bool = False) -> str:
    return role_for(
        user,
        groups,
        operator_emails=settings.operator_emails,
        operator_domains=settings.operator_domains,
        operator_groups=settings.operator_groups,
        local_mode=local_mode,
    )


def authenticate(settings: Settings) -> Actor:
    """The current user, or a sign-in screen and st.stop()."""
    if oidc_configured():
        return _oidc_user(settings)
    if settings.trusted_user_header:
        return _header_user(settings)
    return Actor(settings.local_user, _role(settings, settings.local_user, local_mode=True), "local")


def _oidc_user(settings: Settings) -> Actor:
    if not st.user.get("is_logged_in"):
        st.info("Sign in to use the Agent Dashboard.", icon=":material/lock:")
        st.button("Sign in", on_click=st.login, icon=":material/login:", type="primary", key="_login")
        st.stop()
    claims = st.user.to_dict()
    if token_expired(claims, utcnow()):
        # Streamlit keeps its identity cookie for 30 days and does not check the token's expiry
        st.warning("Your sign-in has expired. Please sign in again.", icon=":material/timer_off:")
        st.button("Sign in again", on_click=st.logout, icon=":material/login:", type="primary", key="_relogin")
        st.stop()
    name = str(claims.get("email") or claims.get("preferred_username") or claims.get("sub") or "unknown")
    groups = groups_from_claim(claims.get(settings.groups_claim))
    return Actor(name, _role(settings, name, groups), "oidc")


def _header_user(settings: Settings) -> Actor:
    headers = st.context.headers
    name = (headers.get(settings.trusted_user_header) or "").strip()
    if not name:
        st.error(
            f"No signed-in user: the request carries no {settings.trusted_user_header} header. "
            "Open the dashboard through its sign-in proxy.",
            icon=":material/lock:",
        )
        st.stop()
    groups = ()
    if settings.trusted_groups_header:
        groups = groups_from_claim(headers.get(settings.trusted_groups_header))
    return Actor(name, _role(settings, name, groups), "header")


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
