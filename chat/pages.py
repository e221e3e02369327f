"""Server-rendered pages: the rooms list, a room's chat and the moderators' dashboard."""

from flask import Blueprint, abort, render_template

from .auth import current_user
from .models import find_room

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return render_template("index.html", user=current_user())


@bp.get("/rooms/<slug>")
def room(slug):
    found = find_room(slug)
    if found is None:
        abort(404)
    return render_template("room.html", user=current_user(), room=found)


@bp.get("/moderate")
def moderate():
    return render_template("moderate.html", user=current_user())


def init_app(app):
    @app.after_request
    def _security_headers(response):
        # No inline scripts: message text can never become code (API.md, issue 4).
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response
