"""The tokenizer surface the pipeline uses, on `tokenizers` alone: no transformers, hence no torch.

Importing transformers' tokenizer classes imports torch, ~450 MB of RSS that an openvino-genai
worker never uses. The chat template is rendered by transformers' own renderer
(`transformers.utils.chat_template_utils`, which imports neither), so prompts are byte-identical to
`AutoTokenizer.apply_chat_template` (tests/test_runtime.py checks it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from tokenizers import Tokenizer

_SPECIAL_ROLES = ("bos", "eos", "unk", "pad")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # older tokenizer_config.json: {"content": "<s>", ...}
        return value.get("content")
    return value if isinstance(value, str) else None


class _RenderJinjaTemplate(Protocol):
    """`render_jinja_template` as it behaves: it returns (rendered texts, generation indices), though
    transformers annotates it -> str; the special tokens (bos_token, ...) go to the template as
    keyword arguments."""

    def __call__(
        self,
        *,
        conversations: list[list[dict[str, str]]],
        chat_template: str,
        add_generation_prompt: bool,
        **special_tokens: str,
    ) -> tuple[list[str], list[list[tuple[int, int]]]]: ...


class LightTokenizer:
    def __init__(self, model_dir: Path) -> None:
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        config_path = model_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        template_file = model_dir / "chat_template.jinja"
        self.chat_template: str | None = (
            template_file.read_text(encoding="utf-8")
            if template_file.exists()
            else config.get("chat_template")
        )
        self.special_tokens_map: dict[str, str] = {}
        for role in _SPECIAL_ROLES:
            text = _token_text(config.get(f"{role}_token"))
            if text is not None:
                self.special_tokens_map[f"{role}_token"] = text
        self.added_tokens_decoder = self._tokenizer.get_added_tokens_decoder()
        self.eos_token = self.special_tokens_map.get("eos_token")
        self.eos_token_id = self.convert_tokens_to_ids(self.eos_token) if self.eos_token else None
        pad = self.special_tokens_map.get("pad_token", self.eos_token)
        self.pad_token_id = self.convert_tokens_to_ids(pad) if pad else None

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def __call__(
        self, text: str | list[str], *, add_special_tokens: bool = True, return_tensors: str | None = None
    ) -> dict[str, Any]:
        texts = [text] if isinstance(text, str) else text
        ids = [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)]
        if return_tensors == "np":
            if len({len(row) for row in ids}) > 1:
                raise ValueError("rows of different lengths: encode them one at a time")
            return {"input_ids": np.array(ids, dtype=np.int64)}
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported (only 'np')")
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        # No clean_up_tokenization_spaces: it rewrites " ." to "." and can shorten a string below its
        # schema minLength after the grammar accepted it.
        return str(self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        *,
        tokenize: bool = False,
        add_generation_prompt: bool = False,
    ) -> str:
        from transformers.utils import chat_template_utils

        # transformers' annotation of the return value is wrong (see _RenderJinjaTemplate)
        render_jinja_template = cast(_RenderJinjaTemplate, chat_template_utils.render_jinja_template)
        if tokenize:
            raise ValueError("LightTokenizer renders text only (tokenize=False)")
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template")
        rendered, _ = render_jinja_template(
            conversations=[conversation],
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )
        return str(rendered[0])
