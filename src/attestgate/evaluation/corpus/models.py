"""Clean model and dataset files written with each format's own library.

Every writer takes a ``size`` (the number of float32 values in its largest
tensor), so the quick corpus and the full one share the code. Random values
come from a generator seeded by the file's role, so the bytes repeat from
build to build.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestgate.evaluation.corpus.archives import write_zip

if TYPE_CHECKING:
    import numpy as np

BENIGN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
KERAS_VERSION = "3.6.0"
KERAS_SAVED = "2024-01-01@00:00:00"


def rng(role: str) -> np.random.Generator:
    import numpy as np

    return np.random.default_rng(int.from_bytes(hashlib.sha256(role.encode()).digest()[:8], "big"))


def matrix(role: str, size: int) -> np.ndarray[Any, Any]:
    """Return a float32 matrix of about ``size`` values, 64 columns wide."""
    import numpy as np

    rows = max(1, size // 64)
    return rng(role).standard_normal((rows, 64)).astype(np.float32)


def write_safetensors(path: Path, role: str, size: int) -> Path:
    from safetensors.numpy import save_file

    tensors = {"embed.weight": matrix(role, size), "head.bias": matrix(role + "/bias", 64)[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "np"})
    return path


def write_torch(path: Path, role: str, size: int) -> Path:
    """Write a state dict with ``torch.save`` (a PyTorch zip whose data.pkl is protocol 2)."""
    import torch

    weights = torch.from_numpy(matrix(role, size))
    state = {"embed.weight": weights, "head.bias": torch.zeros(64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def plain_pickle(role: str, size: int) -> bytes:
    """Return a protocol 4 pickle of built-in types only (lists of floats and a dict)."""
    values = matrix(role, size)
    document = {"weights": values.ravel().tolist(), "shape": list(values.shape)}
    return pickle.dumps(document, protocol=4)


def write_gguf(path: Path, role: str, size: int, template: str = BENIGN_TEMPLATE) -> Path:
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_context_length(128)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"token{i}" for i in range(64)])
    writer.add_token_scores([0.0] * 64)
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", matrix(role, size))
    writer.add_tensor("output_norm.weight", np.ones((64,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def onnx_bytes(role: str, size: int, external: tuple[str, int] | None = None) -> bytes:
    """Return an ONNX model ``y = x @ W``; with ``external``, W lives at (location, length)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = matrix(role, size)
    tensor = numpy_helper.from_array(weights, "W")
    if external is not None:
        location, length = external
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[tensor],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="attestgate-corpus",
        producer_version="1",
    )
    model.ir_version = 8
    if external is None:
        onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def write_onnx(path: Path, role: str, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_bytes(role, size))
    return path


def write_onnx_external(folder: Path, role: str, size: int, location: str) -> Path:
    """Write ``model.onnx`` with external weights at ``location``, and ``folder/weights.bin``.

    ``location`` is written as given, so a hostile caller can point it
    outside the folder; the real weights always go to ``weights.bin``.
    """
    weights = matrix(role, size).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes(role, size, (location, len(weights))))
    (folder / "weights.bin").write_bytes(weights)
    return folder / "model.onnx"


def keras_layer(
    class_name: str, config: dict[str, Any], module: str = "keras.layers"
) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def keras_function(module: str, name: str) -> dict[str, Any]:
    """Return how Keras 3 serializes a function reference, such as an activation."""
    return {"module": module, "class_name": "function", "config": name, "registered_name": name}


def keras_dense(name: str, units: int, activation: dict[str, Any] | str = "relu") -> dict[str, Any]:
    return keras_layer(
        "Dense",
        {
            "name": name,
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": keras_layer(
                "GlorotUniform", {"seed": None}, "keras.initializers"
            ),
        },
    )


def keras_sequential(layers: list[dict[str, Any]]) -> dict[str, Any]:
    inputs = keras_layer("InputLayer", {"batch_shape": [None, 64], "name": "input"})
    model = keras_layer("Sequential", {"name": "sequential", "layers": [inputs, *layers]}, "keras")
    model["compile_config"] = {
        "optimizer": keras_layer("Adam", {"learning_rate": 0.001}, "keras.optimizers"),
        "loss": "mean_squared_error",
    }
    return model


def _h5_weights(role: str, size: int) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.create_dataset("0", data=matrix(role, size))
        group.create_dataset("1", data=matrix(role + "/bias", 64)[0])
    return buffer.getvalue()


def write_keras(path: Path, role: str, size: int, config: dict[str, Any]) -> Path:
    """Write a Keras 3 ``.keras`` zip: metadata.json, config.json and model.weights.h5."""
    metadata = {"keras_version": KERAS_VERSION, "date_saved": KERAS_SAVED}
    return write_zip(
        path,
        {
            "metadata.json": json.dumps(metadata).encode(),
            "config.json": json.dumps(config).encode(),
            "model.weights.h5": _h5_weights(role, size),
        },
    )


def write_h5(path: Path, role: str, size: int) -> Path:
    """Write a legacy Keras 2 HDF5 model: ``model_config`` attribute and weights."""
    import h5py

    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [{"class_name": "Dense", "config": {"name": "dense", "units": 64}}],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        h5.attrs["keras_version"] = "2.15.0"
        h5.attrs["backend"] = "tensorflow"
        group = h5.create_group("model_weights/dense/dense")
        group.create_dataset("kernel:0", data=matrix(role, size))
    return path


def write_npy(path: Path, role: str, size: int) -> Path:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix(role, size), allow_pickle=False)
    return path


def write_npz(path: Path, role: str, size: int) -> Path:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, embeddings=matrix(role, size), bias=matrix(role + "/bias", 64)[0])
    return path


def write_joblib(path: Path, role: str, size: int) -> Path:
    """Write a joblib file of numpy arrays, as scikit-learn style pipelines store them."""
    import joblib

    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"coef": matrix(role, size), "intercept": matrix(role + "/bias", 64)[0]}, path)
    return path


def write_jsonl(path: Path, role: str, rows: int) -> Path:
    generator = rng(role)
    lines = [
        json.dumps({"id": index, "text": f"sample {index}", "label": int(generator.integers(4))})
        for index in range(rows)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _table(role: str, rows: int) -> Any:
    import arro3.core
    import numpy as np

    generator = rng(role)
    return arro3.core.Table.from_pydict(
        {
            "id": np.arange(rows, dtype=np.int64),
            "score": generator.random(rows).astype(np.float32),
            "label": generator.integers(0, 4, rows).astype(np.int64),
        }
    )


def write_parquet(path: Path, role: str, rows: int) -> Path:
    import arro3.io

    path.parent.mkdir(parents=True, exist_ok=True)
    arro3.io.write_parquet(_table(role, rows), str(path))
    return path


def write_arrow(path: Path, role: str, rows: int) -> Path:
    import arro3.io

    path.parent.mkdir(parents=True, exist_ok=True)
    arro3.io.write_ipc(_table(role, rows), str(path))
    return path
