"""Reference data written by Keras itself for ``compat: keras`` and ``keras:`` weights.

Run it in a TensorFlow environment kept apart from medtransfer's (the tests never need it)::

    python3 -m venv /work/tfvenv && /work/tfvenv/bin/pip install tensorflow-cpu keras h5py
    /work/tfvenv/bin/python scripts/make_keras_refs.py

1. ``tests/data/keras_step_refs.npz`` (``tests/train/test_keras_steps.py``): small Keras models
   trained a few steps on one fixed batch (no shuffle, no augmentation, no dropout) — seed 000's
   AlexNet without and with batch norm (its code; dense widths 32-32-16 to stay small) and a
   VGG-style net (seed 002's, base 4) with a Dense head, two softmax outputs and class weights,
   and the same net with two sigmoid outputs trained with ``binary_crossentropy`` on one-hot
   labels (seed 004's output; ``vgg_sigmoid``, its ``proba`` Keras's two raw sigmoids) — each
   with Adagrad, Adam and SGD (Nesterov momentum). 64 × 64 grey inputs, 8 images, 3 steps.
   The initial weights are Glorot-uniform draws of numpy's PCG64 seeded per tensor (stored:
   seed, bound and sum; the test draws them again), set into the Keras model before training:
   they are that model's initial weights. After every step, each tensor's sum, sum of absolute
   values and 32 entries at stored positions; after the last step, the model's predictions
   (inference mode) on the training batch and on 8 other images.
2. ``tests/data/keras_apps/*.xz`` (``tests/models/test_keras_weights.py``): Keras applications
   built with ``weights=None`` at 64 px — VGG16 with its top (3 classes; Keras 3 layout,
   ``save_weights``), DenseNet121 and ResNet50 with their tops (3 classes; Keras 2 layout, as
   Keras's published ImageNet files) — their weights set to a periodic pattern of Glorot scale
   (random weights of 7–40 M parameters would be 30–160 MB; the pattern compresses to a few
   kB per file with xz and still differs at every position of a tensor within its period), and
   each model's logits (``classifier_activation=None``) on 2 images.
"""

from __future__ import annotations

import lzma
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py
import keras
import numpy as np
from keras import layers
from keras.src.legacy.saving import legacy_h5_format

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SIZE, N, STEPS, SAMPLES = 64, 8, 3, 32
OPTIMIZERS = {
    "adagrad": lambda: keras.optimizers.Adagrad(learning_rate=0.01),
    "adam": lambda: keras.optimizers.Adam(learning_rate=1e-3),
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
}


def alexnet(batch_norm: bool) -> keras.Model:
    """Seed 000's AlexNet (its Keras code), dense 32-32-16 instead of 4096-4096-1000."""
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1))])
    for filters, kernel, stride, pool in [(96, 11, 4, True), (256, 5, 1, True), (384, 3, 1, False),
                                          (384, 3, 1, False), (256, 3, 1, True)]:
        # the seed's convs before batch norm have a bias; no gradient reaches it but float noise,
        # which Adam scales up to ~lr per step (it moves the moving mean by as much): left out here
        model.add(layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=not batch_norm))
        if batch_norm:
            model.add(layers.BatchNormalization())
        model.add(layers.Activation("relu"))
        if pool:
            model.add(layers.MaxPooling2D(2, 2, padding="same"))
    model.add(layers.Flatten())
    for units in (32, 32, 16):
        model.add(layers.Dense(units, activation="relu"))
    model.add(layers.Dense(1, activation="sigmoid"))
    return model


def vgg(activation: str = "softmax") -> keras.Model:
    """Seed 002's VGG at base 4: configuration D's 13 convs, flatten, 3 × Dense 16, Dense 2."""
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1))])
    for width, convs in [(4, 2), (8, 2), (16, 3), (32, 3), (32, 3)]:
        for _ in range(convs):
            model.add(layers.Conv2D(width, 3, padding="same", activation="relu"))
        model.add(layers.MaxPooling2D(2, 2))
    model.add(layers.Flatten())
    for _ in range(3):
        model.add(layers.Dense(16, activation="relu"))
    model.add(layers.Dense(2, activation=activation))
    return model


CASES = {"alexnet": lambda: alexnet(False), "alexnet_bn": lambda: alexnet(True), "vgg": vgg,
         "vgg_sigmoid": lambda: vgg("sigmoid")}
PAIRS = {"vgg": "categorical_crossentropy", "vgg_sigmoid": "binary_crossentropy"}  # one-hot labels


def glorot_bound(shape: tuple[int, ...]) -> float:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return float(np.sqrt(6.0 / (shape[-2] * receptive + shape[-1] * receptive)))


def tensors(model: keras.Model) -> list[tuple[int, int, np.ndarray]]:
    """(layer index, weight index, array) of every weight tensor, in model order."""
    return [(i, j, w) for i, layer in enumerate(model.layers) for j, w in enumerate(layer.get_weights())]


def set_initial(model: keras.Model) -> np.ndarray:
    """Glorot-uniform kernels and small biases drawn by numpy (see the module docstring); batch
    norms keep Keras's initial values. Returns (seed, bound, sum) per tensor (NaN for batch-norm
    tensors)."""
    rows = []
    for i, layer in enumerate(model.layers):
        values = layer.get_weights()
        if not values:
            continue
        if isinstance(layer, layers.BatchNormalization):
            rows += [[np.nan] * 3] * len(values)
            continue
        new = []
        for j, w in enumerate(values):
            seed = 1000 + 10 * i + j
            bound = glorot_bound(w.shape) if w.ndim > 1 else 0.05
            drawn = np.random.default_rng(seed).uniform(-bound, bound, w.shape).astype(np.float32)
            rows.append([seed, bound, drawn.astype(np.float64).sum()])
            new.append(drawn)
        layer.set_weights(new)
    return np.array(rows)


def positions_of(model: keras.Model) -> np.ndarray:
    """Per tensor, SAMPLES sorted flat positions (−1 pads tensors with fewer entries)."""
    out = np.full((len(tensors(model)), SAMPLES), -1, dtype=np.int64)
    for t, (i, j, w) in enumerate(tensors(model)):
        rng = np.random.default_rng(7 + 100 * i + j)
        pos = np.sort(rng.choice(w.size, size=min(SAMPLES, w.size), replace=False))
        out[t, : len(pos)] = pos
    return out


def record(model: keras.Model, positions: np.ndarray) -> np.ndarray:
    """Per tensor: sum, sum of |w|, then the entries at its positions (NaN padded)."""
    rows = np.full((len(positions), 2 + SAMPLES), np.nan)
    for t, (_, _, w) in enumerate(tensors(model)):
        flat = w.astype(np.float64).ravel()
        pos = positions[t][positions[t] >= 0]
        rows[t, :2] = flat.sum(), np.abs(flat).sum()
        rows[t, 2 : 2 + len(pos)] = flat[pos]
    return rows


def step_refs(cases: list[str] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2 * N, SIZE, SIZE, 1), dtype=np.uint8)
    labels = np.array([0, 1, 0, 0, 1, 0, 1, 0], dtype=np.int64)
    x = images[:N].astype(np.float32) / 255.0
    out: dict[str, np.ndarray] = {"images": images[:, :, :, 0], "labels": labels}
    counts = np.bincount(labels)
    class_weight = {k: float(N / (2 * c)) for k, c in enumerate(counts)}  # sklearn's "balanced"
    for case, build in CASES.items():
        if cases is not None and case not in cases:
            continue
        for opt_name, make_opt in OPTIMIZERS.items():
            keras.utils.set_random_seed(0)
            model = build()
            out[f"{case}/init"] = set_initial(model)
            # per tensor: layer index, weight index within the layer, shape (0-padded to 4 dims)
            out[f"{case}/tensors"] = np.array([[i, j, *w.shape, *[0] * (4 - w.ndim)]
                                               for i, j, w in tensors(model)])
            positions = out[f"{case}/positions"] = positions_of(model)
            pair = case in PAIRS
            model.compile(optimizer=make_opt(), loss=PAIRS.get(case, "binary_crossentropy"))
            steps = [record(model, positions)]
            callback = keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs, m=model, s=steps, p=positions: s.append(record(m, p)))

            y = keras.utils.to_categorical(labels, 2) if pair else labels.astype(np.float32)[:, None]
            model.fit(x, y, batch_size=N, epochs=STEPS, shuffle=False, verbose=0, callbacks=[callback],
                      class_weight=class_weight if pair else None)
            out[f"{case}/{opt_name}/steps"] = np.stack(steps)
            proba = model.predict(images.astype(np.float32) / 255.0, verbose=0)
            out[f"{case}/{opt_name}/proba"] = proba if pair else np.concatenate([1 - proba, proba], axis=1)
    out["class_weight"] = np.array([class_weight[0], class_weight[1]])
    return out


def set_pattern(model: keras.Model) -> None:
    """Every tensor: a period-31 pattern of Glorot scale, shifted by the tensor's index; batch
    norm's gamma near 0.5 (so 50 layers of ResNet do not grow the activations by 1e14, which
    would leave float32 rounding as the only test) and its moving variance positive."""
    for k, w in enumerate(model.weights):
        shape = tuple(w.shape)
        wave = ((np.arange(int(np.prod(shape))) * 7 + 13 * k) % 31 - 15.0) / 15.0
        path = w.path
        if path.endswith("gamma"):
            values = 0.5 + 0.1 * wave
        elif path.endswith("moving_variance"):
            values = 1.0 + 0.5 * wave
        elif path.endswith(("beta", "moving_mean", "bias")):
            values = 0.1 * wave
        else:
            values = glorot_bound(shape) * wave
        w.assign(values.reshape(shape).astype(np.float32))


def app_refs(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(3).uniform(-1.0, 1.0, size=(2, SIZE, SIZE, 3)).astype(np.float32)
    apps = {
        "vgg16": (keras.applications.VGG16, "weights.h5"),
        "densenet121": (keras.applications.DenseNet121, "h5"),
        "resnet50": (keras.applications.ResNet50, "h5"),
    }
    preds = {"input": x}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (app, fmt) in apps.items():
            model = app(weights=None, input_shape=(SIZE, SIZE, 3), classes=3, classifier_activation=None)
            set_pattern(model)
            preds[name] = model.predict(x, verbose=0)
            path = Path(tmp) / f"{name}.{fmt}"
            if fmt == "weights.h5":
                model.save_weights(path)
            else:
                with h5py.File(path, "w") as f:
                    legacy_h5_format.save_weights_to_hdf5_group(f, model)
            with path.open("rb") as src, lzma.open(out_dir / f"{path.name}.xz", "wb", preset=9) as dst:
                shutil.copyfileobj(src, dst)
    np.savez_compressed(out_dir / "predictions.npz", **preds)


def main(argv: list[str]) -> int:
    """``--only steps`` / ``--only apps`` writes one of the two; ``--cases A,B`` (with steps)
    recomputes only those cases' step entries and keeps the file's others."""
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    if only in (None, "steps"):
        path = DATA / "keras_step_refs.npz"
        cases = argv[argv.index("--cases") + 1].split(",") if "--cases" in argv else None
        refs = step_refs(cases)
        if cases is not None:
            with np.load(path) as old:
                refs = {**{k: old[k] for k in old.files if k.split("/")[0] not in cases}, **refs}
        np.savez_compressed(path, **refs)
    if only in (None, "apps"):
        app_refs(DATA / "keras_apps")
    for path in [DATA / "keras_step_refs.npz", *sorted((DATA / "keras_apps").iterdir())]:
        print(f"{path.relative_to(DATA.parent.parent)}: {path.stat().st_size / 1024:.1f} kB")
    print(f"keras {keras.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
