"""Choices and defaults that the CLI shows in --help, in a module that imports nothing heavy.

The stages use these too; keeping them here lets `danbert --help`, `--version` and `models`
start without numpy, requests or any stage (each command imports its stage when it runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

# The choices as types, for the Python API's signatures (type checkers see a misspelling);
# the tuples below list the same values for the CLI (a test holds them equal).
ReaderName = Literal["auto", "native", "tensorflow"]
WeightFormat = Literal["safetensors", "bin", "both"]
HeadSetting = Literal["auto", "all", "mlm", "none"]
PartName = Literal["discriminator", "generator"]

READERS: tuple[ReaderName, ...] = ("auto", "native", "tensorflow")
"""Checkpoint readers: auto is the built-in (native) one; tensorflow needs the tf extra."""

FORMATS: tuple[WeightFormat, ...] = ("safetensors", "bin", "both")
"""Weight files convert can write."""

HEAD_SETTINGS: tuple[HeadSetting, ...] = ("auto", "all", "mlm", "none")
"""Which output heads convert writes: the checkpoint's (auto), every head of its class (all: a
pre-training checkpoint needs MLM and next-sentence), the MLM head only (BertForMaskedLM) or
none (BertModel)."""

PARTS: tuple[PartName, ...] = ("discriminator", "generator")
"""The networks of an ELECTRA pre-training checkpoint that convert can write."""

HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "tanh")
"""Activations transformers knows that a BERT checkpoint can sensibly be run with."""

TIMEOUT = (10.0, 60.0)
"""Seconds to connect, and to wait for the next bytes of the body."""

RETRIES = 5
"""Retries per source after a failure that made no progress; progress resets the count."""

DEFAULT_DEST = Path("danbert-work")
"""`danbert all`'s working folder for the zip and the unpacked release."""
