"""Demo agent: keeps beating for the agents that should look alive, so the demo does not turn
"down" a minute after start. Like a real agent it calls the agents' HTTP API (POST /agent/heartbeat,
python -m worker.api) with its own token, taken from the environment so that it never shows in a
process list:

    DEMO_AGENT_TOKEN=... python -m sandbox.demo_agent --api-url http://127.0.0.1:8600 [--interval 15]

Without --api-url it writes agent_heartbeats directly, as the backend's endpoint does (one row per beat)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

import requests

from lib.activity.heartbeats import record_beat
from lib.core.db import UNAVAILABLE_ERRORS, make_engine
from lib.core.settings import load_settings
from lib.core.timeutil import iso, utcnow

log = logging.getLogger("demo_agent")


def _stop_event() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop at once, not after the sleep
    return stop


def beat_forever(db_url: str, agents: tuple[str, ...], interval_s: float) -> None:
    engine = make_engine(db_url)
    stop = _stop_event()
    while not stop.is_set():
        try:
            with engine.begin() as conn:
                for agent in agents:
                    record_beat(conn, agent, now=utcnow())
        except UNAVAILABLE_ERRORS as exc:  # keep beating once the database is back
            log.warning("heartbeat not recorded: %s", str(exc).splitlines()[0])
        stop.wait(interval_s)


def beat_once_over_http(session: requests.Session, api_url: str, agents: tuple[str, ...]) -> int:
    """POST /agent/heartbeat for each agent; returns how many the API accepted."""
    accepted = 0
    for agent in agents:
        try:
            r = session.post(f"{api_url}/agent/heartbeat", json={"agent_id": agent, "timestamp": iso(utcnow())},
                             timeout=5)
        except requests.RequestException as exc:  # the API not up yet, or restarting: try again next beat
            log.warning("heartbeat for %s not sent: %s", agent, type(exc).__name__)
            continue
        if r.ok:
            accepted += 1
        else:  # the answer's error is the API's own text; the token is never in it
            log.warning("heartbeat for %s refused: HTTP %d %s", agent, r.status_code, r.text[:200])
    return accepted


def beat_forever_over_http(api_url: str, token: str, agents: tuple[str, ...], interval_s: float) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    stop = _stop_event()
    while not stop.is_set():
        beat_once_over_http(session, api_url.rstrip("/"), agents)
        stop.wait(interval_s)


def main() -> None:
    from sandbox.seed import ALIVE_DEMO_AGENTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between beats (< 60)")
    parser.add_argument("--api-url", help="the agents' API (token in DEMO_AGENT_TOKEN); default: write to the database")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo_agent %(message)s")
    try:
        if args.api_url:
            token = os.environ.get("DEMO_AGENT_TOKEN", "")
            if not token:
                parser.error("--api-url needs the agent's token in DEMO_AGENT_TOKEN")
            log.info("beating for %s every %.0f s through %s", ", ".join(ALIVE_DEMO_AGENTS), args.interval, args.api_url)
            beat_forever_over_http(args.api_url, token, ALIVE_DEMO_AGENTS, args.interval)
        else:
            log.info("beating for %s every %.0f s", ", ".join(ALIVE_DEMO_AGENTS), args.interval)
            beat_forever(load_settings().database_url, ALIVE_DEMO_AGENTS, args.interval)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
