"""Counts that are bad when above zero (DLQ rows, critical alerts): coloured like Grafana's
thresholds, so they stand out from the counts around them; zero stays plain."""
from __future__ import annotations

import streamlit as st

SEVERITY_COLOURS = {"CRITICAL": "red", "ERROR": "orange", "WARNING": "yellow"}


def count_metric(label: str, n: int, *, colour: str | None, note: str | None = None, where=None, **kwargs) -> None:
    """st.metric of `n`; above zero a short note under the number carries `colour` (a coloured pill,
    no arrow: it is a state, not a change)."""
    where = where if where is not None else st
    if n and colour:
        where.metric(label, f"{n:,}", delta=note or "open", delta_color=colour, delta_arrow="off", **kwargs)
    else:
        where.metric(label, f"{n:,}", **kwargs)
