"""The worker's start-up stays light: every worker process (and each of N replicas in a rolling
restart) imports worker.cli, so a heavy import there is paid per process. pandas/numpy/pyarrow are
only for the app's pages and the weekly digest, which imports them when it builds one."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_worker_import_does_not_load_dataframe_libraries():
    code = ("import sys, worker.cli, worker.tick; "
            "print(','.join(m for m in ('pandas', 'numpy', 'pyarrow', 'plotly', 'streamlit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"worker start-up imports {out.stdout.strip()}"


def test_digest_module_imports_without_pandas():
    # the digest module imports pandas inside build_digest; importing it alone must not need pandas
    code = "import sys, lib.notify.digest; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
