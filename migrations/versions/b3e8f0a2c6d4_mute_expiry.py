"""mutes that run out: the log may hold entries no moderator made; mutes indexed by their end

Revision ID: b3e8f0a2c6d4
Revises: 7a1c2e9d4b10
Create Date: 2026-11-30 01:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b3e8f0a2c6d4'
down_revision = '7a1c2e9d4b10'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('moderation_actions', schema=None) as batch_op:
        batch_op.alter_column('moderator_id', existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table('mutes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mutes_until'), ['until'], unique=False)


def downgrade():
    with op.batch_alter_table('mutes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mutes_until'))
    op.execute("DELETE FROM moderation_actions WHERE moderator_id IS NULL")
    with op.batch_alter_table('moderation_actions', schema=None) as batch_op:
        batch_op.alter_column('moderator_id', existing_type=sa.Integer(), nullable=False)
