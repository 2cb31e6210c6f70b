"""`python -m cosmogen.testing.simulator [--port N]`: serve until killed; the port is the first line of
stdout, as with `python -m cosmogen.testing.echo`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from cosmogen.testing.simulator.server import DEFAULT_API_KEY, DEFAULT_CLIENT_ID, Simulator


def parse_limit(text: str) -> tuple[str, float, int]:
    """`ROUTE=RATE/BURST`, e.g. `openai=10/10`."""
    route, _, policy = text.partition("=")
    rate, _, burst = policy.partition("/")
    try:
        return route or "*", float(rate), int(burst)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROUTE=RATE/BURST, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cosmogen.testing.simulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--name", default="sim", help="prefix of the codes and tokens it issues")
    parser.add_argument(
        "--api-key", action="append", default=[], help=f"an accepted API key (default: {DEFAULT_API_KEY})"
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        help=f"a redirect URI of the {DEFAULT_CLIENT_ID} client",
    )
    parser.add_argument("--expires-in", default="3600", help="access-token lifetime in seconds, or 'none'")
    parser.add_argument("--limit", type=parse_limit, action="append", default=[], help="ROUTE=RATE/BURST")
    args = parser.parse_args(argv)
    expires_in = None if args.expires_in.lower() == "none" else int(args.expires_in)

    async def serve() -> None:
        sim = Simulator(name=args.name, api_keys=args.api_key or (DEFAULT_API_KEY,), expires_in=expires_in)
        sim.oauth.clients[DEFAULT_CLIENT_ID].redirect_uris = tuple(args.redirect_uri)
        for route, rate, burst in args.limit:
            sim.limit(route, rate, burst)
        await sim.start(args.port)
        print(sim.port, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
