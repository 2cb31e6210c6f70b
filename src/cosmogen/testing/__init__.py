"""Test support shipped with cosmogen: document builders, an echo server and the provider simulator."""
