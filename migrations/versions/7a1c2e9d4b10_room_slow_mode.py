"""rooms.slow_mode_seconds; stored room_updated events get the field too

Revision ID: 7a1c2e9d4b10
Revises: 324ad5dbe05e
Create Date: 2026-11-30 00:45:00

"""
import json

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7a1c2e9d4b10'
down_revision = '324ad5dbe05e'
branch_labels = None
depends_on = None

_actions = sa.table('moderation_actions', sa.column('id', sa.Integer), sa.column('event_type', sa.String),
                    sa.column('event_data', sa.Text))


def upgrade():
    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('slow_mode_seconds', sa.Integer(), nullable=False, server_default='0'))
    # Replays from the record (models.events_between) must show a room as API.md's `room` now does:
    # slow mode did not exist when these were published, so it was off.
    connection = op.get_bind()
    rows = connection.execute(sa.select(_actions.c.id, _actions.c.event_data)
                              .where(_actions.c.event_type == 'room_updated')).all()
    for action_id, event_data in rows:
        data = json.loads(event_data)
        data['room'].setdefault('slow_mode_seconds', 0)
        connection.execute(_actions.update().where(_actions.c.id == action_id)
                           .values(event_data=json.dumps(data)))


def downgrade():
    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.drop_column('slow_mode_seconds')
