"""Command line for operators: `flask --app chat users create|promote|demote|set-password|unban|list`."""
import click
from flask import Blueprint

from . import actions
from .errors import ApiError
from .models import User, find_user, users_by_name
from .schemas import USERNAME

bp = Blueprint("users", __name__, cli_group="users")

_PASSWORD_RULE = "password: 8–256 characters"


def _valid_password(password: str) -> bool:
    return 8 <= len(password) <= 256  # as registration (CredentialsSchema)


def _existing_user(username: str) -> User:
    user = find_user(username) if USERNAME.match(username) else None
    if user is None:
        raise click.ClickException(f"no user named {username}")
    return user


@bp.cli.command("create")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--moderator", is_flag=True, help="Give the user the moderator role.")
def create_user(username, password, moderator):
    """Create a user."""
    if not USERNAME.match(username) or not _valid_password(password):
        raise click.BadParameter(f"username: 3–32 of A-Z a-z 0-9 _ . -; {_PASSWORD_RULE}")
    try:
        user = actions.register_user(username, password, role="moderator" if moderator else "user")
    except ApiError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"created {user.username} ({user.role})")


@bp.cli.command("promote")
@click.argument("username")
def promote(username):
    """Make an existing user a moderator."""
    user = _existing_user(username)
    actions.set_role(user, "moderator")
    click.echo(f"{user.username} is now a moderator")


@bp.cli.command("demote")
@click.argument("username")
def demote(username):
    """Make a moderator a user again; their open streams end."""
    user = _existing_user(username)
    actions.set_role(user, "user")
    click.echo(f"{user.username} is now a user")


@bp.cli.command("set-password")
@click.argument("username")
def set_password(username):
    """Set a user's password, asked for twice and never echoed (never on the command line, where
    `ps` and shell history would show it). Every session of the user ends."""
    user = _existing_user(username)
    password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    if not _valid_password(password):
        raise click.BadParameter(_PASSWORD_RULE)
    ended = actions.set_password(user, password)
    click.echo(f"password of {user.username} set; {ended} session(s) ended")


@bp.cli.command("unban")
@click.argument("username")
def unban(username):
    """Lift a user's ban (their kept sessions work again)."""
    user = _existing_user(username)
    click.echo(f"{user.username} is no longer banned" if actions.lift_ban(user) else f"{user.username} was not banned")


@bp.cli.command("list")
@click.option("--moderators", is_flag=True, help="Only moderators.")
def list_users(moderators):
    """Users by name: username, role, and `banned` where so."""
    for user, banned in users_by_name(moderators_only=moderators):
        click.echo("\t".join([user.username, user.role, *(["banned"] if banned else [])]))
