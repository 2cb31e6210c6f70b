"""API-04 (mass assignment, BOPLA) for the resource API, over real HTTP against `cosmogen serve`.

Every operation of the walk that takes a JSON body is sent a valid body plus, one at a time, each of the
protected properties (`id`, `workspace_id`, `owner_id`, `role`, `created_at`, `encrypted_value`,
`status`...): each answers 422 naming that field (never its value), and the store's rows are the same
afterwards. Then the whole walk runs as an admin and no response, at any depth, carries an internal
field (checkpoint state, worker and job ids, leases, token hashes, key fingerprints, ciphertext).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.api.helpers import call
from tests.integration.api.workspaces import member, table_digest
from tests.integration.conftest import serving
from tests.reliability.api_walk import CALLS, body_for, request, seed

from cosmogen.domain.roles import Role

PROTECTED: dict[str, Any] = {
    "id": "01FAKEFAKEFAKEFAKEFAKEFAKE",
    "workspace_id": "other-workspace",
    "owner_id": "someone",
    "role": "admin",
    "created_at": "2000-01-01T00:00:00Z",
    "encrypted_value": "AAAA",
    "status": "succeeded",
    "deployment_status": "live",
    "created_by": "someone",
    "launch_id": "01FAKE",
}
INTERNAL = frozenset(
    {"state", "cursor", "worker_id", "job_id", "lease_expires_at", "requested_action", "webhook_token_hash",
     "token_hash", "fingerprint", "owner", "lease_until", "password_hash", "ciphertext", "nonce", "dek",
     "sealed", "encrypted_value", "workspace_id", "secret_hash", "claimed_by"}
)  # fmt: skip


def keys_of(value: Any) -> set[str]:
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found |= set(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_api04_extra_properties_are_refused_and_nothing_internal_is_answered(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        api = url + "/api/v1"
        _, admin = member(data, "admin@example.com", Role.ADMIN)
        seeded = seed(api, admin, name="target")
        with_body = [one for one in CALLS if one.body is not None]
        assert len(with_body) >= 9
        before = table_digest(data)
        refused = 0
        for one in with_body:
            path = seeded.fill(one.path) + seeded.fill(one.query)
            valid = body_for(one, seeded, "target")
            for field, value in PROTECTED.items():
                if field in valid:
                    continue
                status, headers, body = call(
                    url + path, one.method, token=admin, body={**valid, field: value}
                )
                assert status == 422, (one.operation, field, status, body)
                assert headers["content-type"] == "application/problem+json"
                assert body["code"] == "invalid" and any(
                    e["field"] == f"body.{field}" for e in body["errors"]
                )
                assert str(value) not in json.dumps(body)  # the value is never echoed
                refused += 1
        assert refused >= 80
        assert table_digest(data) == before, "a refused body changed the store"

        # The whole walk as an admin: no internal field anywhere in any answer.
        answers = []
        confirm = "0.0"
        for one in CALLS:
            status, body = request(url, admin, one, seeded, name="target", confirm=confirm)
            answers.append((one.operation, status))
            if isinstance(body, dict) and "confirm_token" in body:
                confirm = body["confirm_token"]
            leaked = keys_of(body) & INTERNAL
            assert not leaked, (one.operation, leaked)
        assert sum(1 for _, status in answers if status < 300) >= 25, answers
