"""The knowledge layer over the records: stories, the topic vocabulary, search, digests, feeds, webhooks.

The worker indexes each record after storing it (app/knowledge/indexer.py); the API reads here.
"""
