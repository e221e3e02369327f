"""The chat service: create_app() is the table of contents."""
import os

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, auth, cli, config, errors, http, live, logs, metrics, moderation, ops, pages
from .bodies import BodyDeadline
from .fastpoll import PollFastLane
from .fastpost import PostFastLane
from .http import RequestIds
from .extensions import db, migrate, redis_client


def create_app(test_config: dict | None = None, instance_path: str | None = None) -> Flask:
    """Build the app from the environment; `test_config` overrides any setting (tests)."""
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path,
                template_folder="../templates", static_folder="../static")
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    os.chmod(app.instance_path, 0o700)  # the secret key, the SQLite file and the embedded Redis's socket
    app.config.from_mapping(config.load(app.instance_path))
    if test_config:
        app.config.from_mapping(test_config)
    config.finish(app.config, app.instance_path)
    logs.configure(app.config["CHAT_LOG_LEVEL"])
    app.wsgi_app = PollFastLane(app, app.wsgi_app)  # polls answered from memory skip Flask's handling
    app.wsgi_app = PostFastLane(app, app.wsgi_app)  # and posts that memory lets through
    # Trust X-Forwarded-Proto/For from the platform's router, so cookies get Secure behind HTTPS.
    hops = app.config["CHAT_TRUSTED_PROXIES"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    # Outside the app and the fast lane, inside the request log: a body too slow to arrive is answered 408.
    app.wsgi_app = BodyDeadline(app.wsgi_app, app.config["CHAT_BODY_TIMEOUT_SECONDS"],
                                app.config["CHAT_MAX_REQUEST_BYTES"])
    app.wsgi_app = RequestIds(app.wsgi_app)

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "..", "migrations"))
    redis_client.init_app(app)

    app.register_blueprint(api.bp)
    app.register_blueprint(live.bp)
    app.register_blueprint(moderation.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(cli.bp)

    auth.init_app(app)
    errors.init_app(app)
    http.init_app(app)
    metrics.init_app(app)
    pages.init_app(app)
    return app
