"""Moved to :mod:`minicog.engine`; this name stays for code written against it."""

from minicog.engine import STATES, Engine, Orchestrator, SetupInfo

__all__ = ["Orchestrator", "Engine", "SetupInfo", "STATES"]
