"""How the commands' help reads: ``digest subscribe [OPTIONS] EMAIL``, as people write it.

typer shows ``{email}`` and ``<str>``/``<bool>`` type labels; these two classes give every command
(also ones added later) usage and option lists that name each value instead.
"""

from __future__ import annotations

from typing import Any

import typer.core


class DigestCommand(typer.core.TyperCommand):
    """Help as people read it: ``digest subscribe [OPTIONS] EMAIL``, not typer's ``{email}`` and
    ``<str>``/``<bool>`` type labels (every value option names its own metavar instead)."""

    # Any: typer carries its own copy of click, whose types are private to it.
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = ["[OPTIONS]"]
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments = [
            (param.metavar or (param.name or "").upper(), getattr(param, "help", None) or "")
            for param in self.get_params(ctx)
            if param.param_type_name == "argument"
        ]
        options = [
            record
            for param in self.get_params(ctx)
            if param.param_type_name == "option" and (record := param.get_help_record(ctx)) is not None
        ]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class DigestGroup(typer.core.TyperGroup):
    """Gives every command (also ones added later) :class:`DigestCommand`'s help, and every value
    a name for it (``--last LAST``) where typer would show its type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            if type(command) is typer.core.TyperCommand:
                command.__class__ = DigestCommand
            for param in command.params:
                if param.metavar is None and not getattr(param, "is_flag", False):
                    param.metavar = (param.name or "").upper()
