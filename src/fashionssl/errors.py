"""The one exception type that means "the user asked for something we cannot do".

The CLI prints its message as a single line and exits non-zero, without a traceback; every other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: message says what is wrong, where, and how to fix it."""
