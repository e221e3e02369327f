"""Command line: `flask --app chat users create|promote`."""
import click
from flask import Blueprint

from . import actions
from .errors import ApiError
from .extensions import db
from .models import find_user
from .schemas import USERNAME

bp = Blueprint("users", __name__, cli_group="users")


@bp.cli.command("create")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--moderator", is_flag=True, help="Give the user the moderator role.")
def create_user(username, password, moderator):
    """Create a user."""
    if not USERNAME.match(username) or not 8 <= len(password) <= 256:
        raise click.BadParameter("username: 3–32 of A-Z a-z 0-9 _ . -; password: 8–256 characters")
    try:
        user = actions.register_user(username, password, role="moderator" if moderator else "user")
    except ApiError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"created {user.username} ({user.role})")


@bp.cli.command("promote")
@click.argument("username")
def promote(username):
    """Make an existing user a moderator."""
    user = find_user(username)
    if user is None:
        raise click.ClickException(f"no user named {username}")
    user.role = "moderator"
    db.session.commit()
    click.echo(f"{user.username} is now a moderator")
