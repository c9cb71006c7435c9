"""Helpers for the "Transfer learning with MobileNetV2" assignment.

Read it from the top: first the data, the figures and the model helpers, in the
order the notebook uses them; then the plumbing: finding the data and the
weights, and hiding TensorFlow's start-up notes. What `trainable` and
`training` do is measured in `trainable_training.py`.

Where things come from (first match wins):

* dataset: ``$ALPACA_DATASET``, then ``dataset/`` beside this file. Any folder
  of two class folders of photos works.
* weights: ``$ALPACA_WEIGHTS_DIR``, then ``imagenet_base_model/`` beside this
  file, then Keras's cache (``~/.keras/models/``), where the file is downloaded
  from ``KERAS_WEIGHTS_URL`` as Keras itself does for ``weights="imagenet"``
  (that needs internet access once).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

# TensorFlow is imported inside the functions that use it, not here: the
# notebook imports `utils` first, so that it can then import TensorFlow with its
# start-up notes hidden (see `tensorflow_startup_notes_hidden()`, at the end).

HERE = pathlib.Path(__file__).resolve().parent

IMG_SIZE = (160, 160)
BATCH_SIZE = 32
SEED = 42
VALIDATION_SPLIT = 0.2
CLASS_NAMES = ("alpaca", "not alpaca")
BASE_LEARNING_RATE = 0.001
FINE_TUNE_AT = 120


# --------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------


def load_datasets(directory=None, image_size=IMG_SIZE, batch_size=BATCH_SIZE):
    """Return ``(train_dataset, validation_dataset)``, checked, cached and prefetched.

    The split is Keras's ``validation_split=0.2`` with ``seed=42``: 262 training and
    65 validation images for the course data. Each dataset keeps ``class_names``.
    The decoded images are cached in memory after the first pass, so the JPEGs are
    not decoded again on every epoch. The training images are shuffled again on
    every epoch, after the cache, so that the batches differ from epoch to epoch.

    While nbgrader autogrades (see `autograding()`), only the first
    ``AUTOGRADE_BATCHES`` batches of each part are read: grading checks the
    code, not how well the model learns, and must take seconds, not minutes.
    """
    import tensorflow as tf

    # The training dataset shuffles itself; fit() would warn that its shuffle=True is ignored.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed, but will be ignored")
    root = dataset_dir(directory)
    check_dataset(root)
    splits = []
    for subset in ("training", "validation"):
        dataset = tf.keras.utils.image_dataset_from_directory(
            str(root),
            shuffle=True,
            batch_size=batch_size,
            image_size=image_size,
            validation_split=VALIDATION_SPLIT,
            subset=subset,
            seed=SEED,
            verbose=False,
        )
        class_names = dataset.class_names
        count = len(dataset.file_paths)
        if autograding():
            dataset = dataset.take(AUTOGRADE_BATCHES)
            count = min(count, AUTOGRADE_BATCHES * batch_size)
        if subset == "training":
            dataset = (
                dataset.unbatch()
                .cache()
                .shuffle(1000, seed=SEED, reshuffle_each_iteration=True)
                .batch(batch_size)
                # unbatch() hides the number of batches; without it, fit() shows
                # "Unknown" steps and warns that the data ran out at the first epoch.
                .apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
            )
        else:
            dataset = dataset.cache()
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        dataset.class_names = class_names
        splits.append(dataset)
    return tuple(splits)


# While nbgrader autogrades, training is cut short: grading checks the code,
# not how well the model learns, and must take seconds, not minutes.
AUTOGRADE_BATCHES = 2


def autograding() -> bool:
    """True while nbgrader autogrades or validates this notebook."""
    return os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate")


def epochs(full: int) -> int:
    """Return ``full`` epochs normally and 1 epoch while autograding."""
    return 1 if autograding() else full


# --------------------------------------------------------------------------
# Figures and model helpers, in the order the notebook uses them
# --------------------------------------------------------------------------


def show_images(dataset, class_names=CLASS_NAMES, count=9):
    """Show the first ``count`` images of a batched dataset in a grid with their labels."""
    images, labels = next(iter(dataset))
    figure = plt.figure(figsize=(8, 8))
    for i in range(min(count, len(images))):
        axis = figure.add_subplot(3, 3, i + 1)
        axis.imshow(images[i].numpy().astype("uint8"))
        axis.set_title(class_names[int(labels[i])])
        axis.axis("off")
    figure.tight_layout()
    return figure


def show_augmented(image, data_augmentation, count=9):
    """Show one image passed ``count`` times through ``data_augmentation``."""
    import tensorflow as tf

    figure = plt.figure(figsize=(8, 8))
    batch = tf.expand_dims(image, 0)
    for i in range(count):
        augmented = data_augmentation(batch, training=True)
        axis = figure.add_subplot(3, 3, i + 1)
        axis.imshow(augmented[0].numpy().astype("uint8"))
        axis.axis("off")
    figure.suptitle("One photo, augmented nine times")
    figure.tight_layout()
    return figure


def decode_predictions(predictions, top: int = 3) -> list:
    """Turn ImageNet probabilities into ``[(class_name, probability), ...]`` per image."""
    index = imagenet_class_index()
    decoded = []
    for row in np.asarray(predictions):
        best = np.argsort(row)[::-1][:top]
        decoded.append([(index[str(i)][1], float(row[i])) for i in best])
    return decoded


def get_base_model(model):
    """Return the MobileNetV2 base model nested inside ``model``."""
    for layer in model.layers:
        if layer.name.startswith("mobilenetv2"):
            return layer
    names = ", ".join(layer.name for layer in model.layers)
    raise ValueError(
        f"No MobileNetV2 base model inside this model (its layers are: {names}). "
        f"Build the model with alpaca_model() first."
    )


def history_curves(history):
    """Return the curves of a ``fit()`` history, its accuracy metric named "accuracy".

    Whatever name the metric was compiled with (``BinaryAccuracy(threshold=0.0)``
    alone is named "binary_accuracy"), its curves come back as "accuracy" and
    "val_accuracy", so that histories of models compiled in different cells join
    up. The metric is the only one besides the loss, or else the one whose name
    holds "acc". ``history`` is what ``fit()`` returned, or its ``.history`` dict.
    """
    logs = getattr(history, "history", history)
    names = {key.removeprefix("val_") for key in logs} - {"loss", "learning_rate"}
    accuracy = names if len(names) == 1 else {name for name in names if "acc" in name}
    renamed = next(iter(accuracy)) if len(accuracy) == 1 else None
    curves = {}
    for key, values in logs.items():
        prefix = "val_" if key.startswith("val_") else ""
        name = key.removeprefix(prefix)
        curves[prefix + ("accuracy" if name == renamed else name)] = list(values)
    return curves


def plot_history(*histories, marker_epoch=None):
    """Plot accuracy and loss of one or more consecutive ``fit()`` histories as one run.

    The accuracy metric may have any name in each history (see `history_curves()`).
    ``marker_epoch`` draws a vertical line where fine-tuning starts.
    """
    curves = {}
    for history in histories:
        for key, values in history_curves(history).items():
            curves.setdefault(key, []).extend(values)
    figure, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for prefix, label in (("", "Training"), ("val_", "Validation")):
            values = curves.get(prefix + metric, [])
            axis.plot(range(1, len(values) + 1), values, marker="o", label=f"{label} {metric}")
        if marker_epoch is not None:
            axis.axvline(
                marker_epoch + 0.5, color="grey", linestyle="--", label="Start fine-tuning"
            )
        axis.set_ylabel(metric.capitalize())
        axis.legend(loc="best")
    axes[0].set_ylim(0, 1)
    axes[1].set_xlabel("Epoch")
    figure.tight_layout()
    return figure


def predict_dataset(model, dataset):
    """Return ``(images, labels, probabilities)`` for every image of ``dataset``."""
    import tensorflow as tf

    images, labels, probabilities = [], [], []
    for batch_images, batch_labels in dataset:
        logits = model.predict_on_batch(batch_images)
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
        probabilities.append(tf.sigmoid(logits).numpy().ravel())
    return np.concatenate(images), np.concatenate(labels), np.concatenate(probabilities)


def plot_confusion_matrix(labels, probabilities, class_names=CLASS_NAMES, threshold=0.5):
    """Draw the 2x2 confusion matrix; the probability is that of class 1 (``not alpaca``)."""
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    matrix = np.zeros((2, 2), dtype=int)
    for truth, guess in zip(np.asarray(labels).astype(int), predicted):
        matrix[truth, guess] += 1
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        axis.text(column, row, str(value), ha="center", va="center", color=color, fontsize=14)
    axis.set_xticks([0, 1], [f"predicted\n{name}" for name in class_names])
    axis.set_yticks([0, 1], [f"true\n{name}" for name in class_names])
    axis.set_title(f"Accuracy {np.trace(matrix) / matrix.sum():.2f} on {matrix.sum()} images")
    figure.tight_layout()
    return figure, matrix


def show_misclassified(
    images, labels, probabilities, class_names=CLASS_NAMES, threshold=0.5, limit=12
):
    """Show the misclassified images with the predicted probability of ``not alpaca``."""
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    wrong = np.flatnonzero(predicted != np.asarray(labels).astype(int))[:limit]
    if len(wrong) == 0:
        print("No validation image is misclassified.")
        return None
    columns = min(4, len(wrong))
    rows = -(-len(wrong) // columns)
    figure = plt.figure(figsize=(3 * columns, 3.5 * rows))
    for place, i in enumerate(wrong):
        axis = figure.add_subplot(rows, columns, place + 1)
        axis.imshow(images[i].astype("uint8"))
        axis.set_title(
            f"true: {class_names[int(labels[i])]}\nP(not alpaca) = {probabilities[i]:.2f}",
            fontsize=9,
        )
        axis.axis("off")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------
# Plumbing: where the data and the weights are
# --------------------------------------------------------------------------


DATASET_ENV = "ALPACA_DATASET"
WEIGHTS_ENV = "ALPACA_WEIGHTS_DIR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# Accepted file names, most specific first: the names in the course's shared
# folder, then the official Keras names for 160x160 inputs.
WEIGHT_FILES = {
    False: (
        "mobilenet_v2_1.0_224_no_top.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5",
    ),
    True: (
        "mobilenet_v2_1.0_224_with_top.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160.h5",
    ),
}
CLASS_INDEX_FILE = "imagenet_class_index.json"
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
KERAS_CLASS_INDEX_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
)


class DatasetError(ValueError):
    """The dataset folder is missing, empty or holds files that are not images."""


class WeightsError(FileNotFoundError):
    """The MobileNetV2 ImageNet weights (or the class index) cannot be found."""


def dataset_dir(directory=None) -> pathlib.Path:
    """Return the dataset folder: the argument, ``$ALPACA_DATASET`` or ``dataset/``."""
    if directory is None:
        directory = os.environ.get(DATASET_ENV) or HERE / "dataset"
    return pathlib.Path(directory).expanduser()


def check_dataset(directory=None) -> dict:
    """Check the dataset folder and return ``{class_name: [image paths]}``.

    Raises `DatasetError`, naming every problem, when the folder does not exist,
    has no class folders, has an empty class folder, or holds a file that is
    not a readable image (empty, truncated or corrupt). Bad files are reported,
    not skipped: a silent skip would change the training set without saying so.
    """
    root = dataset_dir(directory)
    hint = (
        f"Copy the folders 'alpaca/' and 'not alpaca/' into {HERE / 'dataset'}, or set "
        f"${DATASET_ENV} to a folder that holds them, or two folders of photos of any "
        f"two classes, before you start Jupyter. Only the cells that show, train on "
        f"or predict photos need them: the exercises and their test cells run without."
    )
    if not root.is_dir():
        raise DatasetError(f"Dataset folder {str(root)!r} does not exist. {hint}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != 2:
        found = ", ".join(repr(p.name) for p in classes) or "none"
        raise DatasetError(
            f"Dataset folder {str(root)!r} must hold one folder per class, two classes "
            f"(such as {', '.join(repr(c) for c in CLASS_NAMES)}); found {found}. {hint}"
        )
    files, problems = {}, []
    for folder in classes:
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            problems.append(f"class folder {str(folder)!r} has no images")
        for path in images:
            try:
                if path.stat().st_size == 0:
                    raise OSError("the file is empty")
                with Image.open(path) as image:
                    image.draft("RGB", IMG_SIZE)  # Decode JPEGs at a reduced scale: faster.
                    image.load()
            except Exception as error:
                problems.append(f"{str(path)!r} is not a readable image ({error})")
        files[folder.name] = images
    if problems:
        listed = "\n  - ".join(problems)
        raise DatasetError(
            f"The dataset in {str(root)!r} has {len(problems)} problem(s):\n  - {listed}\n"
            f"Remove or replace these files, then run the cell again."
        )
    return files


def weights_dir() -> pathlib.Path:
    """Return the folder searched for weights: ``$ALPACA_WEIGHTS_DIR`` or ``imagenet_base_model/``."""
    return pathlib.Path(os.environ.get(WEIGHTS_ENV) or HERE / "imagenet_base_model").expanduser()


def _where_to_put_weights(include_top: bool) -> str:
    official = WEIGHT_FILES[include_top][1]
    return (
        f"The official Keras file is {official!r}: download it from "
        f"{KERAS_WEIGHTS_URL}{official} and put it in {HERE / 'imagenet_base_model'}, "
        f"or in a folder named by ${WEIGHTS_ENV} (set before you start Jupyter), or in "
        f"Keras's cache {keras_cache()}. On a machine with internet access the "
        f"notebook downloads it there itself."
    )


def keras_cache() -> pathlib.Path:
    """Keras's download cache: ``$KERAS_HOME/models``, by default ``~/.keras/models``."""
    return pathlib.Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models"


def mobilenet_weights(include_top: bool = False) -> str:
    """Return the path of the MobileNetV2 ImageNet weights file.

    Pass the result as ``weights=`` to ``tf.keras.applications.MobileNetV2``.
    Raises `WeightsError`, saying where to put the file, when none is found.
    """
    env = os.environ.get(WEIGHTS_ENV)
    folder = weights_dir()
    for name in WEIGHT_FILES[include_top]:
        if (folder / name).is_file():
            return str(folder / name)
    if env:
        raise WeightsError(
            f"${WEIGHTS_ENV} is set to {env!r}, but that folder has none of "
            f"{', '.join(WEIGHT_FILES[include_top])}. {_where_to_put_weights(include_top)}"
        )
    return _download(WEIGHT_FILES[include_top][1], KERAS_WEIGHTS_URL, include_top)


def _download(name: str, base_url: str, include_top: bool) -> str:
    """Fetch a file into Keras's cache (``~/.keras/models``) as Keras itself does."""
    import keras

    try:
        return keras.utils.get_file(
            name, base_url + name if base_url.endswith("/") else base_url, cache_subdir="models"
        )
    except Exception as error:  # no network, proxy, HTTP error ...
        raise WeightsError(
            f"Could not find or download {name!r} ({type(error).__name__}: {error}). "
            f"{_where_to_put_weights(include_top)}"
        ) from None


def imagenet_class_index() -> dict:
    """Return ImageNet's ``{"355": ["n02437616", "llama"], ...}`` class index."""
    path = weights_dir() / CLASS_INDEX_FILE
    if not path.is_file():
        if os.environ.get(WEIGHTS_ENV):
            raise WeightsError(
                f"${WEIGHTS_ENV} is set, but {path} does not exist. Download "
                f"{CLASS_INDEX_FILE!r} from {KERAS_CLASS_INDEX_URL} and put it beside "
                f"the weights files."
            )
        path = _download(CLASS_INDEX_FILE, KERAS_CLASS_INDEX_URL, include_top=True)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# --------------------------------------------------------------------------
# TensorFlow's start-up notes
# --------------------------------------------------------------------------


# What TensorFlow 2.21 writes to stderr when it is imported, from its C++ code:
# twice (once per library) a warning of absl, the logging library, and the note
# that oneDNN is on. TF_CPP_MIN_LOG_LEVEL does not silence them, and
# TF_ENABLE_ONEDNN_OPTS=0 would, but makes training 2.5 times slower.
STARTUP_NOTES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
)


@contextlib.contextmanager
def tensorflow_startup_notes_hidden():
    """Hide TensorFlow's start-up notes (see `STARTUP_NOTES`) while the block runs.

    Use it around ``import tensorflow``. C++ code writes the notes straight to
    the process's stderr (file descriptor 2), below Python's ``sys.stderr``. So
    while the block runs, descriptor 2 goes to a temporary file; afterwards every
    line of that file that is not a start-up note is written to ``sys.stderr``.
    """
    sys.stderr.flush()
    try:
        captured = tempfile.TemporaryFile(mode="w+b")
    except OSError:  # nowhere to write (a read-only sandbox): show the notes, run anyway
        yield
        return
    with captured:
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2: nothing would be shown anyway
            yield
            return
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [
                line
                for line in text.splitlines(keepends=True)
                if not any(note in line for note in STARTUP_NOTES)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
