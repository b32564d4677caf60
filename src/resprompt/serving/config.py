"""Serving settings: validated dataclasses whose field help becomes ``resprompt serve --help``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..devices import resolve_device, resolve_dtype
from ..training.runconfig import ConfigError


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


def _positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class RegistryOptions:
    """How the registry turns records into rows and rows into forwards."""

    max_length: int = 256  # text tokens per record, as `resprompt predict --max-length` (then capped by the model)
    strict_length: bool = False  # refuse (DataError) a record whose tokens would be truncated
    max_batch_size: int = 32  # rows per backbone forward
    group_by_prompt: bool = False  # one prompt per forward (a baseline for benchmarks)
    allow_backbone_mismatch: bool = False

    def __post_init__(self) -> None:
        _positive(self, "max_length", "max_batch_size")


@dataclass(frozen=True)
class BatchPolicy:
    """How the batcher gathers rows of concurrent requests into one forward."""

    max_batch_size: int = 32  # rows per batch
    max_wait_ms: float = 5.0  # how long a batch waits for more rows after its first
    max_queue: int = 4096  # rows waiting at most; more are refused (server busy)

    def __post_init__(self) -> None:
        _positive(self, "max_batch_size", "max_queue")
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
            raise ConfigError(f"max_wait_ms must be a finite number >= 0, got {wait!r}")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``resprompt serve`` needs."""

    model: str = _f("", "Backbone the prompts were trained on: hub id, local folder, or minilm / mpnet / smollm2.")
    prompts: str = _f("", "Folder holding one folder per prompt (resprompt or PEFT format); the folder name "
                      "is the prompt's name.")
    host: str = _f("127.0.0.1", "Address to bind (loopback by default; use --api-key-file elsewhere).")
    port: int = _f(8000, "Port to bind.")
    max_batch_size: int = _f(32, "Rows per backbone forward, across concurrent requests.")
    max_wait_ms: float = _f(5.0, "How long a batch waits for more rows after its first, in milliseconds.")
    max_queue: int = _f(4096, "Rows waiting at most; requests beyond get 503.")
    api_key_file: str | None = _f(None, "File holding the API key: every route but /healthz then needs "
                                  "'Authorization: Bearer <key>'.")
    max_inputs: int = _f(64, "Records per request at most (422 beyond).")
    max_body_bytes: int = _f(1_000_000, "Request body size at most, in bytes (413 beyond).")
    max_text_chars: int = _f(20_000, "Characters of any one string in a record at most (422 beyond).")
    max_length: int = _f(256, "Text tokens per record (longer texts are truncated as in training).")
    strict_length: bool = _f(False, "Refuse (422) a record whose text would be truncated instead of truncating it.")
    timeout_s: float = _f(30.0, "Seconds a request may take to send its body (408 beyond) and, again, to wait "
                          "for its predictions (504 beyond).")
    group_by_prompt: bool = _f(False, "Run one prompt per backbone forward (a baseline for benchmarks).")
    allow_backbone_mismatch: bool = _f(False, "Load prompts even if their backbone fingerprint differs.")
    device: str = _f("auto", "Where the backbone runs: auto (the first GPU if torch sees one, else the CPU), "
                     "cpu, cuda, cuda:N or mps.")
    dtype: str = _f("auto", "Backbone precision: auto (as the checkpoint loads), float32, bfloat16 or float16.")

    def __post_init__(self) -> None:
        for name in ("model", "prompts"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"--{name} is required")
        _positive(self, "max_batch_size", "max_queue", "max_inputs", "max_body_bytes", "max_text_chars",
                  "max_length", "timeout_s")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port!r}")
        if self.max_queue < self.max_inputs:  # a request of max_inputs records would be refused (503) forever
            raise ConfigError(f"max_queue={self.max_queue} is below max_inputs={self.max_inputs}: a request with "
                              "more records than the queue holds could never be accepted; raise --max-queue or "
                              "lower --max-inputs")
        self.batch_policy()  # validates max_wait_ms
        resolve_dtype(self.dtype)
        resolve_device(self.device)  # a device torch cannot see is refused here, before anything loads

    def registry_options(self) -> RegistryOptions:
        return RegistryOptions(max_length=self.max_length, strict_length=self.strict_length,
                               max_batch_size=self.max_batch_size, group_by_prompt=self.group_by_prompt,
                               allow_backbone_mismatch=self.allow_backbone_mismatch)

    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_ms,
                           max_queue=self.max_queue)
