"""post rules version: one counter that every change able to refuse a post bumps, so a process may keep
what a post's checks read in memory and know, from the statement that records the post, whether it changed

Revision ID: f1a9c3d5e7b2
Revises: e8f4c2b7a913
Create Date: 2026-11-30 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f1a9c3d5e7b2'
down_revision = 'e8f4c2b7a913'
branch_labels = None
depends_on = None


def upgrade():
    post_rules = op.create_table(
        'post_rules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.BigInteger(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_post_rules')),
    )
    op.bulk_insert(post_rules, [{'id': 1, 'version': 0}])


def downgrade():
    op.drop_table('post_rules')
