"""TCP listeners on every address of the sandbox (0.0.0.0 and :: on the canary ports) that count each
accepted connection by the local address it reached, and answer a minimal HTTP/1.1 from a route function.

Counting happens at accept, before a byte is read: a connection counts even if the client never sends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    local: str  # the address the client connected to (IPv4-mapped forms unwrapped)
    port: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


Route = Callable[[Request], Reply]


def _unmapped(address: str) -> str:
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


@dataclass
class Listeners:
    route: Route = lambda request: Reply(200, {}, {"ok": True})
    accepted: list[tuple[str, int]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    # ports that speak TLS after the accept (counted first, so a failed handshake still counts)
    tls: dict[int, ssl.SSLContext] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)

    async def start(self, ports: tuple[int, ...]) -> None:
        for port in (*ports, *self.tls):
            server = await asyncio.start_server(self._handle, host=["0.0.0.0", "::"], port=port)
            self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    def hits(self, exclude: frozenset[str] = frozenset()) -> list[tuple[str, int]]:
        return [hit for hit in self.accepted if hit[0] not in exclude]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local, port = writer.get_extra_info("sockname")[:2]
        local = _unmapped(local)
        self.accepted.append((local, port))
        try:
            if port in self.tls:
                await writer.start_tls(self.tls[port])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(local, port, method, path, headers, body)
            self.requests.append(request)
            reply = self.route(request)
            payload = json.dumps(reply.body).encode() if reply.body is not None else b""
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            writer.write(
                f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n{extra}\r\n".encode()  # raw UTF-8
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, OSError):
            pass
        finally:
            writer.close()
