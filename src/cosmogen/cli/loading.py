"""Reading a universe file for a command: every failure becomes a clear message and exit code 2."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cosmogen.domain.diagnostics import Diagnostic, DocumentError
from cosmogen.domain.document import MAX_DOCUMENT_BYTES, load_universe
from cosmogen.domain.model import Universe
from cosmogen.domain.validate import Report, validate

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


@dataclass(frozen=True, slots=True)
class Loaded:
    universe: Universe
    notes: list[Diagnostic]
    report: Report

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [*self.notes, *self.report.diagnostics]


class LoadFailure(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics


def read_source(path: str) -> bytes:
    """Read a file (or stdin for '-') without reading more than the document limit allows."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
        else:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise _failure("file-not-found", f"no such file: {path}", "check the path") from None
    except IsADirectoryError:
        raise _failure("not-a-file", f"{path} is a directory", "pass a universe .json file") from None
    except PermissionError:
        raise _failure("unreadable", f"permission denied reading {path}") from None
    except OSError as exc:
        raise _failure("unreadable", f"cannot read {path}: {exc.strerror}") from None
    return data


def load(path: str) -> Loaded:
    data = read_source(path)
    try:
        universe, notes = load_universe(data)
    except DocumentError as exc:
        raise LoadFailure(exc.diagnostics) from None
    return Loaded(universe, notes, validate(universe))


def _failure(code: str, message: str, hint: str | None = None) -> LoadFailure:
    return LoadFailure([Diagnostic(code, "error", message, hint=hint)])
