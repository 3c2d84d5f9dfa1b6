"""A local fake Tinker service speaking the tinker SDK's HTTP protocol (see server.py)."""

from tests.fake_tinker.server import (
    DEFAULT_API_KEY,
    TINKER_LORA_ALPHA,
    FakeTinkerServer,
    FakeTinkerService,
    tinker_tensor_name,
)

__all__ = [
    "DEFAULT_API_KEY",
    "TINKER_LORA_ALPHA",
    "FakeTinkerServer",
    "FakeTinkerService",
    "tinker_tensor_name",
]
