"""What the e-mail ingester sends: one item, or a batch of items."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

# Generous: the prompt renderer truncates to the model's budget; this only stops abuse.
MAX_CONTENT_CHARS = 100_000
MAX_BATCH_ITEMS = 100

# The URLs AnyHttpUrl accepts, for the JSON Schema (format "uri" alone admits any scheme or no host):
# http(s), a DNS name whose last label starts with a letter (a numeric one parses as IPv4) or an
# IPv4 address, optional port, then anything printable.
_LABEL = r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
HTTP_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(({_LABEL}\.)*[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*|{_OCTET}(\.{_OCTET}){{3}})"
    r"(:[0-9]{1,4})?([/?#][!-~]*)?$"
)

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class EnhanceItem(BaseModel):
    """One news item parsed out of a newsletter e-mail."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_max_length=MAX_CONTENT_CHARS)

    source: Annotated[NonEmpty, StringConstraints(max_length=200)] = Field(
        description="Newsletter name, e.g. 'TLDR AI'."
    )
    subject: Annotated[str, StringConstraints(max_length=1000)] = Field(
        description="Item headline (or the e-mail subject)."
    )
    from_: Annotated[str, StringConstraints(max_length=500)] = Field(
        alias="from", description="Sender address."
    )
    date: datetime = Field(description="Date of the newsletter, ISO 8601.")
    message_id: Annotated[NonEmpty, StringConstraints(max_length=500)] = Field(
        description="Message-ID of the e-mail the item came from."
    )
    content: Annotated[NonEmpty, StringConstraints(max_length=MAX_CONTENT_CHARS)] = Field(
        description="Item text: plain text, Markdown or HTML."
    )
    url: Annotated[AnyHttpUrl, Field(json_schema_extra={"pattern": HTTP_URL_PATTERN})] | None = Field(
        default=None, description="Canonical link of the story (http or https)."
    )
    links: list[Annotated[str, StringConstraints(max_length=4000)]] = Field(
        default_factory=list, max_length=500
    )
    has_html: bool | None = Field(default=None, description="Whether content is HTML; detected when omitted.")

    @field_validator("source", "subject", "from_", "message_id", "content", "links", mode="before")
    @classmethod
    def _drop_nul(cls, value: object) -> object:
        """NUL characters carry no text and PostgreSQL cannot store them: drop them on the way in."""
        if isinstance(value, str):
            return value.replace("\x00", "")
        if isinstance(value, list):
            return [v.replace("\x00", "") if isinstance(v, str) else v for v in value]
        return value


class EnhanceBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[EnhanceItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
