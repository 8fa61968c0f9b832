"""Entry point: the page registry with sections. Streamlit's own menu is hidden; every page's
guard draws the one menu (lib/ui/nav.py), the same whether or not this file ran first."""
import streamlit as st

from lib.ui.nav import sections
from lib.ui.shell import navigation_run

page = st.navigation(
    {
        section: [st.Page(spec.path, title=spec.title, icon=spec.icon, default=spec.default) for spec in pages]
        for section, pages in sections().items()
    },
    position="hidden",
)
with navigation_run():
    page.run()
