"""sessions.last_seen_at, for the idle timeout (CHAT_SESSION_IDLE_MINUTES)

Revision ID: c5d2a7e91f30
Revises: c4d2a7e91f03
Create Date: 2026-12-01 10:00:00

"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c5d2a7e91f30'
down_revision = 'c4d2a7e91f03'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(), nullable=True))
    # Nobody knows when an existing session was last used: its idle clock starts now (taking
    # `created_at` would sign out, at deploy, everyone who signed in over a week ago and used it since).
    # The absolute lifetime still counts from `created_at`.
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC, as the app stores it
    op.get_bind().execute(sa.text("UPDATE sessions SET last_seen_at = :now"), {"now": now})
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.alter_column('last_seen_at', existing_type=sa.DateTime(), nullable=False)


def downgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('last_seen_at')
