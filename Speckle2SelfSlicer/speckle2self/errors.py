"""User-facing errors: one line naming the problem and the fix."""

EXIT_USER_ERROR = 2
"""Exit status of the command line after a UserError (read by the Slicer module without importing the command line,
which imports torch)."""


class UserError(ValueError):
    """A mistake in the user's input; the CLI prints it as one line and exits with status 2."""

    def __init__(self, problem: str, fix: str = ""):
        message = problem.rstrip(".") + "." + (f" {fix.rstrip('.')}." if fix else "")
        super().__init__(" ".join(message.split()))


class Cancelled(Exception):
    """Raised inside a job when the user cancelled it."""
