"""Exceptions a user sees: each names the file, key or value at fault and what was expected."""

from __future__ import annotations


class MedTransferError(Exception):
    """Base class of every error medtransfer raises on purpose."""


class ConfigError(MedTransferError, ValueError):
    """A config key or value is wrong; the message names the key path."""


class DataError(MedTransferError, ValueError):
    """Input data is unusable (missing, empty, corrupt, inconsistent)."""


class ImageDecodeError(DataError):
    """One image file could not be decoded; ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


class DiskFullError(MedTransferError):
    """A write failed for want of space; the message names the path and the free space."""


class IntegrityError(DataError):
    """A run's record or file differs from what was recorded about it (damaged, truncated or
    edited by hand); the message names the file. Never skipped over: a reader stops on it."""
