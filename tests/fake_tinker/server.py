"""A local Tinker service that speaks the `tinker` SDK's HTTP protocol, for tests and demos.

The SDK talks to it over real HTTP exactly as it talks to the hosted service; nothing in the SDK is
mocked. The server does the real work on a small model: `create_model` puts a PEFT LoRA on a local
causal LM, `forward_backward` computes Tinker's `cross_entropy` loss (sum of -logprob * weight over
target tokens) and accumulates gradients, `optim_step` applies AdamW with the step's AdamParams, and
`save_weights_external` writes the adapter with Tinker's tensor names (`base_model.model.` prefix,
`model.unembed_tokens` for the output layer) behind signed download URLs.

Protocol, as the SDK 0.38 uses it for LoRA SFT (JSON unless noted; every /api/v1 call but healthz
carries the API key in `X-API-Key`):
- POST /api/v1/client/config, /api/v1/client/dynamic_config: feature flags. We turn off the pyqwest
  transport and JWT exchange so the SDK uses plain httpx with the API key.
- POST /api/v1/create_session, /api/v1/session_heartbeat, /api/v1/sessions/{id}/finish, /api/v1/telemetry.
- POST /api/v1/create_model, /api/v1/forward_backward (protobuf body), /api/v1/optim_step,
  /api/v1/save_weights, /api/v1/save_weights_external: each answers at once with a future
  `{"request_id": ...}`; the work runs on one worker thread (the "GPU") in per-model `seq_id` order.
- POST /api/v1/retrieve_future: long-polls a future; answers `{"type": "try_again"}` while it is still
  queued, the result as JSON, a ForwardBackwardOutput as protobuf, or `{"error", "category"}`.
- POST /api/v1/get_info;
  GET /api/v1/training_runs/{id}/checkpoints/external_weights/{name}/external_weights_urls.
- GET /storage/{token}/{file}: the signed URLs (no API key, like a cloud storage URL).

Run `python -m tests.fake_tinker.server` for a standalone server with a tiny random Llama.
"""

from __future__ import annotations

import argparse
import copy
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

# Tinker serves LoRA with a fixed alpha whatever the rank; the exported adapter_config.json says so.
TINKER_LORA_ALPHA = 32
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
UNEMBED_MODULE = "lm_head"
DEFAULT_API_KEY = "tml-fake-tinker-key"


class RequestFailed(Exception):
    """A request the server accepted but could not carry out; reported through its future."""

    def __init__(self, message: str, category: str = "user") -> None:
        super().__init__(message)
        self.category = category


@dataclass
class _Future:
    request_id: str
    done: threading.Event = field(default_factory=threading.Event)
    kind: str = ""  # "json" | "proto" | "error"
    payload: Any = None
    polls: int = 0


@dataclass
class _TrainingRun:
    model_id: str
    base_model: str
    rank: int
    session_id: str
    model: Any  # peft.PeftModel
    optimizer: Any = None  # torch.optim.AdamW, made on the first optim_step
    next_seq_id: int = 1
    pending: dict[int, Callable[[], None]] = field(default_factory=dict)
    saved_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    optim_steps: int = 0
    # The AdamParams of every optim_step as the SDK sent them (learning_rate, weight_decay, ...).
    adam_params: list[dict[str, Any]] = field(default_factory=list)
    lora_config: dict[str, Any] = field(default_factory=dict)  # create_model's, as the SDK sent it


def tinker_tensor_name(peft_parameter_name: str) -> str:
    """PEFT parameter name -> the tensor name in a Tinker adapter export.

    `base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`
        -> `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`
    `base_model.model.lm_head.lora_B.default.weight` -> `base_model.model.model.unembed_tokens.lora_B.weight`
    """
    name = peft_parameter_name.replace(".default.", ".")
    return name.replace("base_model.model.lm_head.", "base_model.model.model.unembed_tokens.")


class FakeTinkerService:
    """State and computation behind the HTTP routes (no HTTP in here)."""

    def __init__(
        self,
        *,
        base_models: dict[str, Path],
        storage_dir: Path,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        long_poll_s: float = 25.0,
    ) -> None:
        self.base_models = {name: Path(path) for name, path in base_models.items()}
        self.storage_dir = Path(storage_dir)
        self.api_keys = set(api_keys)
        self.long_poll_s = long_poll_s
        self.public_url = ""  # set by the HTTP server once it knows its port
        self.sessions: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, _TrainingRun] = {}
        self.futures: dict[str, _Future] = {}
        self.signed_files: dict[str, Path] = {}
        self.request_log: list[tuple[str, str, str]] = []  # (method, path, content-type)
        self._lock = threading.Lock()
        # One worker thread: requests of a run execute one at a time, in seq_id order.
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-tinker-gpu")

    def close(self) -> None:
        self._gpu.shutdown(wait=True, cancel_futures=True)

    # --- futures -------------------------------------------------------------------------------

    def _new_future(self) -> _Future:
        future = _Future(request_id=f"req-{uuid.uuid4().hex[:16]}")
        with self._lock:
            self.futures[future.request_id] = future
        return future

    @staticmethod
    def _resolve(future: _Future, work: Callable[[], tuple[str, Any]]) -> None:
        import torch

        # Small models run several times faster on one thread than on two busy cores; the caller
        # is waiting on this future meanwhile, so the process-wide setting is restored right after.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            future.kind, future.payload = work()
        except RequestFailed as exc:
            future.kind, future.payload = "error", {"error": str(exc), "category": exc.category}
        except Exception as exc:  # a bug here must reach the client, not kill the worker
            future.kind, future.payload = "error", {"error": repr(exc), "category": "server"}
        finally:
            torch.set_num_threads(threads)
        future.done.set()

    def submit_unordered(self, work: Callable[[], tuple[str, Any]]) -> str:
        future = self._new_future()
        self._gpu.submit(self._resolve, future, work)
        return future.request_id

    def submit_ordered(self, run: _TrainingRun, seq_id: int, work: Callable[[], tuple[str, Any]]) -> str:
        """Queue work for `run` that must run after every request with a smaller seq_id."""
        future = self._new_future()
        with self._lock:
            if seq_id < run.next_seq_id or seq_id in run.pending:
                raise RequestFailed(f"seq_id {seq_id} was already used for model {run.model_id}")
            run.pending[seq_id] = lambda: self._resolve(future, work)
        self._gpu.submit(self._drain, run)
        return future.request_id

    def _drain(self, run: _TrainingRun) -> None:
        while True:
            with self._lock:
                job = run.pending.pop(run.next_seq_id, None)
                if job is None:
                    return
                run.next_seq_id += 1
            job()

    def retrieve(self, request_id: str) -> _Future | None:
        """The future once done, waiting up to long_poll_s; None if unknown. Not done: still queued."""
        with self._lock:
            future = self.futures.get(request_id)
        if future is None:
            return None
        future.polls += 1
        future.done.wait(self.long_poll_s)
        return future

    # --- sessions and models ------------------------------------------------------------------

    def create_session(self, body: dict[str, Any]) -> str:
        session_id = f"session-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.sessions[session_id] = {"request": body, "finished": None, "heartbeats": 0}
        return session_id

    def run_for(self, model_id: str) -> _TrainingRun:
        run = self.runs.get(model_id)
        if run is None:
            raise RequestFailed(f"unknown model_id {model_id!r}")
        return run

    def create_model(self, body: dict[str, Any]) -> tuple[str, Any]:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        base_model = body["base_model"]
        if body.get("session_id") not in self.sessions:
            raise RequestFailed(f"unknown session {body.get('session_id')!r}")
        if base_model not in self.base_models:
            known = ", ".join(sorted(self.base_models)) or "none"
            raise RequestFailed(f"base model {base_model!r} is not supported; supported: {known}")
        lora = body.get("lora_config") or {}
        rank = int(lora.get("rank", 32))
        if not 1 <= rank <= 256:
            raise RequestFailed(f"LoRA rank must be within 1..256, got {rank}")
        targets = [
            *(ATTN_MODULES if lora.get("train_attn", True) else ()),
            *(MLP_MODULES if lora.get("train_mlp", True) else ()),
            *((UNEMBED_MODULE,) if lora.get("train_unembed", True) else ()),
        ]
        model = AutoModelForCausalLM.from_pretrained(self.base_models[base_model], dtype=torch.float32)
        torch.manual_seed(int(lora.get("seed") or 0))
        config = LoraConfig(r=rank, lora_alpha=TINKER_LORA_ALPHA, lora_dropout=0.0, target_modules=targets)
        peft_model = get_peft_model(model, config)
        model_id = f"run-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.runs[model_id] = _TrainingRun(
                model_id=model_id,
                base_model=base_model,
                rank=rank,
                session_id=body["session_id"],
                model=peft_model,
                lora_config=dict(lora),
            )
        return "json", {"model_id": model_id, "type": "create_model"}

    def get_info(self, model_id: str) -> dict[str, Any]:
        run = self.run_for(model_id)
        return {
            "type": "get_info",
            "model_data": {"arch": "llama", "model_name": run.base_model, "tokenizer_id": None},
            "model_id": run.model_id,
            "is_lora": True,
            "lora_rank": run.rank,
            "model_name": run.base_model,
        }

    # --- training ------------------------------------------------------------------------------

    def forward_backward(self, run: _TrainingRun, request: Any) -> tuple[str, Any]:
        """Tinker's cross_entropy: loss = sum over datums and targets of -logprob * weight."""
        import torch
        from tinker.proto import tinker_public_pb2 as pb

        if request.loss_fn != "cross_entropy":
            raise RequestFailed(f"loss_fn {request.loss_fn!r} is not supported here (only cross_entropy)")
        if not request.data:
            raise RequestFailed("forward_backward needs at least one datum")
        vocab_size = run.model.get_input_embeddings().num_embeddings
        logprob_arrays: list[np.ndarray] = []
        loss_arrays: list[np.ndarray] = []
        total = 0.0
        run.model.train()
        for index, datum in enumerate(request.data):
            tokens = _datum_tokens(datum, index)
            targets = _tensor(datum.loss_fn_inputs, "target_tokens", index).astype(np.int64)
            weights = (
                _tensor(datum.loss_fn_inputs, "weights", index).astype(np.float32)
                if "weights" in datum.loss_fn_inputs
                else np.ones(len(targets), dtype=np.float32)
            )
            if not (len(tokens) == len(targets) == len(weights)):
                raise RequestFailed(
                    f"datum {index}: model_input has {len(tokens)} tokens, target_tokens "
                    f"{len(targets)}, weights {len(weights)}; they must match"
                )
            if tokens.max(initial=0) >= vocab_size or targets.max(initial=0) >= vocab_size:
                raise RequestFailed(f"datum {index}: token id outside the vocabulary of {vocab_size}")
            with torch.set_grad_enabled(not request.forward_only):
                logits = run.model(input_ids=torch.from_numpy(tokens.astype(np.int64))[None]).logits[0]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                target_logprobs = logprobs.gather(1, torch.from_numpy(targets)[:, None])[:, 0]
                elementwise = -target_logprobs * torch.from_numpy(weights)
                loss = elementwise.sum()
                if not request.forward_only:
                    loss.backward()  # gradients accumulate until optim_step, as on Tinker
            total += float(loss.detach())
            logprob_arrays.append(target_logprobs.detach().numpy().astype(np.float32))
            loss_arrays.append(elementwise.detach().numpy().astype(np.float32))
        if not request.forward_only:
            run.losses.append(total)

        output = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
        record = output.loss_fn_outputs.add()
        record.type_tag = "ArrayRecord"
        record.num_datums = len(request.data)
        for name, arrays in (("logprobs", logprob_arrays), ("elementwise_loss", loss_arrays)):
            _write_batched(record.fields[name], arrays)
        output.metrics["loss:sum"] = total
        return "proto", output.SerializeToString()

    def optim_step(self, run: _TrainingRun, params: dict[str, Any]) -> tuple[str, Any]:
        import torch

        run.adam_params.append(dict(params))
        trainable = [p for p in run.model.parameters() if p.requires_grad]
        learning_rate = float(params.get("learning_rate", 1e-4))
        if learning_rate < 0:
            raise RequestFailed("learning_rate must not be negative")
        if run.optimizer is None:
            run.optimizer = torch.optim.AdamW(trainable, lr=learning_rate)
        group = run.optimizer.param_groups[0]
        group["lr"] = learning_rate
        group["betas"] = (float(params.get("beta1", 0.9)), float(params.get("beta2", 0.95)))
        group["eps"] = float(params.get("eps", 1e-12))
        group["weight_decay"] = float(params.get("weight_decay", 0.0))
        grads = [p.grad for p in trainable if p.grad is not None]
        grad_norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0
        clip = float(params.get("grad_clip_norm", 0.0))
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.optim_steps += 1
        return "json", {"metrics": {"grad_norm": grad_norm, "learning_rate": learning_rate}}

    def lora_tensors(self, run: _TrainingRun) -> dict[str, Any]:
        """The run's LoRA weights under Tinker's tensor names."""
        return {
            tinker_tensor_name(name): param.detach().clone().contiguous()
            for name, param in run.model.named_parameters()
            if "lora_" in name
        }

    def save_state(self, run: _TrainingRun, name: str) -> tuple[str, Any]:
        run.saved_states[name] = {
            "weights": self.lora_tensors(run),
            "optimizer": copy.deepcopy(run.optimizer.state_dict()) if run.optimizer else None,
        }
        return "json", {"path": f"tinker://{run.model_id}/weights/{name}", "type": "save_weights"}

    def save_external(self, run: _TrainingRun, name: str) -> tuple[str, Any]:
        from safetensors.torch import save_file

        if not name or "/" in name or name.startswith("."):
            raise RequestFailed(f"invalid checkpoint name {name!r}")
        target = self.storage_dir / run.model_id / "external_weights" / name
        target.mkdir(parents=True, exist_ok=True)
        save_file(self.lora_tensors(run), str(target / "adapter_model.safetensors"))
        config = {"r": run.rank, "lora_alpha": TINKER_LORA_ALPHA, "base_model": run.base_model}
        (target / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        size = sum(f.stat().st_size for f in target.iterdir())
        path = f"tinker://{run.model_id}/external_weights/{name}"
        return "json", {"path": path, "size_bytes": size, "type": "save_weights_external"}

    def external_urls(self, model_id: str, name: str) -> dict[str, Any] | None:
        folder = self.storage_dir / model_id / "external_weights" / name
        if model_id not in self.runs or not folder.is_dir():
            return None
        urls = {}
        for file in sorted(folder.iterdir()):
            token = secrets.token_urlsafe(16)
            self.signed_files[token] = file
            urls[file.name] = f"{self.public_url}/storage/{token}/{file.name}"
        expires = datetime.now(UTC) + timedelta(hours=1)
        return {"urls": urls, "expires": expires.isoformat()}


def _datum_tokens(datum: Any, index: int) -> np.ndarray:
    parts = []
    for chunk in datum.model_input:
        if chunk.WhichOneof("chunk") != "encoded_text":
            raise RequestFailed(f"datum {index}: only text chunks are supported")
        parts.append(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32))
    if not parts:
        raise RequestFailed(f"datum {index}: empty model_input")
    return np.concatenate(parts)


def _tensor(inputs: Any, name: str, index: int) -> np.ndarray:
    from tinker.proto import tinker_public_pb2 as pb

    if name not in inputs:
        raise RequestFailed(f"datum {index}: loss_fn_inputs lacks {name!r}")
    message = inputs[name]
    dtype = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64, pb.DTYPE_INT32: np.int32}.get(
        message.dtype
    )
    if dtype is None:
        raise RequestFailed(f"datum {index}: unsupported dtype for {name!r}")
    if message.HasField("sparse_csr"):
        raise RequestFailed(f"datum {index}: sparse {name!r} is not supported here")
    return np.frombuffer(message.dense, dtype=dtype)


def _write_batched(target: Any, arrays: list[np.ndarray]) -> None:
    """Per-datum 1-D float32 arrays as one BatchedTensor: bytes end to end, byte offsets between."""
    from tinker.proto import tinker_public_pb2 as pb

    target.dtype = pb.DTYPE_FLOAT32
    target.data = b"".join(a.tobytes() for a in arrays)
    offsets = np.cumsum([0, *[a.nbytes for a in arrays]]).astype(np.int64)
    target.offsets = offsets.tobytes()


def create_app(service: FakeTinkerService) -> Any:
    """The FastAPI app: the routes the SDK calls, mapped onto `service`."""
    app = FastAPI(title="fake tinker")
    open_paths = ("/api/v1/healthz", "/storage/")

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[[Request], Any]) -> Any:
        service.request_log.append(
            (request.method, request.url.path, request.headers.get("content-type", ""))
        )
        if not request.url.path.startswith(open_paths) and (
            request.headers.get("x-api-key") not in service.api_keys
        ):
            return JSONResponse({"detail": "Invalid API key"}, status_code=401)
        return await call_next(request)

    def future_response(request_id: str, model_id: str | None = None) -> dict[str, Any]:
        return {"request_id": request_id, "model_id": model_id}

    def user_error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.get("/api/v1/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/client/config")
    async def client_config() -> dict[str, Any]:
        return {"use_pyqwest_transport": False, "pjwt_auth_enabled": False, "proto_compress_fwdbwd": False}

    @app.post("/api/v1/client/dynamic_config")
    async def client_dynamic_config() -> dict[str, Any]:
        return {"refresh_interval_sec": 300}

    @app.post("/api/v1/create_session")
    async def create_session(request: Request) -> dict[str, Any]:
        session_id = service.create_session(await request.json())
        return {"type": "create_session", "session_id": session_id}

    @app.post("/api/v1/session_heartbeat")
    async def session_heartbeat(request: Request) -> Any:
        session = service.sessions.get((await request.json()).get("session_id"))
        if session is None:
            return user_error("unknown session", 404)
        if session["finished"] is not None:
            return user_error("session finished", 410)
        session["heartbeats"] += 1
        return {"type": "session_heartbeat"}

    @app.post("/api/v1/sessions/{session_id}/finish")
    async def finish_session(session_id: str, request: Request) -> Any:
        session = service.sessions.get(session_id)
        if session is None:
            return user_error("unknown session", 404)
        if session["finished"] is None:  # first reason wins
            session["finished"] = await request.json()
        return {}

    @app.post("/api/v1/telemetry")
    async def telemetry() -> dict[str, str]:
        return {"status": "accepted"}

    @app.post("/api/v1/create_model")
    async def create_model(request: Request) -> dict[str, Any]:
        body = await request.json()
        return future_response(service.submit_unordered(lambda: service.create_model(body)))

    @app.post("/api/v1/get_info")
    async def get_info(request: Request) -> Any:
        try:
            return service.get_info((await request.json())["model_id"])
        except RequestFailed as exc:
            return user_error(str(exc), 404)

    @app.post("/api/v1/forward_backward")
    async def forward_backward(request: Request) -> Any:
        from tinker.proto import tinker_public_pb2 as pb

        if "application/x-protobuf" not in request.headers.get("content-type", ""):
            return user_error("forward_backward takes an application/x-protobuf body", 415)
        body = await request.body()
        if request.headers.get("content-encoding") == "zstd":
            import zstandard

            body = zstandard.ZstdDecompressor().decompress(body)
        message = pb.ForwardBackwardRequest()
        message.ParseFromString(body)
        try:
            run = service.run_for(message.model_id)
            request_id = service.submit_ordered(
                run, message.seq_id, lambda: service.forward_backward(run, message)
            )
        except RequestFailed as exc:
            return user_error(str(exc))
        return future_response(request_id, message.model_id)

    OrderedWork = Callable[[_TrainingRun, dict[str, Any]], tuple[str, Any]]

    async def ordered(request: Request, work: OrderedWork) -> Any:
        body = await request.json()
        try:
            run = service.run_for(body["model_id"])
            request_id = service.submit_ordered(run, int(body["seq_id"]), lambda: work(run, body))
        except RequestFailed as exc:
            return user_error(str(exc))
        return future_response(request_id, run.model_id)

    @app.post("/api/v1/optim_step")
    async def optim_step(request: Request) -> Any:
        return await ordered(
            request, lambda run, body: service.optim_step(run, body.get("adam_params") or {})
        )

    @app.post("/api/v1/save_weights")
    async def save_weights(request: Request) -> Any:
        return await ordered(
            request, lambda run, body: service.save_state(run, body.get("path") or f"step-{run.optim_steps}")
        )

    @app.post("/api/v1/save_weights_external")
    async def save_weights_external(request: Request) -> Any:
        return await ordered(request, lambda run, body: service.save_external(run, body["path"]))

    @app.post("/api/v1/retrieve_future")
    async def retrieve_future(request: Request) -> Any:
        import asyncio

        request_id = (await request.json())["request_id"]
        future = await asyncio.to_thread(service.retrieve, request_id)
        if future is None:
            return user_error(f"unknown request_id {request_id!r}", 404)
        if not future.done.is_set():
            return {"type": "try_again", "request_id": request_id, "queue_state": "active"}
        if future.kind == "proto":
            return Response(content=future.payload, media_type="application/x-protobuf")
        return future.payload

    @app.get("/api/v1/training_runs/{model_id}/checkpoints/external_weights/{name}/external_weights_urls")
    async def external_weights_urls(model_id: str, name: str) -> Any:
        urls = service.external_urls(model_id, name)
        if urls is None:
            return user_error(f"no external weights {name!r} for {model_id!r}", 404)
        return urls

    @app.get("/storage/{token}/{filename}")
    async def storage(token: str, filename: str) -> Any:
        file = service.signed_files.get(token)
        if file is None or file.name != filename:
            return user_error("no such object", 404)
        return Response(content=file.read_bytes(), media_type="application/octet-stream")

    return app


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class FakeTinkerServer:
    """Runs the fake service with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        *,
        base_models: dict[str, Path],
        storage_dir: Path,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        long_poll_s: float = 25.0,
    ) -> None:
        self.service = FakeTinkerService(
            base_models=base_models, storage_dir=storage_dir, api_keys=api_keys, long_poll_s=long_poll_s
        )
        self.api_key = next(iter(self.service.api_keys))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self, timeout_s: float = 20.0) -> FakeTinkerServer:
        import uvicorn

        sock = _free_socket()
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.service.public_url = self.base_url
        config = uvicorn.Config(
            create_app(self.service), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-tinker-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake Tinker server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.service.close()

    def __enter__(self) -> FakeTinkerServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Standalone fake Tinker, e.g. to try `enhancer train --backend tinker` by hand."""
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="base model dirs")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fake-tinker-"))
    models = dict(item.split("=", 1) for item in args.model)
    if not models:
        from tests.tiny_model import build_tiny_llama

        models = {"tiny-llama": str(build_tiny_llama(workdir / "tiny-llama"))}
    server = FakeTinkerServer(
        base_models={name: Path(path) for name, path in models.items()},
        storage_dir=workdir / "storage",
        api_keys=[args.api_key],
    ).start()
    print(f"TINKER_BASE_URL={server.base_url} TINKER_API_KEY={args.api_key} models: {', '.join(models)}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
