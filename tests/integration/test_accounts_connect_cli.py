"""`cosmogen accounts connect|disconnect|remove` for OAuth accounts: every bad input gets a clear error
and the exit code of the other commands (2: the input is wrong; 1: it did not work), a redirect that is
not the connection's own is ignored, a timeout ends the flow, and `remove` revokes before deleting.
The full journey (connect, use, disconnect) is tests/reliability/test_oa13_tokens_stay_server_side.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmogen.cli.main import cli
from cosmogen.integrations.oauth import new_state
from cosmogen.testing.simulator import DEFAULT_API_KEY, Fault, Simulator, ThreadedSimulator
from tests.connect_cli import Seen, approve, browse, finish, start_connect
from tests.oauth_harness import sim_settings

from .conftest import CLI, free_port

CLIENT_ID = "studio-app"
PLAIN_HTTP_ENDPOINT = '{"oauth": {"token_url": "http://as.example/token"}}'
SECRET = "cs-the-apps-client-secret-0f3a"  # noqa: S105 - the test's own fake secret


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    with ThreadedSimulator() as server:
        yield server


def args_for(sim: Simulator, port: int, *extra: str, name: str = "team") -> list[str]:
    sim.oauth.register_client(CLIENT_ID, SECRET, [f"http://127.0.0.1:{port}/oauth/callback"])
    return [
        name, "--provider", "slack", "--client-id", CLIENT_ID, "--client-secret-stdin",
        "--settings", json.dumps(sim_settings(sim)), "--base-url", sim.url, "--port", str(port), *extra,
    ]  # fmt: skip


def connect(tmp_path: Path, sim: Simulator, *extra: str, name: str = "team") -> tuple[int, str, str]:
    connecting = start_connect(
        tmp_path / "cosmogen-data", *args_for(sim, free_port(), *extra, name=name), stdin=SECRET + "\n"
    )
    approve(connecting, Seen())
    return finish(connecting)


BAD_INPUT = [
    (["x1", "--provider", "gmail", "--client-id", "c"], "", "no provider 'gmail'; OAuth providers: "),
    (["x1", "--provider", "openai", "--client-id", "c"], "", "openai accounts use api_key, not OAuth"),
    (["x1", "--provider", "slack"], "", "missing --client-id"),
    (["x1", "--provider", "slack", "--client-id", "c", "--settings", "{oops"], "", "--settings is not JSON"),
    (["x1", "--provider", "http", "--client-id", "c"], "", "has no built-in OAuth endpoints"),
    (
        ["x1", "--provider", "slack", "--client-id", "c", "--settings", PLAIN_HTTP_ENDPOINT],
        "",
        '"oauth.token_url" must be an https URL',
    ),
    (
        ["x1", "--provider", "slack", "--client-id", "c", "--settings", '{"oauth": {"secret": "s"}}'],
        "",
        'unknown key(s) secret in the account setting "oauth"',
    ),
    (["x1", "--provider", "slack", "--client-id", "c", "--scope", "a b"], "", "a scope is one word"),
    (["x1", "--provider", "slack", "--client-id", "c", "--client-secret-stdin"], "\n", "held no client"),
    (["x1", "--provider", "slack", "--client-id", "c", "--timeout", "0"], "", "--timeout"),
]


def test_bad_input_is_refused_with_what_is_wrong(tmp_path: Path) -> None:
    # In-process (click's runner) to keep the table quick; the real entry point runs in every other test.
    runner = CliRunner()
    env = {"COSMOGEN_DATA_DIR": str(tmp_path / "data")}
    for args, stdin, said in BAD_INPUT:
        result = runner.invoke(cli, ["accounts", "connect", *args, "--no-open"], input=stdin, env=env)
        assert (result.exit_code, said in result.stderr) == (2, True), (args, result.output, result.stderr)
    listed = runner.invoke(cli, ["accounts", "list", "--json"], env=env)
    assert json.loads(listed.stdout) == []  # nothing was saved


def test_a_port_in_use_is_refused(cosmogen: CLI, sim: Simulator) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cosmogen("accounts", "connect", *args_for(sim, port), "--no-open", stdin=SECRET + "\n")
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "pick another --port" in result.stderr


def test_no_redirect_within_the_timeout_ends_the_flow(cosmogen: CLI, sim: Simulator, tmp_path: Path) -> None:
    port = free_port()
    connecting = start_connect(
        tmp_path / "cosmogen-data", *args_for(sim, port, "--timeout", "1"), stdin=SECRET + "\n"
    )
    code, out, err = finish(connecting)
    assert code == 1 and "no redirect came back within 1 s" in err
    assert "/oauth/callback" in err and out.count("http") >= 1
    [account] = json.loads(cosmogen("accounts", "list", "--json").stdout)
    assert account["status"] == "pending" and account["secret_fields"] == ["client_secret"]
    assert sim.counts["oauth.token"] == 0


def test_a_redirect_that_is_not_this_connections_is_ignored(sim: Simulator, tmp_path: Path) -> None:
    port = free_port()
    connecting = start_connect(tmp_path / "cosmogen-data", *args_for(sim, port), stdin=SECRET + "\n")
    # Someone else's (or a forged) redirect reaches the listener first: refused, and the command waits on.
    status, page, _ = browse(f"http://127.0.0.1:{port}/oauth/callback?code=forged&state={new_state()}")
    assert status == 400 and "matches no connection in progress" in page
    status, _, _ = browse(f"http://127.0.0.1:{port}/oauth/callback")
    assert status == 400
    _, _, status, page = approve(connecting, Seen())
    code, out, err = finish(connecting)
    assert (code, status) == (0, 200), err
    assert "connected slack account 'team'" in out and "ignored a redirect" in err
    assert sim.counts["oauth.token"] == 1  # the forged code was never sent to the token endpoint


def test_denied_consent_and_a_refused_exchange_fail_with_what_to_do(
    cosmogen: CLI, sim: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    connecting = start_connect(tmp_path / "cosmogen-data", *args_for(sim, port), stdin=SECRET + "\n")
    state = connecting.url.split("state=", 1)[1].split("&", 1)[0]
    status, _, _ = browse(
        f"http://127.0.0.1:{port}/oauth/callback?error=access_denied&state={state}&iss={sim.url}"
    )
    code, _, err = finish(connecting)
    assert (code, status) == (1, 400) and "declined" in err and "approve" in err
    [account] = json.loads(cosmogen("accounts", "list", "--json").stdout)
    assert account["status"] == "error"

    sim.inject(Fault.server_error(500), "oauth.token")
    code, _, err = connect(tmp_path, sim)
    assert code == 1 and "the code exchange was refused (http_500" in err and "start connecting again" in err
    code, out, err = connect(tmp_path, sim)  # and then it works: a reconnect of the same account
    assert code == 0 and "connected slack account 'team'" in out, err


def test_connect_twice_disconnect_and_remove(cosmogen: CLI, sim: Simulator, tmp_path: Path) -> None:
    assert connect(tmp_path, sim)[0] == 0
    again = cosmogen("accounts", "connect", *args_for(sim, free_port()), "--no-open", stdin=SECRET + "\n")
    assert again.returncode == 2 and "is connected; disconnect it first" in again.stderr

    added = cosmogen(
        "accounts", "add", "gpt", "--provider", "openai", "--base-url", sim.url, "--secret-stdin",
        stdin=DEFAULT_API_KEY + "\n",
    )  # fmt: skip
    assert added.returncode == 0
    taken = cosmogen("accounts", "connect", *args_for(sim, free_port(), name="gpt"), "--no-open", stdin="s\n")
    assert taken.returncode == 2 and "an account named 'gpt' already exists" in taken.stderr
    not_oauth = cosmogen("accounts", "disconnect", "gpt")
    assert not_oauth.returncode == 2 and "only OAuth accounts are disconnected" in not_oauth.stderr
    unknown = cosmogen("accounts", "disconnect", "nobody")
    assert unknown.returncode == 2 and "no account named 'nobody'" in unknown.stderr

    # `remove` revokes first; while the provider's endpoint is down it keeps the account.
    sim.inject(Fault.server_error(503), "oauth.revoke", times=None)
    kept = cosmogen("accounts", "remove", "team")
    assert kept.returncode == 1 and "kept account 'team'" in kept.stderr and "--keep-grant" in kept.stderr
    sim.faults.clear()
    removed = cosmogen("accounts", "remove", "team")
    assert removed.returncode == 0, removed.stderr
    assert [c.status for c in sim.log.select("oauth.revoke")][-2:] == [200, 200]
    names = [a["name"] for a in json.loads(cosmogen("accounts", "list", "--json").stdout)]
    assert names == ["gpt"]


def test_reconnect_reuses_the_stored_client_id_and_secret(
    cosmogen: CLI, sim: Simulator, tmp_path: Path
) -> None:
    assert connect(tmp_path, sim)[0] == 0
    assert cosmogen("accounts", "disconnect", "team").returncode == 0
    port = free_port()
    args = args_for(sim, port)
    # No --client-id, no secret on stdin: the stored ones are used.
    bare = [a for a in args if a not in (CLIENT_ID, "--client-id", "--client-secret-stdin")]
    connecting = start_connect(tmp_path / "cosmogen-data", *bare)
    approve(connecting, Seen())
    code, out, err = finish(connecting)
    assert code == 0 and "connected slack account 'team'" in out, err
    [*_, last] = sim.log.select("oauth.token")
    assert last.headers["Authorization"].startswith("Basic ")  # the stored client secret authenticated
