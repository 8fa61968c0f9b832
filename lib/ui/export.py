"""A CSV download that is built only when clicked (download_button with a callable)."""
from __future__ import annotations

from typing import Callable

import streamlit as st


def csv_download(label: str, build: Callable[[], bytes], file_name: str, key: str, help: str | None = None) -> None:
    st.download_button(
        label,
        data=build,
        file_name=file_name,
        mime="text/csv",
        key=key,
        on_click="ignore",
        icon=":material/download:",
        help=help,
    )
