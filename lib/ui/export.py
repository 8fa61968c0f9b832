"""Downloads that are built only when clicked (download_button with a callable).

export_control is the one export control of the app: a format choice (CSV, Excel, Parquet) and a
download button; the file is built by `build(fmt)` when the button is clicked. Big exports take turns
(lib.core.export.export_slot): while every turn is taken, the control says so.
"""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lib.core.export import BUSY_MESSAGE, EXPORT_MAX_BYTES, EXPORT_WAIT_S, FORMATS, MAX_CONCURRENT_EXPORTS, exports_running


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


def export_control(label: str, build: Callable[[str], bytes], file_stem: str, key: str,
                   help: str | None = None) -> None:
    """'<label> CSV|Excel|Parquet': a small format picker beside one download button (key `key`;
    the picker is `<key>_fmt`). Same columns in every format; built when clicked."""
    pick, button = st.columns([1, 1.4], gap="small", vertical_alignment="bottom")
    fmt = pick.selectbox("Format", list(FORMATS), format_func=lambda f: FORMATS[f]["label"], key=f"{key}_fmt",
                         label_visibility="collapsed", help="CSV, Excel (.xlsx) or Parquet: the same columns") or "csv"
    spec = FORMATS[fmt]
    with button:
        st.download_button(
            f"{label} {spec['label']}",
            data=lambda: build(fmt),
            file_name=f"{file_stem}.{spec['ext']}",
            mime=spec["mime"],
            key=key,
            on_click="ignore",
            icon=":material/download:",
            help=(help + " " if help else "") + f"At most {EXPORT_MAX_BYTES // 2**20:,} MB per file.",
        )
    busy_note()


def busy_note() -> None:
    """Said where an export can be started while this process builds as many as it allows."""
    if exports_running() >= MAX_CONCURRENT_EXPORTS:
        st.caption(f":material/hourglass_top: {BUSY_MESSAGE} A new export waits up to {EXPORT_WAIT_S:.0f} s for "
                   "its turn, then fails.")
