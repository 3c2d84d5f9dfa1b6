"""Training data: seed rows and corrected records -> labelled examples -> weighted token sequences.

Two line formats, detected per line (see docs/training.md):
- seed: `{"messages": [...], "annotation": {...}}` (../shared/data/seed/README.md); the item is parsed
  out of the seed user prompt, the labels come from `annotation`.
- record: `{"item": {...}, "metadata": {...}}`, written by `training_row` (the review page's
  `enhancer export --format training`); `metadata` holds any subset of GeneratedMetadata fields.

The prompt is always rendered by the shared contract (`render_prompt`) from the same fields the
worker uses, and the target is `render_target` of a complete GeneratedMetadata object. Fields the
example has no label for get a schema-valid placeholder so the JSON stays whole, and zero loss
weight on its tokens: the model sees realistic context but never learns the placeholder.

Modules (each imports only those above it):
- examples: `LabeledExample` (item, story key, labels, target with placeholders), `PLACEHOLDERS`,
  `GENERATED_FIELDS`, `prompt_item`, `item_key`.
- record_rows: the record-row format: `normalize_item`, `validate_metadata`, `training_row`.
- seed_rows: the seed-row format: the seed prompt's regexes, `_seed_item`, `_seed_labels`.
- loading: `parse_lines`, `load_examples` (either format per line) -> `LoadedData`.
- split: `split_examples`, the deterministic train/validation split by story.
- tokens: `encode_example`, `tokenize_examples`, `field_spans`, `EncodedExample` (loss weights).

A data file's identity is `app.core.hashing.file_sha256`.
"""
