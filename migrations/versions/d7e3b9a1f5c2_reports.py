"""reports: users report messages to moderators; each report's two events are events of its room

Revision ID: d7e3b9a1f5c2
Revises: c5d2a7e91f30
Create Date: 2026-11-30 04:20:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd7e3b9a1f5c2'
down_revision = 'c5d2a7e91f30'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'reports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('room_id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.Integer(), nullable=False),
        sa.Column('reporter_id', sa.Integer(), nullable=False),
        sa.Column('reason', sa.String(length=500), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('resolution', sa.String(length=16), nullable=True),
        sa.Column('resolved_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('resolved_at', sa.DateTime(), nullable=True),
        sa.Column('created_event_ms', sa.BigInteger(), nullable=True),
        sa.Column('created_event_seq', sa.BigInteger(), nullable=True),
        sa.Column('resolved_event_ms', sa.BigInteger(), nullable=True),
        sa.Column('resolved_event_seq', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['room_id'], ['rooms.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['reporter_id'], ['users.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['resolved_by_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('message_id', 'reporter_id', name='uq_reports_message_reporter'),
    )
    op.create_index('ix_reports_status', 'reports', ['status', 'id'])
    op.create_index('ix_reports_room_created_event', 'reports', ['room_id', 'created_event_ms', 'created_event_seq'])
    op.create_index('ix_reports_room_resolved_event', 'reports',
                    ['room_id', 'resolved_event_ms', 'resolved_event_seq'])


def downgrade():
    op.drop_index('ix_reports_room_resolved_event', table_name='reports')
    op.drop_index('ix_reports_room_created_event', table_name='reports')
    op.drop_index('ix_reports_status', table_name='reports')
    op.drop_table('reports')
