"""Admitting a large file keeps memory proportional to its metadata, not its size."""

import json
import struct
import subprocess
import sys

GiB = 1024**3


def write_sparse_safetensors(path, data_bytes):
    header = json.dumps(
        {"weight": {"dtype": "U8", "shape": [data_bytes], "data_offsets": [0, data_bytes]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        # A sparse file: the data section reads as zeros and costs no disk.
        fh.truncate(8 + len(header) + data_bytes)


def test_two_gib_safetensors_peak_memory(tmp_path):
    path = tmp_path / "big.safetensors"
    write_sparse_safetensors(path, 2 * GiB)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from attestgate.pipeline import admit\n"
        # VmHWM is this process's own peak; ru_maxrss of a child started from
        # Python also counts the parent's peak it was forked from.
        "def peak_kib():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        "a = admit(Path(sys.argv[1]), home=Path(sys.argv[2]))\n"
        "print(json.dumps({'decision': a.action,"
        " 'rules': sorted({f['rule'] for f in a.record['findings']}),"
        " 'peak_kib': peak_kib()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "home")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.stdout)
    peak_bytes = result["peak_kib"] * 1024
    assert result["rules"] == ["provenance.missing"]
    # The interpreter, SQLAlchemy and the scanners take about 60 MiB; the
    # 2 GiB of tensor data must add nothing beyond the read buffer.
    assert peak_bytes < 200 * 1024**2
