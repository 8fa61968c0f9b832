"""Entry point: page registry with sections; each page draws the shared sidebar through its guard."""
import streamlit as st

from lib.ui.nav import existing_pages
from lib.ui.shell import navigation_run

sections: dict[str, list] = {}
for spec in existing_pages():
    sections.setdefault(spec.section, []).append(
        st.Page(spec.path, title=spec.title, icon=spec.icon, default=spec.default)
    )

page = st.navigation(sections)
with navigation_run():
    page.run()
