"""knowledge layer: stories, topic vocabulary, full-text index, feed tokens, webhooks; jobs.request_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('stories',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('canonical_link', sa.Text(), nullable=True),
    sa.Column('first_date', TZ, nullable=False),
    sa.Column('last_date', TZ, nullable=False),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('max_relevance', sa.Integer(), nullable=True),
    sa.Column('merged_into_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', TZ, nullable=False),
    sa.Column('updated_at', TZ, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    for column in ('first_date', 'last_date', 'merged_into_id', 'updated_at'):
        op.create_index(f'ix_stories_{column}', 'stories', [column], unique=False)
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('story_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('story_pinned', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('embedding', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('indexed_at', TZ, nullable=True))
        batch_op.create_index('ix_records_story_id', ['story_id'], unique=False)
        batch_op.create_index('ix_records_indexed_at', ['indexed_at'], unique=False)
        batch_op.create_foreign_key('fk_records_story_id_stories', 'stories', ['story_id'], ['id'])

    op.create_table('topics',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', TZ, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_table('topic_aliases',
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('topic_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['topic_id'], ['topics.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_index('ix_topic_aliases_topic_id', 'topic_aliases', ['topic_id'], unique=False)
    op.create_table('record_topics',
    sa.Column('record_id', sa.String(length=32), nullable=False),
    sa.Column('topic_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['topic_id'], ['topics.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('record_id', 'topic_id')
    )
    op.create_index('ix_record_topics_topic_id', 'record_topics', ['topic_id'], unique=False)

    # Full-text index (app/knowledge/search.py): FTS5 on SQLite, a tsvector with a GIN index on PostgreSQL.
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(
            "CREATE VIRTUAL TABLE record_fts USING fts5(record_id UNINDEXED, headline, summary, topics,"
            " entities, body, tokenize='porter unicode61 remove_diacritics 2')"
        )
    else:
        op.create_table('record_fts',
        sa.Column('record_id', sa.String(length=32), nullable=False),
        sa.Column('document', sa.dialects.postgresql.TSVECTOR(), nullable=False),
        sa.ForeignKeyConstraint(['record_id'], ['records.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('record_id')
        )
        op.create_index('ix_record_fts_document', 'record_fts', ['document'], postgresql_using='gin')

    op.create_table('feed_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('created_at', TZ, nullable=False),
    sa.Column('revoked_at', TZ, nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_sha256')
    )
    op.create_table('webhooks',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('secret', sa.String(length=100), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', TZ, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('webhook_id', sa.String(length=32), nullable=False),
    sa.Column('event_type', sa.String(length=50), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', TZ, nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', TZ, nullable=False),
    sa.Column('finished_at', TZ, nullable=True),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_deliveries_webhook_id', 'webhook_deliveries', ['webhook_id'], unique=False)
    op.create_index('ix_webhook_deliveries_status_next', 'webhook_deliveries', ['status', 'next_attempt_at'], unique=False)

    # The X-Request-ID of the request that created a job (its worker log lines carry it).
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('request_id')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhooks')
    op.drop_table('feed_tokens')
    op.drop_table('record_fts')
    op.drop_table('record_topics')
    op.drop_table('topic_aliases')
    op.drop_table('topics')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_constraint('fk_records_story_id_stories', type_='foreignkey')
        batch_op.drop_index('ix_records_indexed_at')
        batch_op.drop_index('ix_records_story_id')
        batch_op.drop_column('indexed_at')
        batch_op.drop_column('embedding')
        batch_op.drop_column('story_pinned')
        batch_op.drop_column('story_id')
    op.drop_table('stories')
