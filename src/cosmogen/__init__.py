"""cosmogen: a studio and durable runtime for universes of entity-state operators."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cosmogen")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
