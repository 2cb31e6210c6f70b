"""OpenAPI links: which field of an answer feeds which parameter of a next request.

A client (and Schemathesis's stateful phase, API-01) follows them: the universe a save answers can be
read, run, launched and archived; a run's id can be paused or retried; a version's document can be
validated or saved again. Each function names the operations that take one kind of object, given where
the object's id is in the answer (a JSON pointer), and is used in the producing routes' `responses=`.
Targets are named by `operationRef` (the path and method), so renaming a handler changes nothing.
"""

from __future__ import annotations

from typing import Any

Links = dict[str, dict[str, Any]]


def _to(method: str, path: str, parameters: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
    link: dict[str, Any] = {"operationRef": f"#/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}"}
    if parameters:
        link["parameters"] = parameters
    if body is not None:
        link["requestBody"] = body
    return link


def answer(status: int, *groups: Links) -> dict[int | str, dict[str, Any]]:
    """`responses=` entry: the `status` answer links to every operation of `groups`."""
    merged: Links = {}
    for group in groups:
        merged.update(group)
    return {status: {"links": merged}}


def _at(pointer: str) -> str:
    return f"$response.body#{pointer}"


def universe(pointer: str) -> Links:
    u = "/api/v1/universes/{universe_id}"
    by_id = {"universe_id": _at(pointer)}
    return {
        "GetUniverse": _to("get", u, by_id),
        "ListVersions": _to("get", u + "/versions", by_id),
        "ExportUniverse": _to("get", u + "/export", by_id),
        "UniverseMetrics": _to("get", u + "/metrics", by_id),
        "ArchiveUniverse": _to("post", u + "/archive", by_id),
        "DeleteUniverse": _to("delete", u, by_id),
        "RunUniverse": _to("post", "/api/v1/runs", body={"universe_id": _at(pointer)}),
        "LaunchUniverse": _to("post", "/api/v1/launches", body={"universe_id": _at(pointer)}),
        "UniverseEvents": _to("get", "/api/v1/events/sse", {"query.universe": _at(pointer)}),
    }


def version(pointer: str, universe_pointer: str) -> Links:
    """A version, and the universe it belongs to (`universe_pointer`)."""
    v = "/api/v1/versions/{version_id}"
    by_id = {"version_id": _at(pointer)}
    both = {"universe_id": _at(universe_pointer)}
    return {
        "GetVersion": _to("get", v, by_id),
        "ValidateVersion": _to("get", v + "/validation", by_id),
        "RunVersion": _to("post", "/api/v1/runs", body={"version_id": _at(pointer)}),
        "LaunchVersion": _to("post", "/api/v1/launches", body={"version_id": _at(pointer)}),
        "ActivateVersion": _to(
            "put", "/api/v1/universes/{universe_id}/active", both, body={"version_id": _at(pointer)}
        ),
        "ExportVersion": _to(
            "get", "/api/v1/universes/{universe_id}/export", {**both, "query.version_id": _at(pointer)}
        ),
        "DiffVersions": _to(
            "get",
            "/api/v1/universes/{universe_id}/diff",
            {**both, "query.from": _at(pointer), "query.to": _at(pointer)},
        ),
    }


def document(pointer: str, universe: str | None = None) -> Links:
    """A universe document (`pointer` "": the whole answer): validated, imported, saved as a new universe,
    or as a new version of its own universe (`universe`: a runtime expression naming its id)."""
    body = {"document": "$response.body" if pointer == "" else _at(pointer)}
    found = {
        "ValidateDocument": _to("post", "/api/v1/validate", body=body),
        "ImportDocument": _to("post", "/api/v1/universes/import", body=body),
        "SaveDocument": _to("post", "/api/v1/universes", body=body),
    }
    if universe is not None:
        found["SaveAsVersion"] = _to(
            "post", "/api/v1/universes/{universe_id}/versions", {"universe_id": universe}, body
        )
    return found


def validated() -> Links:
    """A document that was just validated, saved."""
    return {"SaveValidated": _to("post", "/api/v1/universes", body={"document": "$request.body#/document"})}


def run(pointer: str) -> Links:
    r = "/api/v1/runs/{run_id}"
    by_id = {"run_id": _at(pointer)}
    actions = ("pause", "resume", "cancel", "retry-anyway", "mark-done", "retry", "rerun")
    return {
        "GetRun": _to("get", r, by_id),
        "RunEvents": _to("get", r + "/events", by_id),
        "RunStream": _to("get", "/api/v1/events/sse", {"query.run": _at(pointer)}),
        **{f"Run{a.title().replace('-', '')}": _to("post", f"{r}/{a}", by_id) for a in actions},
    }


def launch(pointer: str) -> Links:
    lp = "/api/v1/launches/{launch_id}"
    by_id = {"launch_id": _at(pointer)}
    actions = ("go-live", "pause", "resume", "archive", "stop", "runs")
    return {
        "GetLaunch": _to("get", lp, by_id),
        **{f"Launch{a.title().replace('-', '')}": _to("post", f"{lp}/{a}", by_id) for a in actions},
    }


def account(pointer: str) -> Links:
    a = "/api/v1/accounts/{account_id}"
    by_id = {"account_id": _at(pointer)}
    actions = ("test", "disable", "enable", "refresh", "disconnect")
    return {
        "AccountAudit": _to("get", "/api/v1/audit", {"query.object_id": _at(pointer)}),
        "GetAccount": _to("get", a, by_id),
        "ChangeAccount": _to("patch", a, by_id),
        "DeleteAccount": _to("delete", a, by_id),
        **{f"Account{x.title()}": _to("post", f"{a}/{x}", by_id) for x in actions},
    }


def member(pointer: str) -> Links:
    m = "/api/v1/members/{user_id}"
    by_id = {"user_id": _at(pointer)}
    return {"ChangeRole": _to("patch", m, by_id), "RemoveMember": _to("delete", m, by_id)}


def invite(pointer: str) -> Links:
    """The one-time token an invitation answers, for the invited person's POST /api/v1/invite."""
    return {"AcceptInvite": _to("post", "/api/v1/invite", body={"token": _at(pointer)})}


def token(pointer: str) -> Links:
    return {"RevokeToken": _to("delete", "/api/v1/tokens/{token_id}", {"token_id": _at(pointer)})}


def alert_rule(pointer: str) -> Links:
    r = "/api/v1/alerts/rules/{rule_id}"
    by_id = {"rule_id": _at(pointer)}
    return {
        "GetRule": _to("get", r, by_id),
        "ReplaceRule": _to("put", r, by_id),
        "DeleteRule": _to("delete", r, by_id),
    }


def channel(pointer: str) -> Links:
    c = "/api/v1/alerts/channels/{channel_id}"
    by_id = {"channel_id": _at(pointer)}
    return {
        "GetChannel": _to("get", c, by_id),
        "ChangeChannel": _to("patch", c, by_id),
        "TestChannel": _to("post", c + "/test", by_id),
        "DeleteChannel": _to("delete", c, by_id),
    }


def notification(pointer: str) -> Links:
    n = "/api/v1/notifications/{notification_id}/read"
    return {"MarkRead": _to("post", n, {"notification_id": _at(pointer)})}


def delete_confirmed() -> Links:
    """The 409 of a first DELETE /universes/{id} carries the token that confirms it."""
    return {
        "ConfirmDelete": _to(
            "delete",
            "/api/v1/universes/{universe_id}",
            {"universe_id": "$request.path.universe_id", "query.confirm": _at("/confirm_token")},
        )
    }
