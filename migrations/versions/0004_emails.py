"""emails: raw newsletter e-mails posted to /v1/emails; items link to theirs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('emails',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('dedup_key', sa.String(length=600), nullable=False),
    sa.Column('message_id', sa.String(length=500), nullable=True),
    sa.Column('sender', sa.String(length=500), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('date', sa.DateTime(timezone=True), nullable=True),
    sa.Column('list_id', sa.String(length=500), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('splitter', sa.String(length=50), nullable=False),
    sa.Column('story_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedup_key')
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('section', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('sponsored', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f('ix_items_email_id'), ['email_id'], unique=False)
        batch_op.create_foreign_key('fk_items_email_id_emails', 'emails', ['email_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_constraint('fk_items_email_id_emails', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_items_email_id'))
        batch_op.drop_column('sponsored')
        batch_op.drop_column('position')
        batch_op.drop_column('section')
        batch_op.drop_column('email_id')
    op.drop_table('emails')
