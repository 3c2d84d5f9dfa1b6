"""Tokenizer and detokenizer IR beside an OpenVINO model: openvino-genai reads its vocabulary there.

`python -m worker.runtime.ov_tokenizers IR_DIR` converts in a child process, so that a serving
process never imports transformers (and torch) just to convert once.
"""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OV_TOKENIZER_FILE = "openvino_tokenizer.xml"
OV_DETOKENIZER_FILE = "openvino_detokenizer.xml"


def has_tokenizer_ir(ir_dir: Path) -> bool:
    return (ir_dir / OV_TOKENIZER_FILE).exists() and (ir_dir / OV_DETOKENIZER_FILE).exists()


def convert_tokenizer_ir(ir_dir: Path, hf_tokenizer: Any | None = None) -> None:
    """Write the tokenizer/detokenizer IR of the HF tokenizer into `ir_dir` (in this process)."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from tokenizers import decoders

    if hf_tokenizer is None:
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(ir_dir)
    tokenizer = hf_tokenizer
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if type(decoder).__name__ == "Sequence" and "ByteLevel" in repr(decoder):
        # GGUF-converted tokenizers get ByteFallback+Fuse+Replace+ByteLevel; openvino-tokenizers cannot
        # build that chain, and for a byte-level vocabulary it decodes exactly like ByteLevel alone.
        tokenizer = copy.deepcopy(hf_tokenizer)
        tokenizer.backend_tokenizer.decoder = decoders.ByteLevel()
    ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
    ov.save_model(ov_tokenizer, ir_dir / OV_TOKENIZER_FILE)
    ov.save_model(ov_detokenizer, ir_dir / OV_DETOKENIZER_FILE)


def ensure_tokenizer_ir(ir_dir: Path) -> None:
    if has_tokenizer_ir(ir_dir):
        return
    log.info("converting the tokenizer of %s to OpenVINO IR (once)", ir_dir)
    completed = subprocess.run(
        [sys.executable, "-m", "worker.runtime.ov_tokenizers", str(ir_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0 or not has_tokenizer_ir(ir_dir):
        raise RuntimeError(f"tokenizer conversion for {ir_dir} failed: {completed.stderr[-2000:]}")


if __name__ == "__main__":
    convert_tokenizer_ir(Path(sys.argv[1]))
