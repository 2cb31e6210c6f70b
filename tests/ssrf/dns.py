"""A stub DNS server on UDP: answers A and AAAA queries from a function, TTL 0, and logs every answer.

The sandbox points /etc/resolv.conf at it, so the production resolver (aiohttp's ThreadedResolver, i.e.
glibc getaddrinfo) asks it like any DNS server: rebinding is tested through the real lookup path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

A, AAAA = 1, 28
Answerer = Callable[[str, int], list[str] | None]  # (name, qtype) -> addresses, or None for NXDOMAIN


@dataclass
class StubDns(asyncio.DatagramProtocol):
    answer: Answerer
    log: list[tuple[str, int, list[str]]] = field(default_factory=list)
    transport: Any = None  # asyncio's datagram transport (its class is private)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        try:
            reply = self._reply(data)
        except (ValueError, IndexError, struct.error):
            return  # not a query we understand: stay silent, as a broken server would
        self.transport.sendto(reply, addr)

    def _reply(self, data: bytes) -> bytes:
        ident, _flags, qdcount = struct.unpack("!HHH", data[:6])
        if qdcount != 1:
            raise ValueError("one question per query")
        labels, at = [], 12
        while data[at]:
            size = data[at]
            labels.append(data[at + 1 : at + 1 + size].decode("ascii"))
            at += 1 + size
        question_end = at + 5
        qtype, _qclass = struct.unpack("!HH", data[at + 1 : question_end])
        name = ".".join(labels).lower()
        found = self.answer(name, qtype)
        wanted = 4 if qtype == A else 6 if qtype == AAAA else 0
        records = [a for a in (found or []) if ipaddress.ip_address(a).version == wanted]
        self.log.append((name, qtype, records))
        rcode = 3 if found is None else 0  # NXDOMAIN for unknown names
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(records), 0, 0)
        body = data[12:question_end]
        for address in records:
            packed = ipaddress.ip_address(address).packed
            # a pointer to the question's name (offset 12), type, class IN, TTL 0, the address
            body += struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(packed)) + packed
        return header + body


async def serve(answer: Answerer, host: str = "127.0.0.53", port: int = 53) -> StubDns:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: StubDns(answer), local_addr=(host, port))
    return protocol
