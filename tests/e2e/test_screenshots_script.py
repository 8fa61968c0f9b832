"""scripts/screenshots.py makes the README's three pictures from the demo data, 1440x900 each."""
from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("overview.png", "queue-monitor.png", "system-alerts.png")

pytestmark = pytest.mark.e2e


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_script_makes_the_readme_pictures(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshots.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in NAMES:
        assert png_size(tmp_path / name) == (1440, 900)
    readme = (ROOT / "README.md").read_text()
    assert set(re.findall(r"\(docs/images/([\w-]+\.png)\)", readme)) == set(NAMES)
    assert all((ROOT / "docs" / "images" / n).exists() for n in NAMES)
