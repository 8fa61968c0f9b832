"""Browser test helpers (the browser and app-server fixtures live in tests/conftest.py, so the
fault-injection tests get them too)."""


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until the script run finished (Streamlit marks the app element)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
