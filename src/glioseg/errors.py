"""The one exception type users see.

Every problem with a user's input is raised as :class:`GliosegError` with a message
that fits on one line, names the file (or folder) at fault and says what to do.
The command-line interface prints it as ``error: <message>`` and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class GliosegError(Exception):
    """A problem the user can fix: bad input file, wrong option, full disk.

    Args:
        path: the file or folder at fault (``None`` when no file is involved).
        problem: what is wrong, e.g. ``"contains NaN values"``.
        fix: what the user should do about it.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        message = f"{where}{problem}. Fix: {fix}"
        super().__init__(" ".join(message.split()))  # always one line

    def located(self, path: str | Path, where: str) -> GliosegError:
        """This error, or, when it names no file, the same one naming ``path`` and prefixed with ``where`` (e.g. a
        value out of range inside a recipe's stage or a candidates file's entry)."""
        return self if self.path is not None else GliosegError(path, f"{where}: {self.problem}", self.fix)
