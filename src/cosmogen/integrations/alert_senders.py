"""Sending one notification to one channel: a webhook (signed like our inbound webhooks), Slack (through
the Slack provider adapter and the account resolver, like a run's slack.post_message), email (SMTP).

Every send goes through the egress guard: webhooks and Slack through the one HTTP client
(integrations/http.py); SMTP connects only to an address the guard accepted (`check_url` on the host, then
`check_answer` on its DNS answer, and the connection is made to that checked address).

A failure is `DeliveryFailed` with what went wrong and what to do, never a secret: the SMTP password and
the signing secret are not in any message, and Slack's answers are scrubbed of the account's token.
The sender makes one attempt; the dispatcher (runtime/alerts.py) retries with backoff.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from cosmogen.domain import alerts
from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.capabilities import Registry
from cosmogen.domain.webhook_signature import SIGNATURE_HEADER, header_value
from cosmogen.integrations.connections import AccountUnavailable, provider_request
from cosmogen.integrations.egress import EgressBlocked, EgressPolicy, check_answer, check_url
from cosmogen.integrations.http import THROUGH_GUARD, HttpCallError, HttpClient
from cosmogen.integrations.retry import RetryPolicy
from cosmogen.integrations.secret import Secret
from cosmogen.store import Database

if TYPE_CHECKING:
    from cosmogen.integrations.accounts import DbAccountResolver

DELIVERY_HEADER = "X-Cosmogen-Delivery"
TIMEOUT_S = 10.0
_ONCE = RetryPolicy(max_retries=0)


class DeliveryFailed(Exception):
    """One attempt failed: `message` says what happened, `hint` what to do. No secret in either."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What is sent: the notification, whichever channel it goes to."""

    delivery_id: str
    notification_id: str
    kind: str  # the notification's kind (a rule kind, run_finished, test)
    title: str
    text: str
    facts: Mapping[str, Any]
    created_at: datetime

    def payload(self) -> dict[str, Any]:
        return {
            "type": "cosmogen.notification",
            "id": self.notification_id,
            "delivery_id": self.delivery_id,
            "kind": self.kind,
            "title": self.title,
            "text": self.text,
            "facts": dict(self.facts),
            "created_at": self.created_at.isoformat(),
        }


@dataclass
class Senders:
    """The composition root builds one per runtime."""

    http: HttpClient
    policy: EgressPolicy
    resolver: DbAccountResolver | None
    registry: Registry
    db: Database
    now: Callable[[], datetime]
    # Tests point name resolution at a local SMTP server by name; the default is the system resolver.
    getaddrinfo: Callable[..., Any] = socket.getaddrinfo

    async def webhook(self, url: str, message: Outgoing, signing_secret: Secret | None) -> None:
        body = message.payload()
        # The bytes aiohttp sends for json=body (json.dumps with its defaults): what the receiver hashes.
        raw = json.dumps(body).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cosmogen-alerts",
            DELIVERY_HEADER: message.delivery_id,
        }
        if signing_secret is not None:
            timestamp = int(self.now().timestamp())
            headers[SIGNATURE_HEADER] = header_value([signing_secret.reveal().encode()], timestamp, raw)
        try:
            await self.http.send(RenderedRequest("POST", url, headers, body, TIMEOUT_S), retry=_ONCE)
        except HttpCallError as exc:
            raise DeliveryFailed(
                f"the webhook {alerts.shown_url(url)} was not reached: {exc}", _http_hint(exc)
            ) from None

    async def slack(self, workspace: str, account_id: str, channel: str, message: Outgoing) -> None:
        if self.resolver is None:
            raise DeliveryFailed(
                "this process has no account store for Slack", "deliver from `cosmogen serve`"
            )
        capability = self.registry.capability("slack.post_message")
        provider = self.registry.provider_of(capability)
        name = await asyncio.to_thread(self._account_name, workspace, account_id)
        try:
            connection = await self.resolver.connection(workspace, name, capability, provider)
        except AccountUnavailable as exc:
            raise DeliveryFailed(
                f"the Slack account cannot be used: {exc}", "reconnect it or pick another"
            ) from None
        settings = capability.parse_settings(
            {"channel": channel, "text": f"*{message.title}*\n{message.text}"}
        )
        wanted = capability.steps[0].build(settings, {})
        request = provider_request(provider, connection, wanted, timeout_s=TIMEOUT_S)
        try:
            response = await self.http.send(request, retry=_ONCE)
            status, body = response.status, response.body
        except HttpCallError as exc:
            if exc.status is None:
                raise DeliveryFailed(
                    f"Slack was not reached: {connection.scrub(str(exc))}", _http_hint(exc)
                ) from None
            status, body = exc.status, exc.body
        failure = provider.failure(status, body)
        if failure is not None:
            raise DeliveryFailed(
                f"Slack refused the message: {connection.scrub(failure.message)} ({failure.code})",
                _slack_hint(failure.action.value),
            )

    def _account_name(self, workspace: str, account_id: str) -> str:
        from sqlalchemy import select

        from cosmogen.store.tables import accounts

        with self.db.engine.connect() as conn:
            name = conn.execute(
                select(accounts.c.name).where(
                    accounts.c.id == account_id, accounts.c.workspace_id == workspace
                )
            ).scalar()
        if name is None:
            raise DeliveryFailed(
                f"no Slack account {account_id!r} in this workspace", "update the channel's account_id"
            )
        return str(name)

    async def email(
        self, config: Mapping[str, Any], password: Secret | None, to: list[str], message: Outgoing
    ) -> None:
        mail = EmailMessage()
        mail["Subject"] = f"[cosmogen] {message.title}"
        mail["From"] = str(config["from"])
        mail["To"] = ", ".join(to)
        mail["X-Cosmogen-Notification"] = message.notification_id
        mail.set_content(f"{message.text}\n\n{json.dumps(dict(message.facts), indent=2, default=str)}\n")
        host, port = str(config["host"]), int(config["port"])
        address = await asyncio.to_thread(self._checked_address, host, port)
        await asyncio.to_thread(self._smtp, config, host, address, port, password, mail)

    def _checked_address(self, host: str, port: int) -> str:
        """The address to connect to: the host as the egress guard accepts it, resolved and re-checked."""
        bare = host.strip("[]")
        try:
            target = check_url(f"http://{host}:{port}/", self.policy)
            if target.address is not None:
                return str(target.address)
            answer = self.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(a[4][0]) for a in answer))
            check_answer(target.host, addresses, self.policy)
        except EgressBlocked as exc:
            raise DeliveryFailed(
                f"egress blocked ({exc.rule}) for the SMTP server {host}: {exc}",
                "allow it with COSMOGEN_EGRESS_ALLOW_HOSTS or _NETWORKS",
            ) from None
        except OSError:
            raise DeliveryFailed(
                f"the SMTP server name {host} does not resolve", "check config.host"
            ) from None
        return addresses[0]

    def _smtp(
        self,
        config: Mapping[str, Any],
        host: str,
        address: str,
        port: int,
        password: Secret | None,
        mail: EmailMessage,
    ) -> None:
        context = ssl.create_default_context()
        marked = THROUGH_GUARD.set(True)  # the address was checked above
        try:
            smtp: smtplib.SMTP
            if config.get("ssl"):
                smtp = smtplib.SMTP_SSL(timeout=TIMEOUT_S, context=context)
            else:
                smtp = smtplib.SMTP(timeout=TIMEOUT_S)
            with smtp:
                smtp.connect(address, port)
                smtp._host = host  # type: ignore[attr-defined]  # TLS checks the certificate for the name
                smtp.ehlo()
                if config.get("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if config.get("username"):
                    if password is None:
                        raise DeliveryFailed(
                            "the channel has a username but no password",
                            "set secrets.password on the channel",
                        )
                    smtp.login(str(config["username"]), password.reveal())
                smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryFailed(
                f"the SMTP server refused the login ({exc.smtp_code})",
                "check config.username and secrets.password",
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryFailed(
                "the SMTP server does not offer STARTTLS or AUTH",
                "set config.starttls false (or ssl true), or drop the username",
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(
                f"the SMTP server answered {exc.smtp_code}",
                "check config.from and config.to with the mail server's admin",
            ) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryFailed("the SMTP server refused every recipient", "check config.to") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(
                f"could not talk to the SMTP server {host}:{port} ({type(exc).__name__})",
                "check config.host and config.port, and that the server is up",
            ) from None
        finally:
            THROUGH_GUARD.reset(marked)


def _http_hint(exc: HttpCallError) -> str:
    if exc.kind == "egress":
        return (
            "the egress guard refused this address; allow it with COSMOGEN_EGRESS_ALLOW_HOSTS "
            "(names) or COSMOGEN_EGRESS_ALLOW_NETWORKS (ranges)"
        )
    if exc.kind in ("connect", "timeout", "disconnect"):
        return "check that the URL is right and its server is up and reachable from cosmogen"
    return "the receiver answered with an error status: check its logs; it must answer 2xx"


def _slack_hint(action: str) -> str:
    return {
        "reconnect": "reconnect the Slack account (it needs the chat:write scope)",
        "fix_setting": "check the channel name or id, and that the app is in that channel",
        "wait": "Slack rate limited the app; the delivery is retried later",
    }.get(action, "check Slack's status and the app's settings")
