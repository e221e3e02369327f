"""feed events: events of no room (bans, unbans) recorded with the change they announce, for the relay

Revision ID: e8f4c2b7a913
Revises: d7e3b9a1f5c2
Create Date: 2026-11-30 07:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e8f4c2b7a913'
down_revision = 'd7e3b9a1f5c2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'feed_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('data', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('published_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_feed_events')),
    )
    with op.batch_alter_table('feed_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feed_events_published_at'), ['published_at'], unique=False)


def downgrade():
    with op.batch_alter_table('feed_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feed_events_published_at'))
    op.drop_table('feed_events')
