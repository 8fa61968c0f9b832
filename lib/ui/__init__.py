"""Streamlit helpers: the page guard and shared sidebar, cached loaders, rendering helpers.

Only this package imports streamlit; everything below lib/ui renders what lib/ returns.
"""
from lib.ui.shell import Scope, get_engine, lazy_expander, live_caption, page_guard  # noqa: F401
