"""The one root exception of vitsearch and its few subclasses.

Every error a user can cause derives from :class:`VitsearchError`; the CLI turns it
into one line on stderr and exit code 2. Messages name the field, the value and what
would be accepted. ``assert`` is kept for internal invariants only.
"""

from __future__ import annotations


class VitsearchError(Exception):
    """Root of every error vitsearch raises on bad input or an unusable environment."""

    exit_code = 2


class ConfigError(VitsearchError, ValueError):
    """A compression config, study file or search-space entry is invalid."""


class ModelError(VitsearchError):
    """A base model cannot be built, loaded or is not a supported ViT."""


class DataError(VitsearchError):
    """A data source is missing, empty or inconsistent with the model."""


class DeviceError(VitsearchError):
    """The requested device is absent or cannot run what was asked of it."""


class NothingWithinBudget(VitsearchError):
    """No variant satisfies the requested budget (CLI exit code 3)."""

    exit_code = 3
