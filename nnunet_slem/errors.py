"""Errors caused by the user's input."""


class UserFacingError(RuntimeError):
    """Printed by the CLI without a traceback; the message names the problem and the fix."""
