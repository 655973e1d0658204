"""Running the ``anyvirt`` command in-process, for the command-line tests of tests/ and tests/cli/.

One home for the runner every such module needs (``run`` for the raw result, ``run_json``
for a ``--json`` command that must succeed), so they cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from anyvirt.cli.main import cli


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    """``anyvirt ARGS``; ``stdin`` answers its prompts (e.g. ``"n\\n"``)."""
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


def run_json(*args: str, env: dict[str, str] | None = None) -> Any:
    """``anyvirt --json ARGS``, which must exit 0: its parsed stdout."""
    result = run("--json", *args, env=env)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)
