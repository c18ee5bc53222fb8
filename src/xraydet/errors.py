"""Errors a person can act on. The CLI prints these without a traceback and exits with status 2."""

from __future__ import annotations


class XrayDetError(Exception):
    """Base class for errors caused by input (files, config, arguments), not by a bug."""


class ConfigError(XrayDetError, ValueError):
    """A config file or option that does not validate; the message names the file and key."""
