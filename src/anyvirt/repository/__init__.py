"""The backup repository: incremental forever, deduplicated, verified, restorable on any
backend. See :class:`BackupRepository` and the docs page *Backup repository*."""

from anyvirt.repository.archives import export_archive, import_archive
from anyvirt.repository.points import RestorePoint
from anyvirt.repository.repo import BackupRepository, PassphraseNeeded, PruneReport, VerifyReport
from anyvirt.repository.sources import ChangeTracker

__all__ = ["BackupRepository", "ChangeTracker", "PassphraseNeeded", "PruneReport", "RestorePoint",
           "VerifyReport", "export_archive", "import_archive"]
