"""`labelloop token`: API tokens (only their hashes are stored)."""

from __future__ import annotations

import click

from .root import State, _print_table, cli


@cli.group()
def token():
    """API tokens: with any token configured, the server requires one on every request."""


@token.command("add")
@click.argument("user")
@click.option("--role", metavar="annotator|reviewer|admin", default=None,
              help="What USER may do: annotator labels, reviewer also reviews, admin also sees "
                   "everyone's agreement figures. Default: the role of USER's other tokens, "
                   "else annotator; a role given applies to all of USER's tokens.")
@click.pass_obj
def token_add(state: State, user: str, role: str | None):
    """Create a token for USER; it is printed once (only its hash is stored)."""
    from ..web.auth import add_token, role_of

    value = add_token(state.project, user, role)
    click.echo(value)
    click.echo(f"token created for {user} (role {role_of(state.project.engine, user)}): keep "
               "it now, it can't be shown again. Use it as 'Authorization: Bearer <token>', or "
               "open a webapp with ?token=<token>", err=True)


@token.command("list")
@click.pass_obj
def token_list(state: State):
    """Users that have tokens, with their role (the tokens themselves are not stored)."""
    from ..web.auth import list_tokens

    _print_table([{**t, "created": t["created"][:19]} for t in list_tokens(state.project)],
                 ["id", "user", "role", "created"])


@token.command("remove")
@click.argument("user")
@click.option("--id", "token_id", type=int, help="Remove only this token (see `token list`).")
@click.pass_obj
def token_remove(state: State, user: str, token_id: int | None):
    """Remove the tokens of USER (or one token with --id)."""
    from ..web.auth import remove_tokens

    n = remove_tokens(state.project, user, token_id)
    click.echo(f"removed {n} token(s) of {user}")
    from ..web.auth import list_tokens

    if not list_tokens(state.project):
        click.echo("no token left: running servers keep requiring a token (nobody can use "
                   "them) until restarted; a server started now serves without tokens, on "
                   "loopback only unless --insecure", err=True)
