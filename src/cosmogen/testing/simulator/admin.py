"""Steering a simulator that runs in another process: JSON endpoints under `/_sim/`, answered only to
loopback clients, and a small synchronous client for them. These requests are not in the request log."""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from cosmogen.testing.simulator.faults import Fault
from cosmogen.testing.simulator.targets import ANY

if TYPE_CHECKING:
    from cosmogen.testing.simulator.server import Simulator

LOOPBACK = frozenset({"127.0.0.1", "::1"})


def routes(sim: Simulator) -> list[web.RouteDef]:
    def guarded(handler: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.remote not in LOOPBACK:
                return web.json_response({"error": "the admin API answers loopback clients only"}, status=403)
            data: dict[str, Any] = {}
            if request.method in ("POST", "PUT"):
                # JSON only: a web page cannot send that cross-origin without a preflight we never answer.
                if request.content_type != "application/json":
                    return web.json_response({"error": "send application/json"}, status=415)
                try:
                    data = await request.json()
                except ValueError:
                    return web.json_response({"error": "the body is not JSON"}, status=400)
                if not isinstance(data, dict):
                    return web.json_response({"error": "the body must be a JSON object"}, status=400)
            try:
                return web.json_response(await handler(request, data))
            except (KeyError, TypeError, ValueError) as exc:
                return web.json_response({"error": f"bad request: {exc}"}, status=400)

        return handle

    async def health(request: web.Request, data: dict[str, Any]) -> Any:
        return {"ok": True, "name": sim.name, "url": sim.url}

    async def log(request: web.Request, data: dict[str, Any]) -> Any:
        return {"entries": [e.to_json() for e in sim.log.select(request.query.get("route", ANY))]}

    async def stats(request: web.Request, data: dict[str, Any]) -> Any:
        route = request.query.get("route", ANY)
        window = float(request.query.get("window", "1"))
        return {
            "counts": dict(sim.counts),
            "requests": len(sim.log.select(route)),
            "status_429": sim.log.count_429(route),
            "max_in_window": sim.log.max_in_window(route, window),
            "span_s": sim.log.span(route),
            "effects": len(sim.effects),
            "keys": dict(sim.keys),
            "revocations": [list(r) for r in sim.oauth.revocations],
        }

    async def effects(request: web.Request, data: dict[str, Any]) -> Any:
        return {"effects": [vars(e) for e in sim.effects]}

    async def reset(request: web.Request, data: dict[str, Any]) -> Any:
        sim.reset(oauth=bool(data.get("oauth", False)))
        return {"ok": True}

    async def list_faults(request: web.Request, data: dict[str, Any]) -> Any:
        return {"faults": [f.to_json() for f in sim.faults.items]}

    async def add_fault(request: web.Request, data: dict[str, Any]) -> Any:
        options = {k: data.pop(k) for k in ("route", "times", "after") if k in data}
        times = options.get("times", 1)
        item = sim.inject(
            Fault.from_json(data),
            str(options.get("route", ANY)),
            times=None if times is None else int(times),
            after=int(options.get("after", 0)),
        )
        return item.to_json()

    async def clear_faults(request: web.Request, data: dict[str, Any]) -> Any:
        sim.faults.clear()
        return {"ok": True}

    async def list_limits(request: web.Request, data: dict[str, Any]) -> Any:
        return {"limits": {t: {"rate": p.rate, "burst": p.burst} for t, p in sim.limits.policies.items()}}

    async def set_limit(request: web.Request, data: dict[str, Any]) -> Any:
        policy = sim.limit(str(data.get("route", ANY)), float(data["rate"]), int(data["burst"]))
        return {"rate": policy.rate, "burst": policy.burst}

    async def clear_limits(request: web.Request, data: dict[str, Any]) -> Any:
        if "route" in request.query:
            sim.limits.remove(request.query["route"])
        else:
            sim.limits.clear()
        return {"ok": True}

    async def add_api_key(request: web.Request, data: dict[str, Any]) -> Any:
        sim.api_keys.add(str(data["key"]))
        return {"ok": True}

    async def add_client(request: web.Request, data: dict[str, Any]) -> Any:
        secret = data.get("client_secret")
        client = sim.oauth.register_client(
            str(data["client_id"]),
            None if secret is None else str(secret),
            [str(u) for u in data.get("redirect_uris", [])],
        )
        return {"client_id": client.client_id, "redirect_uris": list(client.redirect_uris)}

    async def oauth_settings(request: web.Request, data: dict[str, Any]) -> Any:
        if "expires_in" in data:
            sim.oauth.expires_in = None if data["expires_in"] is None else int(data["expires_in"])
        if "rotate_refresh_tokens" in data:
            sim.oauth.rotate_refresh_tokens = bool(data["rotate_refresh_tokens"])
        if "code_ttl_s" in data:
            sim.oauth.code_ttl_s = float(data["code_ttl_s"])
        return {
            "expires_in": sim.oauth.expires_in,
            "rotate_refresh_tokens": sim.oauth.rotate_refresh_tokens,
            "code_ttl_s": sim.oauth.code_ttl_s,
        }

    async def issue(request: web.Request, data: dict[str, Any]) -> Any:
        if "expires_in" in data:
            expires_in = None if data["expires_in"] is None else int(data["expires_in"])
            return sim.oauth.issue(
                str(data["client_id"]), str(data.get("scope", "")), expires_in=expires_in
            ).to_json()
        return sim.oauth.issue(str(data["client_id"]), str(data.get("scope", ""))).to_json()

    async def expire(request: web.Request, data: dict[str, Any]) -> Any:
        token = data.get("token")
        return {"expired": sim.oauth.expire(None if token is None else str(token))}

    async def revoke(request: web.Request, data: dict[str, Any]) -> Any:
        return {"revoked": sim.oauth.revoke_family(str(data["token"]))}

    return [
        web.get("/_sim/health", guarded(health)),
        web.get("/_sim/log", guarded(log)),
        web.get("/_sim/stats", guarded(stats)),
        web.get("/_sim/effects", guarded(effects)),
        web.post("/_sim/reset", guarded(reset)),
        web.get("/_sim/faults", guarded(list_faults)),
        web.post("/_sim/faults", guarded(add_fault)),
        web.delete("/_sim/faults", guarded(clear_faults)),
        web.get("/_sim/limits", guarded(list_limits)),
        web.post("/_sim/limits", guarded(set_limit)),
        web.delete("/_sim/limits", guarded(clear_limits)),
        web.post("/_sim/api-keys", guarded(add_api_key)),
        web.post("/_sim/oauth/clients", guarded(add_client)),
        web.post("/_sim/oauth/settings", guarded(oauth_settings)),
        web.post("/_sim/oauth/issue", guarded(issue)),
        web.post("/_sim/oauth/expire", guarded(expire)),
        web.post("/_sim/oauth/revoke", guarded(revoke)),
    ]


class AdminClient:
    """The `/_sim/` API from another process, synchronously (stdlib only): `AdminClient(url).inject(...)`."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://127.0.0.1:", "http://[::1]:", "http://localhost:")):
            raise ValueError("the simulator's admin API is on loopback only")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (a loopback URL, checked above)
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            return json.loads(response.read())

    def inject(self, route: str = ANY, *, times: int | None = 1, after: int = 0, **fault: Any) -> Any:
        return self.call("POST", "/_sim/faults", {"route": route, "times": times, "after": after, **fault})

    def clear_faults(self) -> Any:
        return self.call("DELETE", "/_sim/faults")

    def limit(self, route: str, rate: float, burst: int) -> Any:
        return self.call("POST", "/_sim/limits", {"route": route, "rate": rate, "burst": burst})

    def reset(self, *, oauth: bool = False) -> Any:
        return self.call("POST", "/_sim/reset", {"oauth": oauth})

    def log(self, route: str = ANY) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/_sim/log?route={quote(route)}")["entries"])

    def stats(self, route: str = ANY, window: float = 1.0) -> dict[str, Any]:
        return dict(self.call("GET", f"/_sim/stats?route={quote(route)}&window={window}"))

    def issue(self, client_id: str, scope: str = "") -> dict[str, Any]:
        return dict(self.call("POST", "/_sim/oauth/issue", {"client_id": client_id, "scope": scope}))
