# Shared by scripts/demo and scripts/test: install what is missing, create .venv in the project root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {  # apt_install PKG...: Debian packages, installed only when asked for
  if [ "$APT_UPDATED" -eq 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_venv() {  # ensure_venv [EXTRAS]: .venv with the project's pinned dependencies
  local extras="${1:-}" spec="." stamp
  [ -n "$extras" ] && spec=".[$extras]"
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
      rm -rf .venv
      apt_install python3-venv  # Debian's python3 ships venv separately
      python3 -m venv .venv
    fi
  fi
  stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras:-base}"
  if [ ! -f "$stamp" ]; then
    echo "installing Python packages into .venv (first run takes about a minute)..."
    if ! .venv/bin/python -m pip install -e "$spec" > .venv/pip-install.log 2>&1; then
      tail -n 30 .venv/pip-install.log >&2
      echo "pip install failed; full log: .venv/pip-install.log" >&2
      exit 1
    fi
    touch "$stamp"
  fi
}
