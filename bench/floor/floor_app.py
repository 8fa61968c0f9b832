"""The floor of the browser benchmark: a bare Streamlit page with the same kind of content as a
dashboard page (a title, four metrics, a 50-row dataframe, one Plotly bar chart) and a second,
empty page to switch from. No database, no guard, no caching: what Streamlit itself costs."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st


def floor():
    st.title("Floor")
    for col, (label, value) in zip(st.columns(4), [("Total", "1,234"), ("Pending", "56"), ("Failed", "7"),
                                                      ("DLQ", "89")]):
        col.metric(label, value, border=True)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"time": pd.date_range("2026-12-01", periods=50, freq="h").astype(str),
                       "event": rng.choice(["post_published", "dm_sent", "comment_replied"], 50),
                       "count": rng.integers(0, 100, 50), "note": ["lorem ipsum dolor sit amet"] * 50})
    st.dataframe(df, hide_index=True, width="stretch")
    fig = go.Figure(go.Bar(x=df["time"], y=df["count"]))
    fig.update_layout(height=260, margin=dict(l=0, r=0, t=10, b=0))
    st.plotly_chart(fig, width="stretch")


def other():
    st.title("Other")
    st.write("The page the menu switch starts from.")


st.navigation([st.Page(floor, title="Floor", url_path="floor", default=True),
               st.Page(other, title="Other", url_path="other")]).run()
