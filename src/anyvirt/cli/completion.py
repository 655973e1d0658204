"""``anyvirt completion bash|zsh|fish``: the shell script that completes commands and VM names.

Load it once per shell (``eval "$(anyvirt completion bash)"``) or save it where
the shell reads completions. VM names come from the connection the command
line points at (its URI, else the profile, ``$ANYVIRT_URI`` or the local
default) each time TAB is pressed.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

#: the variable click's completion protocol reads; the script sets it when it calls anyvirt
COMPLETE_VAR = "_ANYVIRT_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL; e.g. eval "$(anyvirt completion bash)".

    \b
    bash: echo 'eval "$(anyvirt completion bash)"' >> ~/.bashrc
    zsh:  echo 'eval "$(anyvirt completion zsh)"' >> ~/.zshrc
    fish: anyvirt completion fish > ~/.config/fish/completions/anyvirt.fish
    """
    root = ctx.find_root().command
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(root, {}, "anyvirt", COMPLETE_VAR).source())
