"""the database gives each room's events their ids: a counter on the room; no more write keys

Revision ID: c4d2a7e91f03
Revises: b3e8f0a2c6d4
Create Date: 2026-11-30 03:30:00

Each room now holds the id of its last event (`event_ms`, `event_seq`), taken and advanced in the
transaction that records an event, so commits give the order and Redis publishes it afterwards.
The counter starts at the highest event id the record holds for the room. Messages still pending
(written by the old two-step path, never acknowledged, invisible) are removed: their senders were
told 503 and retried or gave up.
"""
from alembic import op
import sqlalchemy as sa


revision = 'c4d2a7e91f03'
down_revision = 'b3e8f0a2c6d4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_ms', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('event_seq', sa.BigInteger(), nullable=False, server_default='0'))
    op.execute("DELETE FROM messages WHERE event_ms IS NULL")
    connection = op.get_bind()
    highest = {}
    for sql in ("SELECT room_id, event_ms, event_seq FROM messages",
                "SELECT room_id, deleted_event_ms, deleted_event_seq FROM messages WHERE deleted_event_ms IS NOT NULL",
                "SELECT room_id, event_ms, event_seq FROM moderation_actions "
                "WHERE room_id IS NOT NULL AND event_ms IS NOT NULL"):
        for room_id, ms, seq in connection.execute(sa.text(sql)):
            highest[room_id] = max(highest.get(room_id, (0, 0)), (ms, seq))
    for room_id, (ms, seq) in highest.items():
        connection.execute(sa.text("UPDATE rooms SET event_ms = :ms, event_seq = :seq WHERE id = :id"),
                           {"ms": ms, "seq": seq, "id": room_id})
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint('uq_messages_write_key', type_='unique')
        batch_op.drop_column('write_key')


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('write_key', sa.String(length=36), nullable=True))
    op.execute("UPDATE messages SET write_key = 'm' || id")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.alter_column('write_key', existing_type=sa.String(length=36), nullable=False)
        batch_op.create_unique_constraint('uq_messages_write_key', ['write_key'])
    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.drop_column('event_seq')
        batch_op.drop_column('event_ms')
