"""AppTest helpers: run app.py (or one page through it) against a given database."""
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_page(monkeypatch):
    """run_page(db_url, "pages/x.py", env=None) -> AppTest after the first run of that page."""

    def run(db_url: str, page: str | None = None, env: dict[str, str] | None = None, user: dict | None = None,
            secrets: dict | None = None) -> AppTest:
        monkeypatch.setenv("DATABASE_URL", db_url)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        # settings and engines are process-wide caches: start each test from a clean slate
        st.cache_resource.clear()
        st.cache_data.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=20)
        for key, value in (secrets or {}).items():
            at.secrets[key] = value
        if user is not None:
            at.user = user
        at.run()
        if page is not None:
            at.switch_page(str(ROOT / page))
            at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return run
