"""The one base class of walrus' own errors: what the CLI reports as one line with exit 2.

Anything else that escapes a command is a bug and prints its traceback.
"""

from __future__ import annotations


class WalrusError(Exception):
    """Bad input, a bad artifact or a failed check: the message says what to fix."""


class DeviceUnavailable(WalrusError):
    """``device = "cuda"`` was asked for explicitly and this machine cannot honour it; only
    ``auto`` chooses the CPU in its place (and says so)."""


class MissingArtifact(WalrusError, FileNotFoundError):
    """An input artifact (a trained model, a bundle, an installed model package) is absent;
    the message names the command that makes it."""
