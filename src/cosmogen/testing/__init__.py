"""Test support shipped with cosmogen: document builders (the provider simulator joins later)."""
