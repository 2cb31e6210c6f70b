"""OA-13 (tokens stay server-side), end to end through the CLI against the simulator, which is also the
issue's end-to-end test of `cosmogen accounts connect|disconnect`:

connect a Slack account in the "browser" (the printed URL, the simulator's /oauth/authorize, the redirect
to the command's loopback listener), list it, run a universe whose slack.post_message binding calls the
simulator with the stored token, disconnect (the simulator sees the revocation), run again (refused:
reconnect). Along the way, failures: a token endpoint that echoes the client's credentials in its error,
a refused consent, a revocation endpoint that is down.

Everything a person could see is captured: every output of every command, the authorization URL, the
redirect URLs, the pages the listener showed and their headers. Not one access token, refresh token or
client secret appears in any of it, raw or encoded (raw, base64, base64url, hex, percent-encoded, and any
12-character piece of the raw value)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.connect_cli import Seen, approve, browse, finish, start_connect
from tests.integration import conftest as cli_fixtures
from tests.integration.conftest import CLI, free_port
from tests.oauth_harness import sim_settings

from cosmogen.testing.simulator import Fault, Simulator, ThreadedSimulator

CLIENT_ID = "studio-app"
cosmogen = cli_fixtures.cosmogen  # fixture: the real CLI in a fresh process, data dir in tmp_path


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    with ThreadedSimulator() as server:
        yield server


def forms(value: str) -> dict[str, str]:
    raw = value.encode()
    found = {
        "raw": value,
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "hex": raw.hex(),
        "percent": quote(value, safe=""),
    }
    found |= {f"piece {i}": value[i : i + 12] for i in range(max(len(value) - 11, 1))}
    return found


def leaks(seen: Seen, canaries: list[str]) -> list[str]:
    found = []
    for canary in canaries:
        for form, needle in forms(canary).items():
            for text in seen.texts:
                if needle in text:
                    found.append(f"{canary!r} as {form} in {text[:120]!r}")
    return found


def universe(tmp_path: Path) -> str:
    path = tmp_path / "post.json"
    path.write_text(
        json.dumps(
            {
                "cosmogen": "universe/1",
                "name": "post",
                "nodes": [
                    {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "tides"}},
                    {"id": "tell", "type": "become", "entity": "post:1", "transform": {"told": "true"}},
                ],
                "edges": [{"source": "b", "target": "tell"}],
                "bindings": [
                    {
                        "id": "post",
                        "node": "tell",
                        "kind": "provider",
                        "capability": "slack.post_message",
                        "account": "team",
                        "settings": {"channel": "C0SIM00001", "text": "About {{ topic }}"},
                    }
                ],
            }
        )
    )
    return str(path)


def test_oa13_connect_use_disconnect_show_no_token_anywhere(
    cosmogen: CLI, sim: Simulator, tmp_path: Path
) -> None:
    data_dir = tmp_path / "cosmogen-data"
    client_secret = f"cs-{secrets.token_hex(16)}"
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/oauth/callback"
    sim.oauth.register_client(CLIENT_ID, client_secret, [redirect])
    settings = json.dumps(sim_settings(sim))
    connect_args = (
        "team", "--provider", "slack", "--client-id", CLIENT_ID, "--client-secret-stdin",
        "--settings", settings, "--base-url", sim.url, "--port", str(port), "--timeout", "60",
    )  # fmt: skip
    seen = Seen()

    def shown(result: tuple[int, str, str] | object) -> None:
        if isinstance(result, tuple):
            seen.add(result[1], result[2])
        else:
            seen.add(result.stdout, result.stderr)  # type: ignore[attr-defined]

    # 1. A token endpoint that echoes the client's credentials (Basic header) in its error body.
    sim.inject(Fault.echo_auth(), "oauth.token")
    connecting = start_connect(data_dir, *connect_args, stdin=client_secret + "\n")
    _, _, status, page = approve(connecting, seen)
    result = finish(connecting)
    shown(result)
    assert result[0] == 1 and status == 400 and "invalid_client" in result[2], result
    assert "client id and secret" in page
    echoed = sim.log.select("oauth.token")[-1]
    assert echoed.status == 401  # the simulator did echo it; we did not repeat it

    # 2. Consent refused: the authorization server redirects back with error=access_denied.
    connecting = start_connect(data_dir, *connect_args, stdin=client_secret + "\n")
    state = dict(p.split("=", 1) for p in connecting.url.split("?", 1)[1].split("&"))["state"]
    denied_url = f"{redirect}?error=access_denied&state={state}&iss={quote(sim.url, safe='')}"
    status, page, headers = browse(denied_url)
    seen.add(connecting.url, denied_url, page, repr(headers))
    result = finish(connecting)
    shown(result)
    assert result[0] == 1 and status == 400 and "declined" in result[2] and "declined" in page

    # 3. Connected for real.
    before = sim.counts["oauth.token"]
    connecting = start_connect(data_dir, *connect_args, stdin=client_secret + "\n")
    assert connecting.url.startswith(f"{sim.url}/oauth/authorize?")
    _, _, status, page = approve(connecting, seen)
    result = finish(connecting)
    shown(result)
    assert result[0] == 0, result
    assert status == 200 and "connected" in page
    assert "connected slack account 'team'" in result[1] and "scopes: chat:write" in result[1]
    assert sim.counts["oauth.token"] == before + 1
    [family] = [f for f in sim.oauth.families.values() if f.revoked is None]
    access, refresh = family.access_tokens[-1], family.current_refresh
    assert refresh is not None

    listed = cosmogen("accounts", "list", "--json")
    shown(listed)
    [account] = json.loads(listed.stdout)
    assert (account["status"], account["scopes"], account["secret_fields"]) == (
        "connected",
        ["chat:write"],
        ["access_token", "client_secret", "refresh_token"],
    )

    # 4. Used: a provider binding posts to Slack with the stored token.
    ran = cosmogen("run", universe(tmp_path), "--json")
    shown(ran)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
    [posted] = sim.log.select("slack.postMessage")
    assert posted.credential == access and posted.body["text"] == "About tides"

    # 5. Disconnected while the revocation endpoint is down, then again once it is back.
    sim.inject(Fault.server_error(503), "oauth.revoke", times=2)
    down = cosmogen("accounts", "disconnect", "team")
    shown(down)
    assert down.returncode == 0 and "waits in the outbox" in down.stderr
    assert sim.oauth.check_access_token(access) == "valid"
    again = cosmogen("accounts", "disconnect", "team")
    shown(again)
    assert again.returncode == 0 and "revoked at the provider" in again.stdout
    assert [c.body["token"] for c in sim.log.select("oauth.revoke")][-2:] == [refresh, access]
    assert sim.oauth.check_access_token(access) == "revoked"

    # 6. Later use is refused, saying to reconnect; no call reaches Slack.
    refused = cosmogen("run", universe(tmp_path), "--json")
    shown(refused)
    report = json.loads(refused.stdout)
    assert report["status"] == "failed" and "reconnect" in refused.stdout
    assert len(sim.log.select("slack.postMessage")) == 1
    listed = cosmogen("accounts", "list", "--json")
    shown(listed)
    assert json.loads(listed.stdout)[0]["secret_fields"] == ["client_secret"]

    # The canaries: every token the server issued to us, and the client secret.
    issued = [t for f in sim.oauth.families.values() for t in (*f.access_tokens, *f.refresh_tokens)]
    assert access in issued and len(seen.texts) > 20
    basic = base64.b64encode(f"{CLIENT_ID}:{client_secret}".encode()).decode()  # the Basic header's value
    assert leaks(seen, [*issued, client_secret, basic]) == []
