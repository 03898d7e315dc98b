"""Error types shared by the CLI and the stages; `InvalidInput` maps to exit code 2 (no Job retry)."""

from __future__ import annotations

EXIT_INVALID_INPUT = 2
EXIT_FAILURE = 1


class EftError(Exception):
    """A failure with a message meant for the user (no traceback)."""

    exit_code = EXIT_FAILURE


class InvalidInput(EftError):
    """The user's input (spec, corpus, model path, endpoint credentials) is wrong; retrying cannot help."""

    exit_code = EXIT_INVALID_INPUT

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class StageFailed(EftError):
    """A stage could not finish for a reason that a retry may fix (network, resources)."""
