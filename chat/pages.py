"""Server-rendered pages: the rooms list, a room's chat and the moderators' dashboard."""
from urllib.parse import quote

from flask import Blueprint, abort, current_app, redirect, render_template, request

from .auth import current_user
from .ids import iso
from .models import find_room, mutes_in_force

bp = Blueprint("pages", __name__)


def _sign_in_first():
    """Anonymous visitors sign in on `/` and come back here afterwards."""
    return redirect("/?next=" + quote(request.full_path.rstrip("?"), safe="/"))


@bp.get("/")
def index():
    return render_template("index.html", user=current_user(), page="index")


@bp.get("/rooms/<slug>")
def room(slug):
    user = current_user()
    if user is None:
        return _sign_in_first()
    found = find_room(slug)
    if found is None:
        abort(404, description=f"There is no room called “{slug}”.")
    # The user's own mute in force (GET .../mutes is for moderators): the page says why and until when
    # from its first paint. Who muted them is theirs to know, as user_muted tells the room; the reason is not.
    own_mute = next((mute for mute in mutes_in_force(found) if mute.user_id == user.id), None)
    return render_template("room.html", user=user, room=found, page="room",
                           max_chars=current_app.config["CHAT_MAX_MESSAGE_CHARS"],
                           muted_until=iso(own_mute.until) if own_mute else None,
                           muted_by=own_mute.by.username if own_mute else None)


@bp.get("/moderate")
def moderate():
    user = current_user()
    if user is None:
        return _sign_in_first()
    if not user.is_moderator:
        abort(403, description="The moderator dashboard is for moderators only.")
    return render_template("moderate.html", user=user, page="moderate")


def init_app(app):
    @app.context_processor
    def _signed_in_user():
        # Error pages are rendered without a `user`; the header still offers logout. A page that
        # failed because the database is down must still render, so a failure here means anonymous.
        try:
            return {"user": current_user()}
        except Exception:  # noqa: BLE001
            return {"user": None}

