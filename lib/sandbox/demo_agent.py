"""Demo agent: keeps beating for the agents that should look alive, so the demo does not turn
"down" a minute after start. It writes agent_heartbeats the way the backend's POST
/agent/heartbeat does (one row per beat). python -m lib.sandbox.demo_agent [--interval 15]"""
from __future__ import annotations

import argparse
import logging
import signal
import threading

from lib.db import UNAVAILABLE_ERRORS, make_engine
from lib.heartbeats import record_beat
from lib.settings import load_settings
from lib.timeutil import utcnow

log = logging.getLogger("demo_agent")


def beat_forever(db_url: str, agents: tuple[str, ...], interval_s: float) -> None:
    engine = make_engine(db_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop at once, not after the sleep
    while not stop.is_set():
        try:
            with engine.begin() as conn:
                for agent in agents:
                    record_beat(conn, agent, now=utcnow())
        except UNAVAILABLE_ERRORS as exc:  # keep beating once the database is back
            log.warning("heartbeat not recorded: %s", str(exc).splitlines()[0])
        stop.wait(interval_s)


def main() -> None:
    from lib.sandbox.seed import ALIVE_DEMO_AGENTS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between beats (< 60)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo_agent %(message)s")
    log.info("beating for %s every %.0f s", ", ".join(ALIVE_DEMO_AGENTS), args.interval)
    try:
        beat_forever(load_settings().database_url, ALIVE_DEMO_AGENTS, args.interval)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
