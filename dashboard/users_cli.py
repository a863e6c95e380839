"""``audit-dashboard users ...``: manage the local users file (AUDIT_USERS_FILE).

Passwords are read from stdin (``--password-stdin``, first line) or a hidden prompt asked
twice — never from the command line, where they would land in shell history and ``ps``.
A new API token is the only thing printed on stdout, so ``TOKEN=$(audit-dashboard users
token ci-bot)`` works; everything else goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .permissions import ROLES
from .users import UserError, UserStore, normalise_name


def _store(ctx: click.Context) -> UserStore:
    path = ctx.obj.get("users_file") if ctx.obj else None
    if path is None:
        from .cli_base import fail
        from .cli_base import settings_or_fail as _settings

        path = _settings().users_file
        if path is None:
            raise fail(
                "AUDIT_USERS_FILE is not set. Point it at the users file (it is created on "
                "the first `users add`), or pass --file PATH."
            )
    return UserStore(path)


def _read_password(from_stdin: bool, prompt: str = "Password") -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
        return password
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True)


def _run(action):
    """Turn UserError (and a bad users file) into the one-paragraph exit-2 message."""
    from .cli_base import fail

    try:
        return action()
    except UserError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"Cannot write the users file: {exc}.") from None


@click.group("users")
@click.option(
    "--file",
    "users_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Users file to manage (default: AUDIT_USERS_FILE).",
)
@click.pass_context
def users(ctx: click.Context, users_file: Path | None) -> None:
    """Local users: names, roles, argon2id password hashes and API tokens."""
    ctx.ensure_object(dict)
    ctx.obj["users_file"] = users_file


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the user may do.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option(
    "--no-password",
    is_flag=True,
    help="No password: the user signs in only through the SSO proxy or with API tokens.",
)
@click.pass_context
def add(ctx, name, role, password_stdin, no_password) -> None:
    """Add a user with a role."""
    from .cli_base import fail

    if no_password and password_stdin:
        raise fail("Choose either --password-stdin or --no-password, not both.")
    store = _store(ctx)
    password = None if no_password else _read_password(password_stdin)
    user = _run(lambda: store.add(name, role, password))
    click.echo(f"Added {user.name} ({user.role}) to {store.path}.", err=True)


@users.command("remove")
@click.argument("name")
@click.pass_context
def remove(ctx, name) -> None:
    """Remove a user and all their tokens; their sessions end at the next request."""
    store = _store(ctx)
    key = _run(lambda: normalise_name(name))
    _run(lambda: store.remove(key))
    click.echo(f"Removed {key} from {store.path}.", err=True)


@users.command("list")
@click.pass_context
def list_users(ctx) -> None:
    """List users: name, role, whether a password is set, and token ids."""
    store = _store(ctx)
    records = _run(store.list)
    if not records:
        click.echo(f"No users in {store.path}.", err=True)
        return
    width = max(len(user.name) for user in records)
    for user in records:
        tokens = ", ".join(token.id for token in user.tokens) or "-"
        password = "password" if user.has_password else "no password"
        click.echo(f"{user.name:<{width}}  {user.role:<10}  {password:<11}  tokens: {tokens}")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.pass_context
def passwd(ctx, name, password_stdin) -> None:
    """Set a user's password; their signed-in sessions end."""
    from .cli_base import fail

    store = _store(ctx)
    key = _run(lambda: normalise_name(name))
    if _run(lambda: store.get(key)) is None:  # ask for no password for a user who is not there
        raise fail(f"There is no user {key} in {store.path}.")
    password = _read_password(password_stdin, "New password")
    _run(lambda: store.set_password(key, password))
    click.echo(f"Password of {key} changed; their signed-in sessions have ended.", err=True)


@users.command("token")
@click.argument("name")
@click.pass_context
def token(ctx, name) -> None:
    """Print a new API token for NAME on stdout (shown once; only its hash is kept)."""
    store = _store(ctx)
    key = _run(lambda: normalise_name(name))
    value = _run(lambda: store.issue_token(key))
    token_id = value.split("_")[1]
    click.echo(
        f"New token {token_id} for {key}. Store it now: it is not shown again. "
        "Send it as 'Authorization: Bearer <token>'.",
        err=True,
    )
    click.echo(value)


@users.command("revoke-token")
@click.argument("name")
@click.argument("token_id", required=False)
@click.option("--all", "all_tokens", is_flag=True, help="Revoke every token of the user.")
@click.pass_context
def revoke_token(ctx, name, token_id, all_tokens) -> None:
    """Revoke one API token (by the id `users list` shows, or the token itself) or --all."""
    from .cli_base import fail

    if bool(token_id) == all_tokens:
        raise fail("Give either a TOKEN_ID (see `audit-dashboard users list`) or --all.")
    store = _store(ctx)
    key = _run(lambda: normalise_name(name))
    count = _run(lambda: store.revoke_token(key, token_id, all_tokens=all_tokens))
    click.echo(f"Revoked {count} token(s) of {key}.", err=True)
