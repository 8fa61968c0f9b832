"""The retry worker: `python -m worker` (see docs/worker.md). Never imports streamlit."""
