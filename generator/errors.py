"""The tool's user-facing error type.

Everything a user can get wrong (a spec, a `--set` override, a catalog module they wrote,
an output folder) surfaces as a `SigmaeError`: one line, `file:line:column: message`, that
names the place and the fix. The CLI turns it into exit code 2 without a traceback; anything
else escaping the pipeline is a bug in the tool.
"""

from __future__ import annotations


class SigmaeError(Exception):
    """A user error with a location. `str()` gives the one-line message the CLI prints."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column

    @property
    def location(self) -> str:
        """`file:line:column`, as far as it is known ('' when nothing is)."""
        if self.file is None:
            return ""
        parts = [str(self.file)]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location
        return f"{where}: {self.message}" if where else self.message


class SpecError(SigmaeError):
    """A spec (or a `--set` override) that cannot be built: syntax, schema, names, types."""


class OutputError(SigmaeError):
    """The output folder cannot be written as asked (e.g. it is a file, or outside the root)."""
