"""Signed webhooks end to end through the real CLI and `cosmogen serve`: the secret is printed once when the
trigger is made, never by `launches list`, again only by `launches reveal-webhook-secret` (which says it
prints a secret); `rotate-webhook-secret` replaces it; `cosmogen keys rotate` re-wraps it while serve
runs, and serve keeps verifying signatures through the rotation and after the old key is retired."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cosmogen.domain.webhook_signature import header_value

from .conftest import CLI, EXAMPLES


def _post(url: str, secret: str | None, body: dict[str, Any], delivery: str) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Cosmogen-Delivery": delivery}
    if secret is not None:
        headers["X-Cosmogen-Signature"] = header_value([secret.encode()], int(time.time()), data)
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our server)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_signed_webhooks_through_the_cli_and_serve(
    served: tuple[str, subprocess.Popen[str]], cosmogen: CLI
) -> None:
    url, _ = served
    launch = json.loads(
        _ok(cosmogen("launch", str(EXAMPLES / "banking.json"), "--trigger", "webhook", "--json")).stdout
    )
    ((trigger_id, path),) = launch["webhook_paths"].items()
    secret = launch["webhook_secrets"][trigger_id]
    assert secret.startswith("whsec_") and len(secret) == 49
    assert launch["triggers"][0]["spec"] == {"kind": "webhook", "signed": True, "idempotency_key": "optional"}
    hook = url + path

    listed = _ok(cosmogen("launches", "list", "--json")).stdout
    assert secret not in listed and secret[6:] not in listed
    assert _post(hook, secret, {"amount": 1}, "d-1")[0] == 202
    status, answer = _post(hook, None, {"amount": 2}, "d-2")
    assert (status, answer["error"]["code"]) == (401, "signature_missing")

    revealed = _ok(cosmogen("launches", "reveal-webhook-secret", trigger_id))
    assert revealed.stdout.split() == [secret, "(current)"]
    assert "printing the signing secret" in revealed.stderr

    rotated = _ok(cosmogen("launches", "rotate-webhook-secret", trigger_id, "--grace-seconds", "0"))
    new = rotated.stdout.strip()
    assert new.startswith("whsec_") and new != secret
    assert "printing the new signing secret" in rotated.stderr and "no longer works" in rotated.stderr
    assert _post(hook, secret, {"amount": 3}, "d-3")[1]["error"]["code"] == "signature_invalid"
    assert _post(hook, new, {"amount": 3}, "d-3")[0] == 202

    # Vault key rotation while serve runs: the secret is re-wrapped, serve keeps verifying.
    keys = _ok(cosmogen("keys", "rotate"))
    assert "done: every row uses k2" in keys.stdout
    status_json = json.loads(_ok(cosmogen("keys", "status", "--json")).stdout)
    assert status_json["rows_to_rewrap"] == 0
    assert _post(hook, new, {"amount": 4}, "d-4")[0] == 202
    assert "retired k1" in _ok(cosmogen("keys", "retire", "k1")).stdout
    assert _post(hook, new, {"amount": 5}, "d-5")[0] == 202
    again = json.loads(_ok(cosmogen("launches", "reveal-webhook-secret", trigger_id, "--json")).stdout)
    assert again["secrets"] == [{"secret": new, "expires_at": None}]


def test_unsigned_triggers_and_mistakes_say_what_to_do(cosmogen: CLI, tmp_path: Path) -> None:
    # Revealing on a store with no vault key says so, and makes no key.
    nothing = cosmogen("launches", "reveal-webhook-secret", "nope")
    assert nothing.returncode == 2 and "no vault keyring yet" in nothing.stderr
    assert not (tmp_path / "cosmogen-data" / "vault.keys").exists()
    made = _ok(
        cosmogen(
            "launch", str(EXAMPLES / "banking.json"), "--trigger", '{"kind": "webhook", "signed": false}'
        )
    )
    assert "unsigned: anyone holding the URL can post to it" in made.stdout
    assert "whsec_" not in made.stdout
    signed = _ok(cosmogen("launch", str(EXAMPLES / "banking.json"), "--trigger", "webhook"))
    assert "signing secret: whsec_" in signed.stdout and "(shown once" in signed.stdout
    trigger_id = json.loads(_ok(cosmogen("launches", "list", "--json")).stdout)[-1]["triggers"][0]["id"]
    refused = cosmogen("launches", "reveal-webhook-secret", trigger_id)
    assert refused.returncode == 2
    assert "has no signing secret (it is unsigned)" in refused.stderr
    assert f"rotate-webhook-secret {trigger_id}" in refused.stderr
    unknown = cosmogen("launches", "rotate-webhook-secret", "nope")
    assert unknown.returncode == 2 and "no webhook trigger 'nope'" in unknown.stderr
    bad = cosmogen("launch", str(EXAMPLES / "banking.json"), "--trigger", '{"kind": "webhook", "signed": 1}')
    assert bad.returncode == 2 and "'signed' must be true or false" in bad.stderr
