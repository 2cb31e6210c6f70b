"""The provider simulator: a real HTTP server on 127.0.0.1 speaking OpenAI, Anthropic, Slack, X, the
Instagram Graph API, a generic webhook and an OAuth 2.0 authorization server, with scripted faults,
rate-limit enforcement and a request log. See docs/simulator.md."""

from cosmogen.testing.simulator.admin import AdminClient
from cosmogen.testing.simulator.clock import ManualClock
from cosmogen.testing.simulator.faults import Fault, ScriptedFault
from cosmogen.testing.simulator.log import LoggedRequest, RequestLog, max_in_window
from cosmogen.testing.simulator.oauth import AuthorizationServer, Tokens, s256
from cosmogen.testing.simulator.providers import Effect
from cosmogen.testing.simulator.server import (
    DEFAULT_API_KEY,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    Simulator,
    ThreadedSimulator,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "AdminClient",
    "AuthorizationServer",
    "Effect",
    "Fault",
    "LoggedRequest",
    "ManualClock",
    "RequestLog",
    "ScriptedFault",
    "Simulator",
    "ThreadedSimulator",
    "Tokens",
    "max_in_window",
    "s256",
]
