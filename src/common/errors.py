"""The one error type users see.

A `UserError` is bad input: the CLI prints its message as one line and exits 2, with no traceback.
Messages say what is wrong, where, and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user (config, data, arguments, files). Exit code 2."""

    exit_code = 2


class RegistryCorruptError(UserError):
    """The registry file exists but cannot be trusted; it is never overwritten."""
