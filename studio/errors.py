"""Errors a user can cause and fix. Every one names the file or field and says what to do."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (file, folder, field value), with the fix spelled out.

    str(err) reads like: "data.jsonl, line 812: not valid JSON (Expecting ',' ...). Fix: ..."
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.fix = fix
        super().__init__(self.__str__())

    def where(self) -> str:
        parts = []
        if self.path:
            parts.append(self.path)
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f" Fix: {self.fix}"
        return text
