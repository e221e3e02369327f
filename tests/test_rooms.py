"""API.md "Rooms": creating rooms (names, slugs, conflicts), listing them in order, and one room's page."""
from tests.support import TIME_FORMAT, AuthActions, assert_error, assert_fields, assert_refused


def create(member, name):
    return member.post("/api/rooms", json={"name": name})


def test_create_room_answers_the_room(member):
    response = create(member, "General")
    assert response.status_code == 201
    room = response.json["room"]
    assert_fields(room, slug="general", name="General", locked=False, slow_mode_seconds=0, online_count=0)
    assert TIME_FORMAT.match(room["created_at"])


def test_the_slug_is_derived_from_the_name(member):
    for name, slug in [("General", "general"), ("  Café Talk!  ", "cafe-talk"), ("Rust & Go -- 2026", "rust-go-2026"),
                       ("under_score.dot", "under-score-dot"), ("-edges-", "edges"), ("日本 Tokyo", "tokyo")]:
        room = create(member, name).json["room"]
        assert (room["slug"], room["name"]) == (slug, name.strip())
        assert member.get(f"/api/rooms/{slug}").json["room"]["name"] == name.strip()


def test_names_of_1_to_64_characters_after_trimming_are_accepted(member):
    for name in ["a", "x" * 64, "  " + "y" * 64 + "\t\n"]:
        room = create(member, name).json["room"]
        assert room["name"] == name.strip()
        assert set(room["slug"]) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_invalid_names_are_422(member):
    assert_refused(lambda name: create(member, name),
                   ["", "   ", "x" * 65, "!!!", "日本語", "—", None, 42, ["general"],  # 1-64 chars, a slug, a string
                    "nul\x00byte", "tab\tinside", "line\nbreak", "bell\x07"],  # no control characters
                   422, "validation_error", ["name"])
    assert member.get("/api/rooms").json["rooms"] == []


def test_a_missing_name_is_422(member):
    assert_error(member.post("/api/rooms", json={}), 422, "validation_error", ["name"])


def test_a_name_whose_slug_is_taken_is_409(member, make_client):
    create(member, "General")
    other = make_client()
    other.register()
    assert_refused(lambda name: create(other, name), ["General", "general", "  GENERAL ", "Général!"],
                   409, "room_exists")
    assert [room["name"] for room in member.get("/api/rooms").json["rooms"]] == ["General"]


def test_rooms_are_listed_by_name_ignoring_case(member):
    assert member.get("/api/rooms").json["rooms"] == []
    for name in ["beta", "Alpha", "gamma", "Delta", "alpha two"]:
        create(member, name)
    response = member.get("/api/rooms")
    assert response.status_code == 200
    assert [room["name"] for room in response.json["rooms"]] == ["Alpha", "alpha two", "beta", "Delta", "gamma"]
    assert all(TIME_FORMAT.match(room["created_at"]) and room["locked"] is False and room["slow_mode_seconds"] == 0
               for room in response.json["rooms"])


def test_every_signed_in_user_sees_every_room(member, make_client):
    slug = member.create_room("Open house")
    other = make_client()
    other.register()
    assert [room["slug"] for room in other.get("/api/rooms").json["rooms"]] == [slug]


def test_show_room_answers_the_room_and_who_is_online(member):
    created = create(member, "Lobby").json["room"]
    response = member.get("/api/rooms/lobby")
    assert response.status_code == 200
    assert_fields(response.json, room=created, online=[])


def test_an_unknown_room_is_404(member):
    create(member, "Lobby")
    assert_refused(lambda slug: member.get(f"/api/rooms/{slug}"), ["nowhere", "lobby-2", "lob%00by", "lobby%0A"],
                   404, "not_found")


def test_a_user_may_create_few_rooms_a_moderator_any(make_app, make_moderator):
    app = make_app(CHAT_ROOM_CREATE_LIMIT="2/3600")
    user, other = AuthActions(app.test_client()), AuthActions(app.test_client())
    assert user.register().status_code == 201 and other.register().status_code == 201
    first = user.create_room("Kept")
    assert user.post("/api/rooms", json={"name": "kept"}).status_code == 409  # refused: counts for nothing
    user.create_room()
    refused = user.post("/api/rooms", json={"name": "one too many"})
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert other.post("/api/rooms", json={"name": "someone else's"}).status_code == 201
    moderator = make_moderator(on=app)
    assert all(moderator.post("/api/rooms", json={"name": f"mod room {n}"}).status_code == 201 for n in range(3))
    assert first == "kept"
