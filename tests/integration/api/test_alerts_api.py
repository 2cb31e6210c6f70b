"""Alerts over real HTTP against `cosmogen serve`, on SQLite and on PostgreSQL, with real receivers: an HTTP
server on 127.0.0.1 for webhook channels (the signature is checked), a real SMTP server (aiosmtpd) for
email, the provider simulator for Slack (an OAuth account it granted).

- a launch whose runs fail, with a run_failed rule on three channels and a dedup window: three failures
  make exactly one notification and one delivery per channel (the repeats are counted), and the launch's
  own `notify` list (in-app and a webhook URL) hears about every run;
- test-send: 200 through each working channel; an unreachable webhook answers 502 problem+json with a hint;
- secrets (the SMTP password, the signing secret after creation) never appear in an answer;
- roles (viewers read, cannot change) and workspaces (another one's objects answer 404);
- token refresh failures, error rates and a saturated rate limit raise their rules' notifications."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select, update

from cosmogen.domain.roles import Role
from cosmogen.domain.webhook_signature import SIGNATURE_HEADER, parse
from cosmogen.store.tables import accounts, notification_deliveries, rate_limits
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator, ThreadedSimulator
from tests.integration.api.helpers import call
from tests.integration.api.test_runs_api import settle
from tests.integration.api.workspaces import member, new_workspace, open_store
from tests.integration.conftest import free_port, serving

SMTP_USER = "alerts@example.com"
SMTP_PASSWORD = "smtp-Pa55word-canary-7c1e"  # noqa: S105 (the test server's, and a canary)


# --- receivers ----------------------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST (headers and raw body) and answers 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.posts.append(({k.lower(): v for k, v in self.headers.items()}, raw))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, path: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(raw) for _, raw in self.posts]


class Mailbox:
    """The aiosmtpd handler: every message accepted, with the login it came with."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []  # (from, to, data), each sent after a login

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.content.decode("utf-8", errors="replace")
        if not session.authenticated:  # login is optional for the server; our channel must have used it
            return "530 Authentication required"
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), data))
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_required=False,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path | str, str]]:
    """(serve's URL, its store, the vault keyring it runs with)."""
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the receivers, on purpose
    monkeypatch.setenv("COSMOGEN_ALERT_POLL_S", "0.1")
    monkeypatch.setenv("COSMOGEN_ALERT_CONDITIONS_S", "0.2")
    keyring = oauth_accounts.new_keyring()
    monkeypatch.setenv(oauth_accounts.KEYS_ENV, keyring)
    if request.param == "sqlite":
        with serving(tmp_path, "--no-sandbox") as (url, _):
            yield url, tmp_path / "cosmogen-data", keyring
    else:
        pg_url = request.getfixturevalue("clean_pg_url")
        with serving(tmp_path, "--database-url", pg_url, "--no-sandbox") as (url, _):
            yield url, pg_url, keyring


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator() as server:
        yield server


def slack_account(store: Path | str, keyring: str, sim: Simulator) -> str:
    grant = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
    db = open_store(store)
    try:
        vault = oauth_accounts.open_vault(db, keyring)
        return oauth_accounts.connect(
            db,
            vault,
            sim_url=sim.url,
            client_id=DEFAULT_CLIENT_ID,
            client_secret=DEFAULT_CLIENT_SECRET,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
    finally:
        db.close()


def failing_document(name: str) -> dict[str, Any]:
    """One call, refused by the egress guard (a metadata address): the run fails at once, no retries."""
    return {
        "cosmogen": "universe/1",
        "name": name,
        "nodes": [
            {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "x"}},
            {"id": "probe", "type": "become", "entity": "post:1", "transform": {"p": "1"}},
        ],
        "edges": [{"source": "b", "target": "probe"}],
        "bindings": [
            {
                "id": "meta",
                "node": "probe",
                "request": {"url": "http://169.254.169.254/latest", "method": "GET"},
            }
        ],
    }


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def inbox(api: str, token: str, query: str = "") -> dict[str, Any]:
    status, _, body = call(api + "/notifications" + query, token=token)
    assert status == 200, body
    found: dict[str, Any] = body
    return found


def check_signature(headers: dict[str, str], raw: bytes, secret: str) -> None:
    parsed = parse(headers[SIGNATURE_HEADER.lower()])
    signed = str(parsed.timestamp).encode() + b"." + raw
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert expected in parsed.signatures
    assert abs(parsed.timestamp - time.time()) < 300


# --- the tests ----------------------------------------------------------------------------------------


def test_failing_runs_notify_each_channel_once_and_test_send(
    served: tuple[str, Path | str, str], smtp: tuple[Mailbox, int], sim: Simulator
) -> None:
    url, store, keyring = served
    mailbox, smtp_port = smtp
    api = url + "/api/v1"
    editor = member(store, "ed@example.com", Role.EDITOR)[1]
    viewer = member(store, "vi@example.com", Role.VIEWER)[1]
    other_ws = new_workspace(store, "Other")
    outsider = member(store, "out@example.com", Role.ADMIN, workspace=other_ws)[1]
    account_id = slack_account(store, keyring, sim)
    seen: list[str] = []  # every answer body, to look for secrets in

    def ask(path: str, method: str = "GET", token: str = editor, body: Any = None) -> tuple[int, Any]:
        status, _, answer = call(api + path, method, token=token, body=body)
        seen.append(json.dumps(answer))
        return status, answer

    with Receiver() as hooks, Receiver() as launch_hook:
        # Channels: a webhook (signed), email with a login, Slack through the simulator's account.
        status, webhook = ask(
            "/alerts/channels",
            "POST",
            body={"name": "ops-hook", "kind": "webhook", "config": {"url": hooks.url + "/in/tok-123"}},
        )
        assert status == 201, webhook
        signing_secret = webhook["signing_secret"]
        assert signing_secret.startswith("whsec_") and webhook["secrets_set"] == ["signing_secret"]
        assert webhook["config"]["url"] == hooks.url + "/…"  # the path (often a token) is not shown
        email_config = {
            "host": "127.0.0.1",
            "port": smtp_port,
            "from": "cosmogen@example.com",
            "to": ["ops@example.com"],
            "username": SMTP_USER,
            "starttls": False,
        }
        status, email = ask(
            "/alerts/channels",
            "POST",
            body={
                "name": "ops-mail",
                "kind": "email",
                "config": email_config,
                "secrets": {"password": SMTP_PASSWORD},
            },
        )
        assert status == 201 and email["secrets_set"] == ["password"] and email["signing_secret"] is None, (
            email
        )
        status, slack = ask(
            "/alerts/channels",
            "POST",
            body={
                "name": "ops-slack",
                "kind": "slack",
                "config": {"account_id": account_id, "channel": "C0SIM00001"},
            },
        )
        assert status == 201, slack
        channel_ids = [webhook["id"], email["id"], slack["id"]]

        # Bad input: a clear 422 naming the field; viewers cannot change channels or rules.
        status, bad = ask(
            "/alerts/channels", "POST", body={"name": "x", "kind": "email", "config": {"host": ""}}
        )
        assert (
            status == 422
            and bad["code"] == "invalid_config"
            and any("config.to" in p for p in bad["problems"])
        )
        status, bad = ask(
            "/alerts/channels",
            "POST",
            body={
                "name": "y",
                "kind": "webhook",
                "config": {"url": "https://e.example/x"},
                "secrets": {"password": "p"},
            },
        )
        assert status == 422 and "unknown fields ['password']" in bad["detail"]
        assert (
            ask(
                "/alerts/channels",
                "POST",
                viewer,
                {"name": "v", "kind": "webhook", "config": {"url": hooks.url}},
            )[0]
            == 403
        )
        assert ask("/alerts/channels", token=viewer)[0] == 200

        # Test-send through each channel: delivered at once.
        for channel_id in channel_ids:
            status, sent = ask(f"/alerts/channels/{channel_id}/test", "POST")
            assert status == 200 and sent["delivered"] is True, sent
        assert len(hooks.posts) == 1 and hooks.bodies()[0]["kind"] == "test"
        check_signature(*hooks.posts[0], signing_secret)
        assert len(mailbox.messages) == 1 and mailbox.messages[0][1] == ["ops@example.com"]
        assert "Subject: [cosmogen] Test from cosmogen: ops-mail" in mailbox.messages[0][2]
        assert [e.data.get("channel") for e in sim.effects] == ["C0SIM00001"]

        # Test-send to an unreachable webhook: 502 problem+json that says why and what to do.
        dead = f"http://127.0.0.1:{free_port()}/hook"
        status, gone = ask(
            "/alerts/channels", "POST", body={"name": "gone", "kind": "webhook", "config": {"url": dead}}
        )
        assert status == 201
        status, headers, failed = call(api + f"/alerts/channels/{gone['id']}/test", "POST", token=editor)
        assert status == 502 and headers["content-type"].startswith("application/problem+json"), failed
        assert failed["code"] == "delivery_failed" and "could not connect" in failed["detail"]
        assert "reachable" in failed["hint"]
        assert ask(f"/alerts/channels/{gone['id']}", "DELETE")[0] == 204
        assert ask(f"/alerts/channels/{gone['id']}")[0] == 404

        # A rule for failed runs on the three channels, deduplicated over an hour.
        status, rule = ask(
            "/alerts/rules",
            "POST",
            body={
                "name": "failures",
                "kind": "run_failed",
                "channel_ids": channel_ids,
                "dedup_window_s": 3600,
            },
        )
        assert status == 201 and rule["channel_ids"] == channel_ids, rule
        assert ask("/alerts/rules", "POST", viewer, {"name": "n", "kind": "run_failed"})[0] == 403
        status, bad = ask(
            "/alerts/rules", "POST", body={"name": "n", "kind": "run_failed", "channel_ids": ["nope"]}
        )
        assert status == 404 and bad["code"] == "not_found"

        # A launch that fails every run, telling in-app and a webhook URL when each run ends.
        status, saved = ask("/universes", "POST", body={"document": failing_document("payments")})
        assert status == 201, saved
        notify = [
            {"channel": "in-app", "target": "current"},
            {"channel": "webhook", "target": launch_hook.url},
        ]
        status, launch = ask(
            "/launches",
            "POST",
            body={"universe_id": saved["universe"]["id"], "dry_run": False, "notify": notify},
        )
        assert status == 201, launch
        run_ids = []
        for _ in range(3):
            status, run = ask(f"/launches/{launch['id']}/runs", "POST", body={})
            assert status == 201, run
            assert settle(api, viewer, run["run_id"])["status"] == "failed"
            run_ids.append(run["run_id"])

        eventually(lambda: len(launch_hook.posts) == 3, "the launch's three run notices")
        eventually(
            lambda: len(hooks.posts) == 2 and len(mailbox.messages) == 2 and len(sim.effects) == 2,
            "one failure notice per channel",
        )

        def rule_notice() -> dict[str, Any]:
            items = [i for i in inbox(api, viewer)["items"] if i["kind"] == "run_failed"]
            assert len(items) == 1, items
            found: dict[str, Any] = items[0]
            return found

        eventually(lambda: rule_notice()["repeats"] == 2, "the two repeats to be counted")
        notice = rule_notice()
        assert {d["channel_id"]: d["status"] for d in notice["deliveries"]} == dict.fromkeys(
            channel_ids, "sent"
        )
        assert notice["facts"]["run_id"] == run_ids[0] and notice["title"] == "Run failed in payments"
        time.sleep(1.0)  # several dispatcher rounds later: still exactly one per channel
        assert (len(hooks.posts), len(mailbox.messages), len(sim.effects)) == (2, 2, 2)
        headers, raw = hooks.posts[1]
        check_signature(headers, raw, signing_secret)
        assert (
            json.loads(raw)["kind"] == "run_failed"
            and json.loads(raw)["facts"]["universe_name"] == "payments"
        )
        assert "Run failed in payments" in mailbox.messages[1][2]
        assert {json.loads(raw)["facts"]["run_id"] for _, raw in launch_hook.posts} == set(run_ids)
        assert all(SIGNATURE_HEADER.lower() not in h for h, _ in launch_hook.posts)  # a bare URL: unsigned

        # The inbox: the rule's notice and the launch's three run notices, unread until read.
        box = inbox(api, viewer)
        assert (
            box["unread"] == 4
            and sorted(i["kind"] for i in box["items"]) == ["run_failed"] + ["run_finished"] * 3
        )
        first = box["items"][0]["id"]
        assert call(api + f"/notifications/{first}/read", "POST", token=viewer)[0] == 204
        assert inbox(api, viewer, "?unread=true")["unread"] == 3
        assert first not in [i["id"] for i in inbox(api, viewer, "?unread=true")["items"]]
        page = inbox(api, viewer, "?limit=2")
        assert len(page["items"]) == 2 and page["next_cursor"]
        rest = inbox(api, viewer, f"?limit=2&cursor={page['next_cursor']}")
        assert {i["id"] for i in page["items"]} | {i["id"] for i in rest["items"]} == {
            i["id"] for i in box["items"]
        }

        # Another workspace sees none of it.
        assert inbox(api, outsider)["items"] == [] and ask("/alerts/rules", token=outsider)[1]["items"] == []
        for path, method in [
            (f"/alerts/channels/{webhook['id']}", "GET"),
            (f"/alerts/rules/{rule['id']}", "GET"),
            (f"/alerts/channels/{webhook['id']}/test", "POST"),
            (f"/notifications/{first}/read", "POST"),
            (f"/alerts/rules/{rule['id']}", "DELETE"),
        ]:
            status, answer = ask(path, method, outsider)
            assert status == 404, (path, answer)

        # Changing a channel: a new password is write-only too; the rule can be replaced and deleted.
        status, patched = ask(
            f"/alerts/channels/{email['id']}", "PATCH", body={"secrets": {"password": "new-" + SMTP_PASSWORD}}
        )
        assert status == 200 and patched["secrets_set"] == ["password"]
        status, replaced = ask(
            f"/alerts/rules/{rule['id']}",
            "PUT",
            body={"name": "failures", "kind": "run_failed", "channel_ids": [webhook["id"]], "enabled": False},
        )
        assert status == 200 and replaced["enabled"] is False and replaced["channel_ids"] == [webhook["id"]]
        assert ask(f"/alerts/rules/{rule['id']}", "DELETE")[0] == 204

    # Secrets: the password never, the signing secret only in the creation answer.
    everything = "\n".join(seen)
    assert SMTP_PASSWORD not in everything
    assert everything.count(signing_secret) == 1
    assert "tok-123" not in everything


def test_conditions_raise_notifications(served: tuple[str, Path | str, str], sim: Simulator) -> None:
    url, store, keyring = served
    api = url + "/api/v1"
    editor = member(store, "ed@example.com", Role.EDITOR)[1]
    account_id = slack_account(store, keyring, sim)

    for kind, params in [
        ("token_refresh_failed", {}),
        ("rate_limit_saturated", {}),
        ("error_rate", {"threshold": 0.5, "min_calls": 1, "window_s": 600}),
    ]:
        body = {"name": kind, "kind": kind, "params": params, "dedup_window_s": 3600}
        status, _, made = call(api + "/alerts/rules", "POST", token=editor, body=body)
        assert status == 201, made

    # A transient refresh failure recorded on the account, and a 429 blocking its limiter key.
    db = open_store(store)
    try:
        with db.engine.begin() as conn:
            error = {
                "code": "refresh_failed_transient",
                "message": "the token endpoint answered 503",
                "at": "now",
            }
            conn.execute(update(accounts).where(accounts.c.id == account_id).values(last_error=error))
            conn.execute(
                rate_limits.insert().values(
                    key=f"slack:{account_id}",
                    tat=time.time(),
                    blocked_until=time.time() + 600,
                    updated_at=datetime.now(UTC),
                )
            )
    finally:
        db.close()
    status, _, saved = call(
        api + "/universes", "POST", token=editor, body={"document": failing_document("ledger")}
    )
    assert status == 201
    status, _, run = call(
        api + "/runs", "POST", token=editor, body={"universe_id": saved["universe"]["id"], "dry_run": False}
    )
    assert status in (200, 201, 202), run
    assert settle(api, editor, run["run_id"])["status"] == "failed"

    def kinds() -> list[str]:
        return sorted(i["kind"] for i in inbox(api, editor)["items"])

    eventually(
        lambda: kinds() == ["error_rate", "rate_limit_saturated", "token_refresh_failed"], "three notices"
    )
    time.sleep(1.0)  # more rounds see the same conditions: still one each
    items = inbox(api, editor)["items"]
    assert sorted(i["kind"] for i in items) == ["error_rate", "rate_limit_saturated", "token_refresh_failed"]
    by_kind = {i["kind"]: i for i in items}
    assert by_kind["token_refresh_failed"]["facts"]["account_id"] == account_id
    assert by_kind["rate_limit_saturated"]["facts"]["key"] == f"slack:{account_id}"
    assert by_kind["error_rate"]["facts"]["universe_name"] == "ledger"


def test_launch_notify_through_the_workspace_channels(
    served: tuple[str, Path | str, str], smtp: tuple[Mailbox, int], sim: Simulator
) -> None:
    """A launch's notify entries without a channel id: email to the address through the workspace's email
    channel, Slack to the named channel through its Slack channel's account; teams is refused with a fix."""
    url, store, keyring = served
    mailbox, smtp_port = smtp
    api = url + "/api/v1"
    editor = member(store, "ed@example.com", Role.EDITOR)[1]
    account_id = slack_account(store, keyring, sim)
    config = {
        "host": "127.0.0.1",
        "port": smtp_port,
        "from": "cosmogen@example.com",
        "to": ["ops@example.com"],
        "username": SMTP_USER,
        "starttls": False,
    }
    for body in [
        {"name": "mail", "kind": "email", "config": config, "secrets": {"password": SMTP_PASSWORD}},
        {"name": "slack", "kind": "slack", "config": {"account_id": account_id, "channel": "general"}},
    ]:
        assert call(api + "/alerts/channels", "POST", token=editor, body=body)[0] == 201
    status, _, saved = call(
        api + "/universes", "POST", token=editor, body={"document": failing_document("crm")}
    )
    assert status == 201
    notify = [
        {"channel": "email", "target": "oncall@example.com"},
        {"channel": "slack", "target": "C0SIM00001"},
        {"channel": "teams", "target": "https://example.webhook.office.com/x"},
    ]
    launching: dict[str, Any] = {"universe_id": saved["universe"]["id"], "dry_run": False, "notify": notify}
    status, _, launch = call(api + "/launches", "POST", token=editor, body=launching)
    assert status == 201, launch
    status, _, run = call(api + f"/launches/{launch['id']}/runs", "POST", token=editor, body={})
    assert status == 201 and settle(api, editor, run["run_id"])["status"] == "failed"

    eventually(lambda: len(mailbox.messages) == 1 and len(sim.effects) == 1, "the email and the Slack post")
    assert mailbox.messages[0][1] == ["oncall@example.com"] and "Run failed in crm" in mailbox.messages[0][2]
    assert sim.effects[0].data.get("channel") == "C0SIM00001"

    def teams() -> dict[str, Any]:
        status, _, box = call(api + "/notifications", token=editor)
        assert status == 200 and box["items"] == [], box  # no in-app entry: nothing in the inbox
        db = open_store(store)
        try:
            with db.engine.connect() as conn:
                d = notification_deliveries
                rows = conn.execute(select(d.c.kind, d.c.status, d.c.attempts, d.c.last_error)).all()
        finally:
            db.close()
        return {row.kind: row for row in rows}

    eventually(lambda: teams()["teams"].attempts >= 1, "the teams attempt")
    found = teams()
    assert found["email"].status == "sent" and found["slack"].status == "sent"
    assert found["teams"].status == "pending" and "use a webhook channel" in found["teams"].last_error
