"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, for mailto:// tests."""
from __future__ import annotations

import email
import email.policy
import threading

from aiosmtpd.controller import Controller

from tests.support.pg import free_port


class _Handler:
    def __init__(self, box: SmtpBox) -> None:
        self.box = box

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.box.lock:
            self.box.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                      "subject": str(msg["subject"]), "body": msg.get_content() if not msg.is_multipart()
                                      else msg.get_body(("plain", "html")).get_content()})
        return "250 Message accepted for delivery"


class SmtpBox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[dict] = []
        self.port = free_port()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def apprise_url(self, to: str = "ops@example.com", sender: str = "alerts@example.com") -> str:
        # a local relay without authentication (Apprise's email docs, "Local Relay"), plain text
        return f"mailto://127.0.0.1:{self.port}/{to}?from={sender}&format=text"

    def __enter__(self) -> SmtpBox:
        self.controller.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.controller.stop()
