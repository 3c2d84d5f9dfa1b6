"""The contract shared by app, worker and training: request, metadata schema, prompt.

Everything that must agree between serving and training lives here and nowhere else.
"""

from app.contract.derived import DerivedFields, derive_fields, html_to_text, strip_tracking
from app.contract.metadata import (
    CATEGORIES,
    JSON_SEPARATORS,
    SCHEMA_VERSION,
    GeneratedMetadata,
    NewsMetadata,
    generated_json_schema,
    news_metadata_json_schema,
    render_target,
)
from app.contract.prompt import PromptItem, build_messages, render_prompt
from app.contract.request import EnhanceItem

__all__ = [
    "CATEGORIES",
    "JSON_SEPARATORS",
    "SCHEMA_VERSION",
    "DerivedFields",
    "EnhanceItem",
    "GeneratedMetadata",
    "NewsMetadata",
    "PromptItem",
    "build_messages",
    "derive_fields",
    "generated_json_schema",
    "html_to_text",
    "news_metadata_json_schema",
    "render_prompt",
    "render_target",
    "strip_tracking",
]
