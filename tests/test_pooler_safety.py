"""Nothing in the product code relies on session state across transactions, which a transaction
pooler (PgBouncer, Supabase's port 6543) does not keep: the server connection is ours for one
transaction only. The behaviour itself is tested through a real PgBouncer (tests marked pooler);
this guard catches the constructs before a test has to."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("lib", "worker") for p in (ROOT / d).rglob("*.py"))

FORBIDDEN = {
    "session-level advisory lock (use pg_advisory_xact_lock)":
        re.compile(r"pg_(try_)?advisory_lock(_shared)?\s*\(|advisory_lock\b(?!_)", re.I),
    "LISTEN (notifications go to whichever client holds the server connection next)": re.compile(r"""["']\s*LISTEN\s""", re.I),
    "cursor WITH HOLD (outlives the transaction)": re.compile(r"WITH\s+HOLD|withhold\s*=\s*True", re.I),
    "prepared statement": re.compile(r"""["']\s*(PREPARE|DEALLOCATE)\s|prepare_threshold""", re.I),
    "SET outside a transaction (use SET LOCAL inside one)":
        re.compile(r"""["']\s*SET\s+(?!LOCAL\b)(SESSION\s+)?\w+\s*(=|TO\b)""", re.I),
}


def _hits(text: str) -> list[str]:
    return [what for what, rx in FORBIDDEN.items() if rx.search(text)]


def test_the_guard_recognises_each_construct():
    for sample in ('conn.execute(sa.text("SELECT pg_advisory_lock(1)"))', '"LISTEN queue_changed"',
                   '"DECLARE c CURSOR WITH HOLD FOR SELECT 1"', '"PREPARE q AS SELECT 1"',
                   'conn.exec_driver_sql("SET statement_timeout = 5000")', "cursor(name, withhold=True)"):
        assert _hits(sample), sample
    for fine in ('sa.func.pg_advisory_xact_lock(KEY)', '"SET LOCAL lock_timeout = \'5s\'"', '.values(status="x")'):
        assert not _hits(fine), fine


def test_no_session_state_across_transactions():
    assert len(SOURCES) > 20
    found = [(str(path.relative_to(ROOT)), n, line.strip(), what) for path in SOURCES
             for n, line in enumerate(path.read_text().splitlines(), 1)
             for what in _hits(line) if not line.lstrip().startswith("#")]
    assert found == []
