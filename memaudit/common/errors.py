"""The one exception type that means "the user's input is wrong": the CLI prints its message
as a single line and exits 2. Anything else is a bug and keeps its traceback."""


class MemauditError(Exception):
    """Bad input or usage; the message says what was wrong, where, and what to do."""
