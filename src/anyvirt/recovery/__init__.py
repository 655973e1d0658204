"""Bringing a dead server's VMs up elsewhere, fencing before restart."""

from anyvirt.recovery.result import RecoveredFrom, Recovery, RecoveryResult

__all__ = ["RecoveredFrom", "Recovery", "RecoveryResult"]
