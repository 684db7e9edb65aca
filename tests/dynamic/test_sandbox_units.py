"""The sandbox's parts that need no child process: framing, planning and the isolation check."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from attestgate.dynamic import sandbox_isolation
from attestgate.dynamic.interface import ArtifactFile, ArtifactInput, Budget
from attestgate.dynamic.sandbox import (
    SandboxLimits,
    SandboxPlugin,
    SessionPlan,
    _Session,
    plan_sessions,
)
from attestgate.dynamic.sandbox_stream import FrameReader, StreamError, StreamLimitError
from attestgate.identify.formats import Format


def frame(message: object) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body


def test_frames_split_across_reads():
    reader = FrameReader(4096, 10)
    data = frame({"t": "hello"}) + frame({"t": "ev", "k": "dns.query"})
    assert reader.feed(data[:7]) == []
    assert [m["t"] for m in reader.feed(data[7:])] == ["hello", "ev"]


def test_oversized_frame_rejected():
    with pytest.raises(StreamError, match="announced"):
        FrameReader(4096, 10).feed(struct.pack(">I", 10_000) + b"x")


def test_empty_frame_rejected():
    with pytest.raises(StreamError):
        FrameReader(4096, 10).feed(struct.pack(">I", 0))


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"t": 5}', b"[" * 4000])
def test_bad_body_rejected(body):
    with pytest.raises(StreamError):
        FrameReader(8192, 10).feed(struct.pack(">I", len(body)) + body)


def test_message_count_bound():
    reader = FrameReader(4096, 2)
    with pytest.raises(StreamLimitError):
        reader.feed(frame({"t": "ev"}) * 3)


def artifact(
    tmp_path: Path, *files: tuple[str, Format, bytes], kind: str = "directory"
) -> ArtifactInput:
    entries = []
    for name, fmt, data in files:
        path = tmp_path / name
        path.write_bytes(data)
        entries.append(ArtifactFile(name, path, fmt, len(data), ""))
    root = tmp_path if kind == "directory" else entries[0].location
    return ArtifactInput(root, kind, "", tuple(entries))


def test_plan_torch_two_runs(tmp_path):
    plans = plan_sessions(artifact(tmp_path, ("m.pt", Format.PYTORCH_ZIP, b"PK")), SandboxLimits())
    assert [(p.file, p.loaders) for p in plans] == [("m.pt", ("torch-weights-only", "torch-full"))]


def test_plan_joblib_detected(tmp_path):
    data = b"\x80\x04\x95...cjoblib.numpy_pickle\nNumpyArrayWrapper\n"
    plans = plan_sessions(artifact(tmp_path, ("m.joblib", Format.PICKLE, data)), SandboxLimits())
    assert plans[0].loaders == ("joblib",)


def test_plan_python_and_transformers(tmp_path):
    plans = plan_sessions(
        artifact(
            tmp_path,
            ("config.json", Format.JSON, b"{}"),
            ("modeling.py", Format.PYTHON, b"x = 1\n"),
            ("model.safetensors", Format.SAFETENSORS, b"\0" * 16),
        ),
        SandboxLimits(),
    )
    assert [(p.loaders, [f.path for f in p.staged]) for p in plans] == [
        (("package",), ["modeling.py"]),
        (("transformers",), []),
    ]


def test_safetensors_only_not_applicable(tmp_path):
    files = artifact(tmp_path, ("model.safetensors", Format.SAFETENSORS, b"\0" * 16))
    assert not SandboxPlugin().applies_to(files.formats, "deployment", None)
    assert SandboxPlugin().run(files, Budget(5)).status == "not-applicable"


@pytest.fixture
def session(tmp_path):
    try:
        isolation = sandbox_isolation.build_isolation()
    except sandbox_isolation.IsolationUnavailable as exc:
        pytest.skip(str(exc))
    plan = SessionPlan("m.pkl", tmp_path / "m.pkl", ("pickle",), Format.PICKLE, 1)
    created = _Session(plan, SandboxLimits(), tmp_path, Budget(5))
    created.isolation = isolation
    return created


def good_hello(session) -> dict:
    limits = {
        "RLIMIT_CPU": [300, 301],
        "RLIMIT_AS": [2**32, 2**32],
        "RLIMIT_FSIZE": [2**30, 2**30],
        "RLIMIT_NPROC": [64, 64],
        "RLIMIT_NOFILE": [256, 256],
    }
    sandbox_id = session.isolation.sandbox_id
    return {
        "t": "hello",
        "pid": 1,
        "uid": sandbox_id,
        "gid": sandbox_id,
        "groups": [],
        "netns": "net:[1]",
        "nnp": "1",
        "cap_eff": "0000000000000000",
        "limits": limits,
        "version": sys.version,
        "version_info": list(sys.version_info[:3]),
        "stdlib": os.path.dirname(os.path.dirname(json.__file__)),
    }


def test_hello_accepted(session):
    assert session._check_hello(good_hello(session)) == ""


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"netns": os.readlink("/proc/self/ns/net")}, "network namespace"),
        ({"pid": 7}, "PID namespace"),
        ({"nnp": "0"}, "no-new-privileges"),
        ({"cap_eff": "000001ffffffffff"}, "capabilities"),
        ({"version_info": [2, 7, 18]}, "Python"),
        ({"t": "ev"}, "not hello"),
    ],
)
def test_hello_rejected(session, change, problem):
    assert problem in session._check_hello({**good_hello(session), **change})


@pytest.mark.skipif(os.geteuid() != 0, reason="a separate sandbox user exists only for a root gate")
def test_hello_rejects_root_user(session):
    assert "unprivileged" in session._check_hello({**good_hello(session), "uid": 0})


@pytest.mark.parametrize(
    "name", ["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_NOFILE"]
)
def test_hello_rejects_unlimited(session, name):
    hello = good_hello(session)
    hello["limits"] = {**hello["limits"], name: [-1, -1]}
    assert name in session._check_hello(hello)
