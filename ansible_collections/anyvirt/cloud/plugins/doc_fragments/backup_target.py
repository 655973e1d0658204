# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Where anyvirt_backup writes and anyvirt_restore reads: an archive file or a repository."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  path:
    description:
      - A portable archive file (C(.avbk)) on the host that runs the module. It can be restored on any backend.
      - Exactly one of O(path) and O(repository) is given.
    type: path
  repository:
    description:
      - A backup repository URL (C(file:///srv/backups), C(sftp://user@host/path)). It is incremental forever
        and deduplicated, and it can be restored on any backend.
    type: str
  passphrase:
    description: The repository's passphrase (an encrypted repository). It is never logged.
    type: str
  repository_password:
    description: The SSH password of an C(sftp://) repository. It is never logged.
    type: str
  key_filename:
    description: The SSH key of an C(sftp://) repository.
    type: path
  known_hosts:
    description: The known_hosts file that lists an C(sftp://) repository server's key.
    type: path
"""
