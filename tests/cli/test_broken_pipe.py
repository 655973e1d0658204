"""A reader that leaves early (``anyvirt vms | head -1``) ends the command quietly: the
output it did not take is dropped, with no "unexpected BrokenPipeError" and exit 0, as a
shell user expects of a listing piped into ``head``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("words", [["capabilities"], ["--json", "capabilities"], ["backends"]])
def test_a_reader_that_left_ends_the_command_quietly(words: list[str]) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # gone before the first line: every write meets a broken pipe
    try:
        done = subprocess.run([sys.executable, "-m", "anyvirt.cli.main", *words], stdout=writer,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (0, "")
