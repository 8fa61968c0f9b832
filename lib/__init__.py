"""Agent Dashboard library: everything but the page scripts. Only lib/ui imports streamlit."""
