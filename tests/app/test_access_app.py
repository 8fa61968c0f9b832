"""Access control through AppTest with a signed-in OIDC user (at.user): viewers see disabled
write controls with the reason, operators can act, users see only their own chat sessions,
and an expired sign-in is refused."""
import time

import sqlalchemy as sa

from lib.core.db import make_engine
from lib.core.schema import instagram_business_accounts

AUTH = {"auth": {"redirect_uri": "http://127.0.0.1:1/oauth2callback", "cookie_secret": "s",
                 "client_id": "c", "client_secret": "x", "server_metadata_url": "http://127.0.0.1:1/.well-known"}}
ENV = {"OPERATOR_EMAILS": "ops@example.com"}


def signed_in(email: str, exp_in: float = 3600) -> dict:
    return {"is_logged_in": True, "email": email, "email_verified": True, "name": email.split("@")[0],
            "exp": int(time.time() + exp_in)}


def buttons(at) -> dict[str, bool]:
    return {b.label: b.disabled for b in at.button}


def test_viewer_sees_disabled_write_controls(run_page, demo_url):
    at = run_page(demo_url, "pages/queue_monitor.py", env=ENV, user=signed_in("ana@example.com"), secrets=AUTH)
    assert any("ana@example.com" in c.value and "viewer" in c.value for c in at.caption)
    retry_all = [label for label in buttons(at) if label.startswith("Retry all")]
    assert retry_all and all(buttons(at)[label] for label in retry_all)

    at = run_page(demo_url, "pages/system_alerts.py", env=ENV, user=signed_in("ana@example.com"), secrets=AUTH)
    resolve = {k: v for k, v in buttons(at).items() if k.startswith("Resolve")}
    assert resolve and all(resolve.values())


def test_operator_can_act(run_page, demo_url):
    at = run_page(demo_url, "pages/queue_monitor.py", env=ENV, user=signed_in("ops@example.com"), secrets=AUTH)
    assert any("ops@example.com" in c.value and "operator" in c.value for c in at.caption)
    retry_all = [label for label in buttons(at) if label.startswith("Retry all")]
    assert retry_all and not any(buttons(at)[label] for label in retry_all)
    at = run_page(demo_url, "pages/system_alerts.py", env=ENV, user=signed_in("ops@example.com"), secrets=AUTH)
    assert any(k.startswith("Resolve all") and not v for k, v in buttons(at).items())


def test_expired_sign_in_is_refused(run_page, demo_url):
    at = run_page(demo_url, "pages/queue_monitor.py", env=ENV, user=signed_in("ops@example.com", exp_in=-10),
                  secrets=AUTH)
    assert [w.value for w in at.warning] == ["Your sign-in has expired. Please sign in again."]
    assert not [m for m in at.metric]  # nothing of the page is shown


def test_not_signed_in_sees_only_the_sign_in(run_page, demo_url):
    at = run_page(demo_url, "pages/overview.py", env=ENV, user={"is_logged_in": False}, secrets=AUTH)
    assert [i.value for i in at.info] == ["Sign in to use the Agent Dashboard."]
    assert not at.metric


def test_users_do_not_see_each_others_chat_sessions(run_page, demo_url):
    from lib.core.schema import oversight_chat_sessions as ocs
    from lib.ui.oversight_chat import Keys

    eng = make_engine(demo_url)
    with eng.connect() as conn:
        accounts = [str(r.id) for r in conn.execute(sa.select(instagram_business_accounts.c.id))]
        owned = {(r.dashboard_user_id, str(r.business_account_id)): r.n for r in conn.execute(
            sa.select(ocs.c.dashboard_user_id, ocs.c.business_account_id, sa.func.count().label("n"))
            .group_by(ocs.c.dashboard_user_id, ocs.c.business_account_id))}
    eng.dispose()
    assert {u for u, _ in owned} == {"local", "analyst@example.com"}  # the seed's two users
    for who in ("local", "analyst@example.com"):
        for acc in accounts:
            at = run_page(demo_url, "pages/oversight_chat.py", env={**ENV, "OPERATOR_EMAILS": who},
                          user={"is_logged_in": True, "email": who, "email_verified": True, "exp": int(time.time() + 3600)},
                              secrets=AUTH)
            at.selectbox(key="account").set_value(acc).run()
            listed = at.radio(key=Keys.PICK).options if any(r.key == Keys.PICK for r in at.radio) else []
            assert len(listed) == owned.get((who, acc), 0), (who, acc)
