"""The ``anyvirt`` command: the library's API from a shell.

``main.py`` holds the command group, the shared options and the mapping from
errors to exit codes; each ``commands_*.py`` module adds one family of
commands; ``output.py`` renders results as rich tables or JSON; ``matrix.py``
builds the capability matrix shared with the documentation. No platform SDK
is imported until a URI asks for its backend.
"""
