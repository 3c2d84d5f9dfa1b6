"""Model sources: local HF directory, local .gguf, OpenVINO IR, registry directory; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.contract import generated_json_schema
from tests.gguf_writer import write_llama_gguf
from worker.runtime.loading import ModelSourceError, classify_source, load_runtime
from worker.runtime.schema_budget import token_budget


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_gguf_loads_with_the_same_tokens_and_logits(
    tiny_model_dir: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    assert classify_source(str(tiny_gguf)).kind == "gguf"
    runtime = load_runtime(str(tiny_gguf), backend="torch", cache_dir=tmp_path)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    text = '{"summary": "OpenAI and Broadcom build chips"}'
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(text, return_tensors="pt")["input_ids"]
    assert runtime.tokenizer(text)["input_ids"] == ids[0].tolist()
    assert runtime.tokenizer.eos_token == "<|im_end|>"
    with torch.no_grad():
        assert torch.allclose(reference(ids).logits, runtime.model(ids).logits, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_every_source_kind_generates_schema_valid_json(
    backend: str, tiny_model_dir: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    from worker.runtime.schema_budget import retry_schema

    for source in (str(tiny_model_dir), str(tiny_gguf)):
        runtime = load_runtime(source, backend=backend, precision="int8", cache_dir=tmp_path)
        schema = retry_schema()
        (result,) = runtime.generate(
            ["Source: x\nHeadline: y\n\ntext"],
            max_new_tokens=token_budget(schema),
            schema=schema,
            stop_on_repetition=False,
        )
        assert result.finish_reason == "stop"
        import jsonschema

        jsonschema.validate(json.loads(result.text), generated_json_schema())


def test_exported_openvino_ir_directory_is_a_source(tiny_model_dir: Path, tmp_path: Path) -> None:
    load_runtime(str(tiny_model_dir), backend="openvino", precision="int8", cache_dir=tmp_path)
    (ir_dir,) = [p for p in tmp_path.glob("ov-int8-*") if (p / "openvino_model.xml").exists()]
    assert classify_source(str(ir_dir)).kind == "openvino_ir"
    runtime = load_runtime(str(ir_dir), backend="openvino", cache_dir=tmp_path)
    assert runtime.info.backend == "openvino"
    with pytest.raises(ModelSourceError, match="torch backend needs HF weights"):
        load_runtime(str(ir_dir), backend="torch", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such file or directory"),
        (lambda p: (p / "model.bin").write_bytes(b"x") and p / "model.bin", "must be a .gguf"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "neither config.json"),
        (lambda p: p / "nothing.gguf", "no such file"),
    ],
)
def test_bad_sources_say_what_is_wrong(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelSourceError, match=message):
        classify_source(str(make(tmp_path)))


def test_hf_id_is_passed_to_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = classify_source("meta-llama/Llama-3.2-1B")
    assert source.kind == "hf_id" and source.location == "meta-llama/Llama-3.2-1B"
    with pytest.raises(ModelSourceError, match="unknown backend"):
        load_runtime(str(tiny_model_dir), backend="onnx", cache_dir=tmp_path)
