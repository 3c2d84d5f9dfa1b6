"""The inference engine on the tiny model: backends, batching, grammar bounds, repetition stop, bench."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import xgrammar as xgr
from transformers import AutoTokenizer

from app.contract import generated_json_schema, news_metadata_json_schema
from tests.conftest import REPO_ROOT
from tests.fixtures import LABELLED
from worker.bench import ENTRY_KEYS
from worker.bench_items import item_from_body
from worker.pipeline import _derive, build_prompt, enhance_items
from worker.runtime import load_runtime
from worker.runtime.base import GREEDY, RETRY, SamplingParams
from worker.runtime.grammar import MAX_REPEAT, UnsupportedSchema, schema_ebnf
from worker.runtime.repetition import LoopDetector, loop_period
from worker.runtime.schema_budget import max_json_chars, retry_schema, token_budget

BACKENDS = ["torch", "openvino", "openvino-genai"]


@pytest.fixture(scope="module")
def runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(scope="module")
def runtimes(tiny_model_dir: Path, runtime_cache: Path) -> dict:
    return {
        b: load_runtime(str(tiny_model_dir), backend=b, precision="int8", cache_dir=runtime_cache)
        for b in BACKENDS
    }


@pytest.fixture(scope="module")
def seed_inputs(seed_items: list[dict]) -> list:
    # Short and long items in one batch, so the short ones are left-padded.
    chosen = sorted(seed_items, key=lambda body: len(body["content"]))
    return [item_from_body(str(i), body).item for i, body in enumerate([chosen[0], chosen[-1], chosen[1]])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_makes_schema_valid_records_for_a_padded_batch(
    backend: str, runtimes: dict, seed_inputs: list
) -> None:
    runtime = runtimes[backend]
    prompts = [build_prompt(item, _derive(item), runtime.tokenizer) for item in seed_inputs]
    lengths = [len(runtime.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert len(set(lengths)) == len(lengths)  # the batch really needs padding
    outcomes = enhance_items(runtime, seed_inputs)
    validator = jsonschema.Draft202012Validator(news_metadata_json_schema())
    for outcome in outcomes:
        assert outcome.metadata is not None, outcome.error
        assert not list(validator.iter_errors(outcome.metadata.model_dump(mode="json")))
        assert outcome.attempts in (1, 2) and outcome.new_tokens > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_greedy_equals_one_at_a_time(backend: str, runtimes: dict, seed_inputs: list) -> None:
    runtime = runtimes[backend]
    prompts = [build_prompt(item, _derive(item), runtime.tokenizer) for item in seed_inputs]
    schema = retry_schema()
    kwargs = {"max_new_tokens": token_budget(schema), "schema": schema, "stop_on_repetition": False}
    batched = runtime.generate(prompts, **kwargs)
    single = [runtime.generate([p], **kwargs)[0] for p in prompts]
    for together, alone in zip(batched, single, strict=True):
        assert together.finish_reason == alone.finish_reason == "stop"
        jsonschema.validate(json.loads(together.text), generated_json_schema())
        # Padding changes matmul shapes; with fp32 torch and genai's per-sequence paged attention the
        # tiny model's greedy tokens still agree exactly. (int8 optimum-intel: valid is what we assert.)
        if backend != "openvino":
            assert together.text == alone.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_repetition_guard_stops_a_looping_row(backend: str, runtimes: dict) -> None:
    """The random tiny model loops inside the summary string ('hhhh...') under greedy decoding."""
    runtime = runtimes[backend]
    schema = generated_json_schema()
    budget = token_budget(schema)
    prompts = ["Source: x\nHeadline: y\n\ntext", "hello there, a longer prompt here"]
    stopped = runtime.generate(prompts, max_new_tokens=budget, schema=schema, sampling=GREEDY)
    assert [r.finish_reason for r in stopped] == ["repetition", "repetition"]
    assert all(r.new_tokens < 64 for r in stopped)
    unguarded = runtime.generate(prompts[:1], max_new_tokens=budget, schema=schema, stop_on_repetition=False)
    assert unguarded[0].new_tokens > stopped[0].new_tokens


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_times_its_passes(backend: str, runtimes: dict) -> None:
    """The bench's breakdown comes from these clocks: prefill before each row's first token,
    one decode pass per further token, the grammar's masks where Python computes them."""
    runtime = runtimes[backend]
    schema = generated_json_schema()
    prompts = ["Source: x\nHeadline: y\n\ntext", "hello there, a longer prompt here"]
    lengths = [len(runtime.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    results = runtime.generate(prompts, max_new_tokens=24, schema=schema, stop_on_repetition=False)
    timing = results[0].timing
    assert timing is not None and all(r.timing is timing for r in results)  # one clock per call
    assert timing.rows == 2 and timing.prompt_tokens == sum(lengths)
    longest = max(r.new_tokens for r in results)
    assert timing.prefill_steps >= 1 and timing.prefill_s > 0 and timing.decode_s > 0
    # Each pass gives a row at most one token; a trailing end-of-sequence token is not counted.
    assert longest <= timing.prefill_steps + timing.decode_steps <= longest + timing.prefill_steps + 1
    assert timing.tokenize_s + timing.prefill_s + timing.decode_s <= results[0].seconds + 1e-3
    if backend == "openvino-genai":
        assert timing.grammar_s is None  # xgrammar runs inside genai's C++ step
    else:
        assert timing.prefill_steps == 1 and 0 < timing.grammar_s < timing.decode_s
        free = runtime.generate(prompts[:1], max_new_tokens=4, stop_on_repetition=False)[0].timing
        assert free.grammar_s is None and free.rows == 1


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_a_row_stopped_for_repetition_says_so_when_padding_is_eos(backend: str, runtimes: dict) -> None:
    """SmolLM2 pads with EOS: the padding after a stopped row must not read as a normal stop."""
    runtime = runtimes[backend]
    schema = generated_json_schema()
    prompts = ["Source: x\nHeadline: y\n\ntext", "hello there, a longer prompt here"]
    pad_token_id = runtime.tokenizer.pad_token_id
    runtime.tokenizer.pad_token_id = runtime.eos_token_ids[0]  # generate() fills stopped rows with it
    try:
        stopped = runtime.generate(
            prompts, max_new_tokens=token_budget(schema), schema=schema, sampling=GREEDY
        )
    finally:
        runtime.tokenizer.pad_token_id = pad_token_id
    assert [r.finish_reason for r in stopped] == ["repetition", "repetition"]


def test_loop_detector_stops_loops_inside_strings_only() -> None:
    assert loop_period([5, 1, 2, 3] * 8) == 4
    assert loop_period([7] * 15) is None  # shorter than the minimum span
    assert loop_period(list(range(200))) is None
    timestamp = list(range(100, 130))  # a 30-token unit, like SmolLM2's looping timestamps
    assert loop_period([1, 2, *timestamp * 3]) == 30
    assert loop_period([1, 2, *timestamp * 2]) is None  # twice can be a real quotation
    assert loop_period([9, *list(range(100, 125)) * 5]) == 25
    vocab = {1: '"x"', 2: ", ", 3: "ab", 4: "c"}

    def decode(ids: list[int]) -> str:
        return "".join(vocab[i] for i in ids)

    constrained = LoopDetector(decode, constrained=True)
    assert not constrained([1, 2] * 10)  # repeated list items: maxItems ends them, dedupe cleans up
    assert constrained([3, 4] * 10)  # a loop inside one string
    assert LoopDetector(decode, constrained=False)([1, 2] * 10)  # free text: every loop stops


def _longest_instance(schema: dict) -> dict:
    """The longest value the retry schema admits: every string and array at its maximum."""

    def longest(node: dict) -> object:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node
        if "enum" in node:
            return max(node["enum"], key=lambda v: len(json.dumps(v)))
        if node["type"] == "string":
            return "~" * node["maxLength"]  # one character, never merged by a tokenizer into fewer
        if node["type"] == "integer":
            return node["maximum"]
        return [longest(node["items"]) for _ in range(node["maxItems"])]

    return {name: longest(prop) for name, prop in schema["properties"].items()}


def test_retry_schema_output_always_fits_its_budget(tiny_model_dir: Path, runtimes: dict) -> None:
    from app.contract import JSON_SEPARATORS

    schema = retry_schema()
    budget = token_budget(schema)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer)))
    compiled = compiler.compile_grammar(schema_ebnf(schema))

    def accepts(text: str) -> bool:
        """The whole text, then end of sequence, and nothing else is left to generate."""
        matcher = xgr.GrammarMatcher(compiled)
        complete = matcher.accept_string(text) and matcher.accept_token(tokenizer.eos_token_id)
        return complete and matcher.is_terminated()

    longest = json.dumps(_longest_instance(schema), separators=JSON_SEPARATORS)
    assert accepts(longest)
    assert len(longest) <= max_json_chars(schema) and len(longest) + 1 <= budget
    # Worst case in tokens: one token per character (each is printable ASCII), plus end of sequence.
    assert len(tokenizer(longest, add_special_tokens=False)["input_ids"]) + 1 <= budget
    # Nothing longer, nothing escaped, nothing non-ASCII, no blank list item.
    assert not accepts(longest.replace("~" * 200, "~" * 201, 1))
    assert not accepts(longest.replace("~~", '\\"', 1))
    assert not accepts(longest.replace("~~", "é", 1))
    assert not accepts(longest.replace('["~~', '["  ', 1))
    # And the model, sampled as the second attempt samples, always stops within the budget.
    runtime = runtimes["openvino-genai"]
    prompts = [
        f"Item {i}: " + " ".join(random.Random(i).choices(["chip", "model", "AI"], k=30)) for i in range(6)
    ]
    for seed in range(3):
        sampling = SamplingParams(**{**RETRY.__dict__, "seed": seed, "temperature": 1.5})
        for result in runtime.generate(prompts, max_new_tokens=budget, schema=schema, sampling=sampling,
                                       stop_on_repetition=False):  # fmt: skip
            assert result.finish_reason == "stop" and result.new_tokens < budget
            jsonschema.validate(json.loads(result.text), generated_json_schema())


def test_grammar_refuses_what_it_cannot_bound() -> None:
    with pytest.raises(UnsupportedSchema, match="maxLength"):
        schema_ebnf({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                     "additionalProperties": False})  # fmt: skip
    with pytest.raises(UnsupportedSchema, match="require every property"):
        schema_ebnf({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1, "maximum": 2}}})
    ebnf = schema_ebnf(generated_json_schema())
    # Long repetitions are split: genai's xgrammar matches a {m,n} above ~256 slowly at run time.
    counts = [int(n) for bounds in re.findall(r"\{(\d+(?:,\d+)?)\}", ebnf) for n in bounds.split(",")]
    assert counts and max(counts) <= MAX_REPEAT


def test_bench_json_prints_the_documented_keys(tiny_model_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "app.cli", "bench", "--data-dir", str(tmp_path),
               "--data", str(LABELLED), "--model", str(tiny_model_dir), "--items", "2",
               "--json", "--threads", "1",
               "--configs", "torch-fp32,openvino-genai-int8",
               "--overhead-config", "openvino-genai-int8", "--overhead-items", "1"]  # fmt: skip
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout)
    names = [entry["name"] for entry in report["configs"]]
    assert names == ["torch-fp32", "openvino-genai-int8", "openvino-genai-int8/unconstrained"]
    for entry in report["configs"]:
        assert list(entry)[: len(ENTRY_KEYS)] == list(ENTRY_KEYS)
        assert entry["items_per_s"] > 0 and entry["tokens_per_s"] > 0 and entry["peak_rss_mb"] > 50
        assert entry["p50_s"] <= entry["p95_s"]
    torch_entry, genai_entry = report["configs"][:2]
    assert torch_entry["ratio_vs_torch_fp32"] == 1.0
    assert genai_entry["schema_valid_rate"] == 1.0 and genai_entry["items"] == 2
    assert report["constraint_overhead"]["tokens"] > 0
    assert report["machine"]["cores"] >= 1
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert ("avx2" in report["machine"]["cpu_flags"]) == (" avx2" in cpuinfo)  # what the kernels can use
    limits = report["machine"]["limits"]
    assert limits["gemm_gflops_fp32"] > 0 and limits["copy_read_gb_s"] > 0
    for entry in (torch_entry, genai_entry):  # where the time went, and the share of the limits
        split = entry["breakdown"]
        assert split["rows"] >= entry["items"] and 0 <= split["retry_share"] <= 1
        assert split["per_item"]["prompt_tokens"] > 0 and split["per_item"]["prefill_s"] > 0
        assert split["per_call"]["decode_passes"] > 0 and 0 < split["decode_share"] < 1
        share = entry["limit_share"]
        assert entry["weight_bytes"] > 0 and share["decode_bandwidth_share"] > 0
        assert share["tokens_per_s_limit_compute"] > 0 and share["prefill_compute_share"] > 0
    assert torch_entry["breakdown"]["grammar_share_of_decode"] > 0
    assert genai_entry["breakdown"]["grammar_share_of_decode"] is None


def test_light_tokenizer_matches_transformers(tiny_model_dir: Path, seed_inputs: list) -> None:
    """The openvino-genai backend tokenizes without transformers: prompts and ids must not drift."""
    from worker.runtime.light_tokenizer import LightTokenizer

    light, reference = LightTokenizer(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    assert (light.eos_token_id, light.pad_token_id) == (reference.eos_token_id, reference.pad_token_id)
    for item in seed_inputs:
        prompt = build_prompt(item, _derive(item), light)
        assert prompt == build_prompt(item, _derive(item), reference)
        ids = light(prompt, add_special_tokens=False)["input_ids"]
        assert ids == reference(prompt, add_special_tokens=False)["input_ids"]
        assert light.decode(ids) == reference.decode(ids, clean_up_tokenization_spaces=False)


def test_genai_backend_serves_without_importing_torch(
    runtimes: dict, runtime_cache: Path, tmp_path: Path
) -> None:
    """~450 MB of RSS: once the IR exists, an openvino-genai worker never imports torch."""
    (cache,) = [p for p in runtime_cache.glob("ov-int8-*") if (p / "openvino_model.xml").exists()]
    script = (
        "import sys; from pathlib import Path; from worker.runtime import load_runtime; "
        "from worker.pipeline import ItemInput, enhance_items; "
        f"r = load_runtime({str(cache)!r}, backend='openvino-genai', cache_dir=Path({str(tmp_path)!r})); "
        "(o,) = enhance_items(r, [ItemInput(source='s', headline='h', content='OpenAI builds chips.')]); "
        "print(o.metadata is not None, 'torch' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.stdout.split()[-2:] == ["True", "False"], completed.stderr[-2000:]


@pytest.mark.parametrize("backend", ["openvino", "openvino-genai"])
def test_unavailable_gpu_falls_back_to_cpu_with_a_log_line(
    backend: str, tiny_model_dir: Path, runtime_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="worker.runtime.loading")
    runtime = load_runtime(
        str(tiny_model_dir),
        backend=backend,
        device="NO_SUCH_DEVICE",
        precision="int8",
        cache_dir=runtime_cache,
    )
    assert runtime.info.device == "CPU"
    assert any("falling back to CPU" in r.getMessage() for r in caplog.records)
