"""Errors a user can cause. The CLI prints their message as one paragraph, without a traceback."""


class ThriftyError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""

    exit_code = 1


class BadInput(ThriftyError):
    """A path, file, option or value that thrifty cannot use."""


class EngineError(ThriftyError):
    """An engine environment is missing, broken or failed to install."""


class WorkerFailed(ThriftyError):
    """A job in an engine environment crashed; the message carries the tail of its log."""


class HubUnreachable(ThriftyError):
    """A model id that needs a model hub, on a machine that cannot reach one."""
