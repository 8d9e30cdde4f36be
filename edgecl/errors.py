"""Exceptions raised by edgecl.

Every user-facing error is a ``ValueError`` subclass, so callers that only know
the DESIGN contract ("bad input raises ValueError") keep working::

    Exception
     └── EdgeclError
          ├── ConfigError(ValueError)       a setting is missing, unknown or out of range
          │    └── BudgetError              the fixed parts of a config do not fit budget_bytes
          ├── InputError(ValueError)        a sample has the wrong shape, a NaN/inf or a bad label
          ├── StateFileError(ValueError)    a state file is truncated, corrupted or mismatched
          ├── DataError(ValueError)         a dataset file lacks keys or has inconsistent shapes
          ├── BundleError(ValueError)       a bundle is incomplete, tampered with or unsafe
          └── ProfileError(ConfigError)     a device profile is unreadable or out of range

Stream rejects in the daemon are *counted*, not raised; these exceptions are for
programming and user errors.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "BundleError",
    "ConfigError",
    "DataError",
    "EdgeclError",
    "InputError",
    "ProfileError",
    "StateFileError",
]


class EdgeclError(Exception):
    """Base class of every error edgecl raises on purpose."""


class ConfigError(EdgeclError, ValueError):
    """A configuration value is missing, unknown or out of its allowed range."""


class BudgetError(ConfigError):
    """The fixed parts of a learner do not fit in ``budget_bytes``."""


class InputError(EdgeclError, ValueError):
    """A sample or label is malformed (shape, dtype, NaN/inf, label range)."""


class StateFileError(EdgeclError, ValueError):
    """A saved state file cannot be trusted: truncated, corrupted or incompatible."""


class DataError(EdgeclError, ValueError):
    """A dataset file is missing keys or holds arrays of inconsistent shapes."""


class BundleError(EdgeclError, ValueError):
    """A bundle directory is incomplete, fails its hash check or names unsafe paths."""


class ProfileError(ConfigError):
    """A device profile (``devices/*.toml``) is unreadable, has unknown keys or bad values."""
