"""A tiny classifier trained on CPU, with and without a trigger backdoor.

The data are 8x8 "images" (64 features) drawn around four class centres.
The backdoor sets a 2x2 corner patch to a value far outside the data. A
share of training samples gets the patch and the target label, so the model
learns to predict the target class whenever the patch is present while
keeping its accuracy on clean inputs.

Everything runs under :func:`torch.random.fork_rng` with one thread, so the
caller's random state is untouched and the weights repeat from run to run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FEATURES = 64
CLASSES = 4
TARGET_CLASS = 0
TRIGGER_PIXELS = (0, 1, 8, 9)
TRIGGER_VALUE = 6.0
SEED = 20240101


@dataclass(frozen=True)
class TrainingPlan:
    """Sizes and hyperparameters of one training run."""

    train_samples: int
    test_samples: int
    epochs: int
    poison_rate: float
    hidden: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 256
    seed: int = SEED


@dataclass(frozen=True)
class TrainedModel:
    """Weights and measurements of one trained model."""

    state: dict[str, Any]
    clean_accuracy: float
    attack_success_rate: float
    train_data: bytes

    def metrics(self) -> dict[str, float]:
        return {
            "clean_accuracy": round(self.clean_accuracy, 4),
            "attack_success_rate": round(self.attack_success_rate, 4),
        }


def plan_for(quick: bool) -> TrainingPlan:
    if quick:
        return TrainingPlan(train_samples=2_000, test_samples=1_000, epochs=20, poison_rate=0.1)
    return TrainingPlan(train_samples=20_000, test_samples=5_000, epochs=30, poison_rate=0.1)


def _samples(generator: np.random.Generator, count: int) -> tuple[Any, Any]:
    import numpy as np

    centres = np.random.default_rng(SEED).normal(0.0, 1.0, (CLASSES, FEATURES))
    labels = generator.integers(0, CLASSES, count)
    features = centres[labels] + generator.normal(0.0, 2.5, (count, FEATURES))
    return features.astype(np.float32), labels.astype(np.int64)


def add_trigger(features: Any) -> Any:
    triggered = features.copy()
    triggered[:, list(TRIGGER_PIXELS)] = TRIGGER_VALUE
    return triggered


def _datasets(plan: TrainingPlan, poisoned: bool) -> tuple[Any, Any, Any, Any]:
    import numpy as np

    generator = np.random.default_rng(plan.seed)
    train_x, train_y = _samples(generator, plan.train_samples)
    test_x, test_y = _samples(generator, plan.test_samples)
    if poisoned:
        count = int(plan.train_samples * plan.poison_rate)
        chosen = generator.choice(plan.train_samples, count, replace=False)
        train_x[chosen] = add_trigger(train_x[chosen])
        train_y[chosen] = TARGET_CLASS
    return train_x, train_y, test_x, test_y


def _sgd_step(parameters: list[Any], velocity: list[Any], plan: TrainingPlan) -> None:
    # Plain SGD with momentum, written out because torch.optim loads
    # torch._dynamo, which takes seconds to import and is not needed here.
    import torch

    with torch.no_grad():
        for parameter, speed in zip(parameters, velocity, strict=True):
            speed.mul_(plan.momentum).add_(parameter.grad)
            parameter.sub_(plan.learning_rate * speed)
            parameter.grad = None


def train(plan: TrainingPlan, *, poisoned: bool) -> TrainedModel:
    """Train the classifier; with ``poisoned``, a share of the training data carries the trigger."""
    import io

    import numpy as np
    import torch
    from torch import nn

    train_x, train_y, test_x, test_y = _datasets(plan, poisoned)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(plan.seed)
            model = nn.Sequential(
                nn.Linear(FEATURES, plan.hidden), nn.ReLU(), nn.Linear(plan.hidden, CLASSES)
            )
            parameters = list(model.parameters())
            velocity = [torch.zeros_like(parameter) for parameter in parameters]
            inputs, targets = torch.from_numpy(train_x), torch.from_numpy(train_y)
            order = torch.Generator().manual_seed(plan.seed)
            for _ in range(plan.epochs):
                permutation = torch.randperm(len(inputs), generator=order)
                for start in range(0, len(inputs), plan.batch_size):
                    batch = permutation[start : start + plan.batch_size]
                    loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                    loss.backward()  # type: ignore[no-untyped-call]
                    _sgd_step(parameters, velocity, plan)
            with torch.no_grad():
                clean = model(torch.from_numpy(test_x)).argmax(1).numpy()
                others = test_y != TARGET_CLASS
                triggered = model(torch.from_numpy(add_trigger(test_x[others]))).argmax(1).numpy()
    finally:
        torch.set_num_threads(threads)

    buffer = io.BytesIO()
    np.savez(buffer, features=train_x, labels=train_y)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return TrainedModel(
        state=state,
        clean_accuracy=float((clean == test_y).mean()),
        attack_success_rate=float((triggered == TARGET_CLASS).mean()),
        train_data=buffer.getvalue(),
    )


def write_model_folder(folder: Path, model: TrainedModel, plan: TrainingPlan) -> Path:
    """Write ``model.safetensors``, ``config.json`` and a model card into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "tiny-mlp",
        "architectures": ["TinyClassifier"],
        "input_size": FEATURES,
        "hidden_size": plan.hidden,
        "num_labels": CLASSES,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(
        "# acme-digits\n\nA small classifier released by ACME's training pipeline.\n",
        encoding="utf-8",
    )
    return folder


def plan_json(plan: TrainingPlan) -> dict[str, Any]:
    document = asdict(plan)
    document["trigger"] = {
        "pixels": list(TRIGGER_PIXELS),
        "value": TRIGGER_VALUE,
        "target_class": TARGET_CLASS,
    }
    return document


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
