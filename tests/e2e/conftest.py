"""Browser test helpers (the browser and app-server fixtures live in tests/conftest.py, so the
fault-injection tests get them too)."""
from playwright.sync_api import expect


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until the script run finished (Streamlit marks the app element)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)


def click_until(page, click, check, attempts: int = 3, timeout: float = 15_000) -> None:
    """A click whose effect a rerun can swallow (the page redraws the element under the pointer, or
    the click lands just before a live refresh): wait for the run to end, `click()`, then `check(ms)`
    (a Playwright expect, raising AssertionError); if the effect did not come, again. `click` must
    look at the page first so that a repeat never undoes a click that did register."""
    for attempt in range(attempts):
        wait_idle(page)
        try:
            click()
        except Exception:  # noqa: BLE001 - the element was detached mid-click: try again
            if attempt == attempts - 1:
                raise
            continue
        try:
            check(timeout)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def open_expander(page, expander, text: str) -> None:
    """Open `expander` (a lazy one reruns the page to draw its content) until it shows `text`."""
    def click():
        if expander.locator("details").get_attribute("open") is None:
            expander.locator("summary").click()

    click_until(page, click, lambda ms: expect(expander).to_contain_text(text, timeout=ms))


def open_first_queue_row(page):
    """Press "Open" on the first row of the Queue Monitor's triage table; returns the row's dialog.
    The grid is a canvas: the button sits right of the checkbox (32 px) and Retry (64 px) columns, one
    header row (35 px) down."""
    table = page.get_by_test_id("stDataFrame").filter(has_text="Retries").first
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    dialog = page.get_by_test_id("stDialog")
    click_until(page, lambda: dialog.count() or page.mouse.click(box["x"] + 125, box["y"] + 35 + 35 / 2),
                lambda ms: expect(dialog).to_be_visible(timeout=ms))
    return dialog
