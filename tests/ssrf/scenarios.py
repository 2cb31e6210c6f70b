"""The SSRF scenarios that need the sandbox network (tests/ssrf/sandbox.py). Each runs in a fresh
namespace, started by a test in tests/reliability/test_ssrf0*.py, and prints one JSON object: what was
refused with which rule and message, and what every listener accepted. The tests assert on it.

`python -m tests.ssrf.scenarios <name> '<json args>'` (only inside the sandbox; `enter` refuses otherwise).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cosmogen.cli.durable import report
from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.oauth import OAuthClientConfig, TokenRefusal
from cosmogen.integrations import credentials
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpCallError, HttpClient
from cosmogen.integrations.oauth import token_call
from cosmogen.integrations.secret import Secret
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.settings import Settings
from tests.ssrf import dns, sandbox
from tests.ssrf.listeners import Listeners, Reply, Request, Route
from tests.ssrf.vectors import CANARY_PORTS, DNS, PUBLIC_A, PUBLIC_B, PUBLIC_V6, all_urls

PUBLIC = frozenset({PUBLIC_A, PUBLIC_B, PUBLIC_V6})
SCENARIOS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {}


def scenario(fn: Callable[..., Awaitable[dict[str, Any]]]) -> Callable[..., Awaitable[dict[str, Any]]]:
    SCENARIOS[fn.__name__] = fn
    return fn


@dataclass
class Box:
    dns: dns.StubDns
    listeners: Listeners


async def open_box(
    route: Route | None = None,
    answer: dns.Answerer | None = None,
    tls: dict[int, ssl.SSLContext] | None = None,
) -> Box:
    server = await dns.serve(answer or (lambda name, qtype: DNS.get(name)))
    listeners = Listeners(route) if route is not None else Listeners()
    listeners.tls.update(tls or {})
    await listeners.start(CANARY_PORTS)
    return Box(server, listeners)


def outcome(exc: BaseException | None, *, status: int | None = None) -> dict[str, Any]:
    if exc is None:
        return {"refused": False, "status": status}
    if isinstance(exc, HttpCallError):
        return {"refused": True, "kind": exc.kind, "rule": exc.rule, "message": str(exc)}
    return {"refused": True, "kind": type(exc).__name__, "rule": None, "message": str(exc)}


async def send(client: HttpClient, request: RenderedRequest, **kwargs: Any) -> dict[str, Any]:
    try:
        response = await client.send(request, **kwargs)
    except HttpCallError as exc:
        return outcome(exc)
    return {
        "refused": False,
        "status": response.status,
        "body": response.body,
        "url": response.url,
        "redirects": response.redirects,
    }


def get(url: str, headers: dict[str, str] | None = None, **extra: Any) -> RenderedRequest:
    return RenderedRequest(
        extra.pop("method", "GET"), url, headers or {}, extra.pop("body", None), 5.0, **extra
    )


# -- SSRF-01: every D.1 vector on each path that sends a request ------------------------------------


def chain(
    nodes: list[dict[str, Any]], bindings: list[dict[str, Any]], props: dict[str, Any]
) -> dict[str, Any]:
    begin = {"id": "b", "type": "begin", "entity": "t:1", "properties": props}
    ids = ["b"] + [n["id"] for n in nodes]
    return {
        "cosmogen": "universe/1",
        "name": "ssrf vectors",
        "nodes": [begin, *nodes],
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
        "bindings": bindings,
    }


def http_node_universe(urls: list[str]) -> dict[str, Any]:
    """One node per vector, each with an http binding whose URL is filled from entity state (the way a
    user-controlled value reaches a request), continuing after each refusal."""
    nodes = [
        {"id": f"n{i}", "type": "become", "entity": "t:1", "transform": {"i": str(i)}}
        for i in range(len(urls))
    ]
    bindings = [
        {
            "id": f"call{i}",
            "node": f"n{i}",
            "on_error": "continue",
            "request": {"method": "GET", "url": f"{{{{ u{i} }}}}"},
        }
        for i in range(len(urls))
    ]
    return chain(nodes, bindings, {f"u{i}": url for i, url in enumerate(urls)})


def provider_universe(count: int) -> dict[str, Any]:
    nodes = [
        {"id": f"n{i}", "type": "become", "entity": "t:1", "transform": {"i": str(i)}} for i in range(count)
    ]
    bindings = [
        {
            "id": f"chat{i}",
            "node": f"n{i}",
            "kind": "provider",
            "capability": "openai.chat",
            "account": f"override-{i}",
            "settings": {"prompt": "hello", "max_tokens": 5},
            "on_error": "continue",
        }
        for i in range(count)
    ]
    return chain(nodes, bindings, {})


def binding_results(runtime: Runtime, run_id: str, prefix: str, count: int) -> list[dict[str, Any]]:
    outputs = report(runtime.db, run_id)["outputs"]
    found = []
    for i in range(count):
        result = outputs.get(f"n{i}", {}).get("bindings", {}).get(f"{prefix}{i}")
        error = (result or {}).get("error")
        if error is None:
            found.append({"refused": False, "status": (result or {}).get("status"), "result": result})
        else:
            message = error.get("message", "")
            rule = (
                message.split("(", 1)[1].split(")", 1)[0] if message.startswith("egress blocked (") else None
            )
            found.append({"refused": True, "kind": error.get("kind"), "rule": rule, "message": message})
    return found


async def through_runtime(
    urls: list[str], data_dir: Path, policy: EgressPolicy
) -> dict[str, list[dict[str, Any]]]:
    runtime = await Runtime.open(RuntimeSettings(data_dir=data_dir, egress=policy, poll_interval_s=0.05))
    try:
        submitted = await runtime.submit(http_node_universe(urls))
        await runtime.wait(submitted.run_id)
        node = binding_results(runtime, submitted.run_id, "call", len(urls))
        vault = runtime.open_vault()
        for i, url in enumerate(urls):
            account = await runtime.writer.write(
                credentials.create_account(
                    workspace_id="default",
                    provider="openai",
                    name=f"override-{i}",
                    auth_kind="api_key",
                    base_url=url,
                )
            )
            await runtime.writer.write(
                credentials.put_secret(vault, account, "api_key", Secret("sk-canary-key"))
            )
            await runtime.writer.write(credentials.set_account_status(account, "connected"))
        submitted = await runtime.submit(provider_universe(len(urls)))
        await runtime.wait(submitted.run_id)
        provider = binding_results(runtime, submitted.run_id, "chat", len(urls))
    finally:
        await runtime.close()
    return {"http_node": node, "provider_base_url": provider}


async def token_urls(urls: list[str], policy: EgressPolicy) -> list[dict[str, Any]]:
    client = HttpClient(policy)
    await client.start()
    found = []
    try:
        for url in urls:
            config = OAuthClientConfig("client", "https://public-a.example/authorize", url, None, None)
            answer = await token_call(
                client,
                config,
                Secret("client-secret"),
                {"grant_type": "client_credentials"},
                lambda: datetime.now(UTC),
            )
            if isinstance(answer, TokenRefusal):
                rule = (
                    answer.message.split("egress blocked (", 1)[-1].split(")", 1)[0]
                    if answer.code == "egress"
                    else None
                )
                found.append({"refused": True, "kind": answer.code, "rule": rule, "message": answer.message})
            else:
                found.append({"refused": False})
    finally:
        await client.close()
    return found


@scenario
async def ssrf01() -> dict[str, Any]:
    box = await open_box()
    urls = all_urls()
    with tempfile.TemporaryDirectory() as tmp:
        paths = await through_runtime(urls, Path(tmp) / "data", EgressPolicy())
    paths["oauth_token_url"] = await token_urls(urls, EgressPolicy())
    hits = box.listeners.hits()
    # The control: the same requests with the guard opened wide on purpose do reach the canaries, so
    # the zero above means "refused", not "unreachable".
    wide = EgressPolicy.from_strings("0.0.0.0/0,::/0", allow_metadata=True)
    client = HttpClient(wide)
    await client.start()
    try:
        control = {
            url: await send(client, get(url))
            for url in (
                "http://127.0.0.1/",
                "http://[::1]/",
                "http://10.0.0.1/",
                "http://169.254.169.254/latest/meta-data/",
                "http://[fd00:ec2::254]/",
                "http://intranet-wiki.example/",
                "http://ipv6-loopback.example/",
            )
        }
    finally:
        await client.close()
    return {
        "urls": urls,
        "paths": paths,
        "canary_hits": hits,
        "control": control,
        "control_hits": box.listeners.hits()[len(hits) :],
        "dns_queries": len(box.dns.log),
    }


# -- SSRF-02: DNS rebinding through the production resolver ----------------------------------------

REBIND_PRIVATE = ["127.0.0.1", "169.254.169.254", "10.0.0.1", "::1", "fd00:ec2::254"]


class Rebinder:
    """Answers a name alternately with the public stand-in and a private address (cycling through
    REBIND_PRIVATE), TTL 0; `answers` holds the address given at each lookup, in order."""

    def __init__(self, names: set[str], start_private: bool = False) -> None:
        self.names = names
        self.count = 1 if start_private else 0
        self.answers: list[str] = []

    def __call__(self, name: str, qtype: int) -> list[str] | None:
        if name not in self.names:
            return DNS.get(name)
        if qtype == dns.A:  # getaddrinfo asks A then AAAA: one lookup, one alternation
            n = self.count
            self.count += 1
            self.answers.append(PUBLIC_A if n % 2 == 0 else REBIND_PRIVATE[(n // 2) % len(REBIND_PRIVATE)])
        return [self.answers[-1]] if self.answers else []


def echo_route(request: Request) -> Reply:
    return Reply(200, {}, {"path": request.path, "host": request.headers.get("host"), "local": request.local})


@scenario
async def ssrf02(requests: int, tls_requests: int, cert: str, key: str) -> dict[str, Any]:
    rebinder = Rebinder({"rebind.example", "rebind-tls.example"})
    names_sent: list[str | None] = []
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda obj, name, ctx: names_sent.append(name)  # type: ignore[assignment,func-returns-value]
    box = await open_box(echo_route, rebinder, {8443: tls})
    result: dict[str, Any] = {}
    client = HttpClient(EgressPolicy(), dns_cache_s=0)  # every new connection asks DNS again
    await client.start()
    try:
        plain = [await send(client, get(f"http://rebind.example/{i}")) for i in range(requests)]
        result["plain"] = {"outcomes": plain, "answers": rebinder.answers[:]}
        rebinder.answers.clear()
        rebinder.count = 0
        secure = [
            await send(client, get(f"https://rebind-tls.example:8443/{i}")) for i in range(tls_requests)
        ]
        result["tls"] = {"outcomes": secure, "answers": rebinder.answers[:], "sni": names_sent}
        before = len(box.listeners.accepted)
        result["mixed"] = {
            name: await send(client, get(f"http://{name}/"))
            for name in ("mixed-answer.example", "dual-stack.example")
        }
        result["mixed_hits"] = box.listeners.accepted[before:]
    finally:
        await client.close()
    # The production setting: aiohttp's DNS cache (10 s) keeps only answers that passed the check.
    cached = Rebinder({"rebind-cached.example"}, start_private=True)
    box.dns.answer = cached
    client = HttpClient(EgressPolicy())
    await client.start()
    try:
        outcomes = [await send(client, get(f"http://rebind-cached.example/{i}")) for i in range(50)]
    finally:
        await client.close()
    result["cached"] = {"outcomes": outcomes, "answers": cached.answers}
    result["requests"] = [
        {"local": r.local, "port": r.port, "host": r.headers.get("host"), "path": r.path}
        for r in box.listeners.requests
    ]
    result["accepted"] = box.listeners.accepted
    return result


# -- SSRF-03: redirects ----------------------------------------------------------------------------


def redirect_route(request: Request) -> Reply:
    """The public mock: /to?u=<url>&s=<status> redirects anywhere, /chain/<n> redirects n times, /echo
    shows what arrived."""
    parts = urlsplit(request.path)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if parts.path == "/to":
        return Reply(int(query.get("s", "302")), {"Location": query["u"]})
    if parts.path.startswith("/chain/"):
        left = int(parts.path.rsplit("/", 1)[1])
        return Reply(302, {"Location": f"/chain/{left - 1}"}) if left else Reply(200, {}, {"chain": "end"})
    return Reply(
        200,
        {},
        {
            "method": request.method,
            "path": request.path,
            "headers": request.headers,
            "body": request.body.decode("utf-8", "replace"),
            "local": request.local,
        },
    )


def to(url: str, status: int = 302, base: str = "http://public-a.example") -> str:
    from urllib.parse import quote

    return f"{base}/to?s={status}&u={quote(url, safe='')}"


@scenario
async def ssrf03() -> dict[str, Any]:
    box = await open_box(redirect_route)
    result: dict[str, Any] = {}
    client = HttpClient(EgressPolicy())
    await client.start()
    try:
        vectors = [u for u in all_urls() if u == u.strip()]  # an HTTP header cannot carry end whitespace
        result["vectors"] = {u: await send(client, get(to(u))) for u in vectors}
        result["statuses"] = {
            f"{status} {method}": await send(
                client,
                get(
                    to("http://10.0.0.1/", status), method=method, body={"a": 1} if method != "GET" else None
                ),
                idempotency_key="k-1",
                key_header="Idempotency-Key",
            )
            for status in (301, 302, 303, 307, 308)
            for method in ("GET", "POST", "PUT")
        }
        result["vector_hits"] = box.listeners.hits(PUBLIC)
        mark = len(box.listeners.requests)
        result["chain5"] = await send(client, get("http://public-a.example/chain/5"))
        result["chain6"] = await send(client, get("http://public-a.example/chain/6"))
        result["chain_paths"] = [r.path for r in box.listeners.requests[mark:]]
        mark = len(box.listeners.requests)
        result["userinfo"] = await send(client, get(to("http://user:secret@public-b.example/echo")))
        result["userinfo_requests"] = [(r.local, r.path) for r in box.listeners.requests[mark:]]
        credentials = {
            "Authorization": "Bearer sk-canary-authorization",
            "Cookie": "session=canary-cookie",
            "Proxy-Authorization": "Basic canary-proxy",
            "X-Api-Key": "canary-api-key",
            "X-Custom-Token": "canary-custom",
            "Accept": "application/json",
            "User-Agent": "cosmogen-test",
        }
        key = {"idempotency_key": "key-123", "key_header": "Idempotency-Key"}
        result["cross_host"] = await send(
            client, get(to("http://public-b.example/echo"), dict(credentials)), **key
        )
        result["cross_port"] = await send(
            client, get(to("http://public-a.example:443/echo"), dict(credentials)), **key
        )
        result["same_origin"] = await send(client, get(to("/echo"), dict(credentials)), **key)
        result["post_303"] = await send(client, get(to("/echo", 303), method="POST", body={"a": 1}))
        result["post_307_keyed"] = await send(
            client, get(to("/echo", 307), method="POST", body={"a": 1}), **key
        )
        result["post_307_bare"] = await send(client, get(to("/echo", 307), method="POST", body={"a": 1}))
        result["post_302"] = await send(client, get(to("/echo", 302), method="POST", body={"a": 1}))
        result["put_308"] = await send(client, get(to("/echo", 308), method="PUT", body={"a": 2}))
        mark = len(box.listeners.requests)
        result["not_followed"] = await send(
            client, get(to("http://public-b.example/echo"), follow_redirects=False)
        )
        result["not_followed_requests"] = len(box.listeners.requests) - mark
    finally:
        await client.close()
    # The http node: a binding whose server redirects to a private address, followed and refused; the
    # same binding with follow_redirects: false gets the 302 itself.
    with tempfile.TemporaryDirectory() as tmp:
        runtime = await Runtime.open(
            RuntimeSettings(data_dir=Path(tmp) / "d", egress=EgressPolicy(), poll_interval_s=0.05)
        )
        try:
            doc = http_node_universe([to("http://10.0.0.1/"), to("http://10.0.0.1/")])
            doc["bindings"][1]["request"]["follow_redirects"] = False
            submitted = await runtime.submit(doc)
            await runtime.wait(submitted.run_id)
            result["node"] = binding_results(runtime, submitted.run_id, "call", 2)
        finally:
            await runtime.close()
    result["all_hits"] = box.listeners.hits(PUBLIC)
    return result


# -- SSRF-06: on by default; the admin allowlist opens exactly what it names -------------------------

ALLOWLIST_TARGETS = [
    "http://10.1.2.3/",
    "http://10.1.3.3/",
    "http://api.corp.internal/",
    "http://deep.api.corp.internal/",
    "http://corp.internal/",
    "http://api.corp.internal.evil.example/",
    "http://169.254.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://192.0.0.192/",
    "http://168.63.129.16/",
    "http://metadata.google.internal/",
    "http://metadata-proxy.example/",
]


@scenario
async def ssrf06(configs: dict[str, dict[str, str]]) -> dict[str, Any]:
    box = await open_box()
    result: dict[str, Any] = {}
    targets = all_urls() + ALLOWLIST_TARGETS
    with tempfile.TemporaryDirectory() as tmp:
        for label, env in configs.items():
            settings = Settings.from_env(env, data_dir=str(Path(tmp) / label))
            client = HttpClient(settings.egress)
            await client.start()
            rows = {}
            try:
                for url in targets:
                    mark = len(box.listeners.accepted)
                    rows[url] = await send(client, get(url))
                    rows[url]["hits"] = box.listeners.accepted[mark:]
            finally:
                await client.close()
            # the same settings through the runtime (what `cosmogen serve` builds from the environment)
            runtime = await Runtime.open(replace(settings.runtime(), poll_interval_s=0.05))
            try:
                submitted = await runtime.submit(
                    http_node_universe(["http://10.1.2.3/node", "http://10.0.0.1/node"])
                )
                await runtime.wait(submitted.run_id)
                node = binding_results(runtime, submitted.run_id, "call", 2)
            finally:
                await runtime.close()
            result[label] = {"targets": rows, "node": node}
    result["accepted"] = box.listeners.accepted
    return result


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    sandbox.enter()
    result = asyncio.run(SCENARIOS[name](**args))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
