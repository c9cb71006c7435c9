"""Comparison and message helpers shared by `public_tests.py`.

Learners see this file. It describes models in the learner's terms (layer types,
names and output shapes), renders expected-vs-got tables, runs one training step
on random data, and builds the small model the Exercise 3 tests fine-tune. It
holds no exercise solution.

Each public test has two halves. The first calls your function and writes down
what came back as plain data: the model's configuration, its weights, its
compile settings, or the error it raised. The second judges that record. The
tests judge a copy of your model rebuilt from the record, so nothing a test does
changes the models of your notebook.
"""

from __future__ import annotations

import hashlib
import json
import math
import traceback

import numpy as np

import utils

# The operations a functional model records for `preprocess_input()`.
PREPROCESS_OPS = ("TrueDivide", "Subtract")
# Random images and labels used for one training step: small, so a step is fast.
FIT_BATCH = 2
# Rows shown around the first differing row of a long table.
TABLE_WINDOW = 3
# The longest error message and traceback of your code kept in a record.
MAX_MESSAGE = 300
MAX_TRACEBACK_LINES = 40
# --------------------------------------------------------------------------
# Describing models in the learner's terms
# --------------------------------------------------------------------------


def as_shape(shape):
    """Return a shape as a tuple, with None for unknown dimensions."""
    if shape is None:
        return None
    return tuple(None if d is None else int(d) for d in shape)


def output_shape(operation, model=None):
    """Return the output shape of ``operation`` where ``model`` calls it.

    Keras 3 dropped ``layer.output_shape``. An operation called by several
    models has one node per call, so pick the node that belongs to ``model``.
    """
    nodes = list(getattr(operation, "_inbound_nodes", []))
    model_nodes = getattr(model, "_nodes", None) if model is not None else None
    if model_nodes is not None:
        nodes = [node for node in nodes if node in model_nodes] or nodes
    if not nodes:
        return None
    outputs = nodes[0].outputs
    if len(outputs) != 1:
        return tuple(as_shape(t.shape) for t in outputs)
    return as_shape(outputs[0].shape)


def activation_name(layer):
    """Return the name of a layer's activation, or None for no activation."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", None) or type(activation).__name__
    return None if name == "linear" else name


def describe(operation):
    """Describe one operation as the learner wrote it, e.g. ``Dense(units=1)``."""
    kind = type(operation).__name__
    if kind == "Dense":
        activation = activation_name(operation)
        extra = f", activation={activation!r}" if activation else ""
        return f"Dense(units={operation.units}{extra})"
    if kind == "Dropout":
        return f"Dropout(rate={operation.rate:g})"
    if kind == "RandomFlip":
        return f"RandomFlip(mode={operation.get_config().get('mode')!r})"
    config = operation.get_config() if kind.startswith("Random") else {}
    if "factor" in config or "height_factor" in config:
        factor = config.get("factor", config.get("height_factor"))
        if isinstance(factor, (tuple, list)) and len(factor) == 2 and factor[0] == -factor[1]:
            factor = factor[1]
        return f"{kind}(factor={factor})"
    if kind == "TrueDivide":
        return "TrueDivide (preprocess_input)"
    if kind == "Subtract":
        return "Subtract (preprocess_input)"
    if kind in ("Functional", "Model", "Sequential"):
        return f"{kind} {operation.name!r}"
    return kind


def summary(model):
    """Return one row per operation of ``model``: ``[type, output shape, params, detail]``.

    The operations come in the order of ``model.operations``, so the two
    operations of `preprocess_input()` (TrueDivide and Subtract) show up. This
    does not compile or change ``model``.
    """
    rows = []
    for operation in model.operations:
        count = (
            operation.count_params()
            if hasattr(operation, "count_params") and getattr(operation, "built", False)
            else 0
        )
        rows.append(
            [type(operation).__name__, output_shape(operation, model), count, describe(operation)]
        )
    return rows


def parameter_counts(model):
    """Return ``(trainable, non_trainable)`` parameter counts of ``model``."""
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    frozen = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    return trainable, frozen


# --------------------------------------------------------------------------
# Tables and messages
# --------------------------------------------------------------------------


def render_table(headers, expected, got, labels=None, mark=None, window=None):
    """Render expected rows beside got rows, aligned, marking the row ``mark``.

    ``expected`` and ``got`` are lists of tuples of cells (missing rows are
    shown as "-"). ``window`` limits the rows shown to those around ``mark``.
    """
    length = max(len(expected), len(got))
    width = len(headers) // 2
    blank = ("-",) * width
    rows = []
    for i in range(length):
        left = tuple(expected[i]) if i < len(expected) else blank
        right = tuple(got[i]) if i < len(got) else blank
        label = str(labels[i]) if labels is not None else str(i)
        rows.append((label,) + left + right)
    if window is not None and mark is not None:
        keep = range(max(0, mark - window), min(length, mark + window + 1))
    else:
        keep = range(length)
    header = ("",) + tuple(headers)
    shown = [header] + [tuple(str(c) for c in rows[i]) for i in keep]
    widths = [max(len(r[c]) for r in shown) for c in range(len(header))]
    lines = []
    for n, row in enumerate(shown):
        is_marked = n > 0 and mark is not None and list(keep)[n - 1] == mark
        prefix = ">> " if is_marked else "   "
        cells = [cell.ljust(widths[c]) for c, cell in enumerate(row)]
        lines.append(
            (
                prefix + "  ".join(cells[: 1 + width]) + "  |  " + "  ".join(cells[1 + width :])
            ).rstrip()
        )
    if window is not None and mark is not None and (keep.start > 0 or keep.stop < length):
        lines.append(f"   (rows {keep.start}-{keep.stop - 1} of {length} shown)")
    return "\n".join(lines)


def first_difference(expected, got, same=None):
    """Return the index of the first row where ``expected`` and ``got`` differ, or None."""
    same = same or (lambda a, b: a == b)
    for i in range(max(len(expected), len(got))):
        if i >= len(expected) or i >= len(got) or not same(expected[i], got[i]):
            return i
    return None


class TestFailed(AssertionError):
    """A public test that failed. Jupyter shows its message first, and only its message.

    The code of the tests is not what you need to read, so it is left out. To see
    the full traceback, run ``%xmode Verbose`` and run the cell again.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, message, detail=None):
        super().__init__(message)
        self.detail = detail  # the traceback of your code, as text, when your code raised

    def _render_traceback_(self):
        """What IPython shows for this error (it calls this method when it exists)."""
        red, plain = "\x1b[0;31m", "\x1b[0m"
        try:
            shell = get_ipython()  # noqa: F821 -- defined inside IPython only
            if shell.InteractiveTB.mode == "Verbose":
                lines = shell.InteractiveTB.structured_traceback(
                    type(self), self, self.__traceback__
                )
                return lines + ([self.detail] if self.detail else [])
        except Exception:  # noqa: BLE001 -- outside IPython, or an older IPython
            pass
        first, *rest = str(self).split("\n")
        return [
            f"{red}{type(self).__name__}{plain}: {first}",
            *rest,
            "",
            "(Run %xmode Verbose, then this cell again, to see the full traceback.)",
        ]


def fail(exercise, message, table=None, detail=None):
    """Raise the error every public test raises: one message, one style."""
    text = f"{exercise}: {message}"
    if table:
        text += "\n\n" + table
    raise TestFailed(text, detail)


def passed(exercise):
    """Print the one line a passing test prints."""
    print(f"{exercise}: all tests passed.")


def comparator(learned, expected):
    """Compare two `summary()` lists row by row; raise AssertionError on the first difference."""
    index = first_difference(
        expected, learned, same=lambda e, g: list(e)[: len(g)] == list(g)[: len(e)]
    )
    if index is not None:
        headers = ("expected layer", "output shape", "got layer", "output shape")
        table = render_table(
            headers, [(r[0], r[1]) for r in expected], [(r[0], r[1]) for r in learned], mark=index
        )
        got = learned[index] if index < len(learned) else "nothing"
        want = expected[index] if index < len(expected) else "nothing"
        fail("comparator", f"layer {index} is {got}; expected {want}.", table)
    print("All tests passed!")


# --------------------------------------------------------------------------
# Calling your function, and writing down what came back
# --------------------------------------------------------------------------


def _is_your_code(filename):
    """True for a frame of the notebook, not of Python, Keras or these test files."""
    name = filename.replace("\\", "/")
    library = ("site-packages/", "dist-packages/", "/lib/python3", "<frozen ")
    tests = ("/public_tests.py", "/test_utils.py", "/utils.py")
    return not any(part in name for part in library) and not name.endswith(tests)


def error_record(error):
    """Describe an exception of your code as plain data."""
    frames = traceback.extract_tb(error.__traceback__)[1:]  # drop call_learner's own frame
    yours = [frame for frame in frames if _is_your_code(frame.filename)]
    lines = (str(error).strip().splitlines() or [""])[0]
    if len(lines) > MAX_MESSAGE:
        lines = lines[:MAX_MESSAGE] + " ..."
    detail = "".join(
        traceback.format_list(frames) + traceback.format_exception_only(type(error), error)
    ).splitlines()
    return {
        "type": type(error).__name__,
        "message": lines,
        "not_implemented": isinstance(error, NotImplementedError),
        "line": yours[-1].lineno if yours else None,
        "code": (yours[-1].line or "").strip() if yours else None,
        "in_mobilenet": any("applications/mobilenet_v2" in f.filename for f in frames),
        "traceback": "\n".join(detail[-MAX_TRACEBACK_LINES:]),
    }


def call_learner(function, *args):
    """Call your function. Return ``(what it returned, None)`` or ``(None, error record)``."""
    if not callable(function):
        return None, {"type": "not callable", "found": type(function).__name__}
    try:
        return function(*args), None
    except Exception as error:  # noqa: BLE001 -- every error of your code is reported
        return None, error_record(error)


def returned_record(value):
    """Describe what your function returned, in a few plain words and numbers."""
    import keras

    return {
        "type": type(value).__name__,
        "none": value is None,
        "sequence_length": len(value) if isinstance(value, (list, tuple)) else None,
        "is_layer": isinstance(value, keras.layers.Layer),
        "is_model": isinstance(value, keras.Model),
        "is_sequential": isinstance(value, keras.Sequential),
        "callable": callable(value),
        "name": getattr(value, "__name__", None),
    }


def layers_in_order(model):
    """Every layer of ``model``, depth first, each container before its own layers."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(layers_in_order(layer))
    return found


def model_record(model, weights=True):
    """Write down a model as plain data: its configuration, weights and trainable flags.

    ``weights=False`` leaves the weights out, for a check that never rebuilds the model.
    """
    try:
        config = model.to_json()
    except Exception as error:  # noqa: BLE001 -- reported to the learner by the check
        return {"error": error_record(error)}
    record = {
        "config": config,
        "trainable": [bool(model.trainable)]
        + [bool(layer.trainable) for layer in layers_in_order(model)],
    }
    if weights:
        record["weights"] = [np.asarray(w) for w in model.get_weights()]
    return record


def call_and_record(function, args, model_class):
    """Call your function; record what it returned, with the model when it is a model_class."""
    value, error = call_learner(function, *args)
    if error:
        return {"error": error}
    record = {"returned": returned_record(value)}
    if isinstance(value, model_class):
        record["model"] = model_record(value)
    return record


# The modules a model's or a compile configuration's classes may come from. Anything
# else (keras.config, keras.saving, keras.utils, a module of your own) is refused
# before Keras reads the configuration.
KERAS_MODULES = (
    "keras",
    "keras.layers",
    "keras.initializers",
    "keras.regularizers",
    "keras.constraints",
    "keras.activations",
    "keras.optimizers",
    "keras.optimizers.schedules",
    "keras.losses",
    "keras.metrics",
    "keras.models",
)
KERAS_INTERNAL = ("keras.src.models.", "keras.src.ops.", "keras.src.layers.")


def _keras_only(config):
    """Return the first class of ``config`` that is not a Keras model part, or None."""
    if isinstance(config, dict):
        module = config.get("module")
        if isinstance(module, str) and not (
            module in KERAS_MODULES or module.startswith(KERAS_INTERNAL)
        ):
            return f"{module}.{config.get('class_name')}"
        if config.get("class_name") in ("Lambda", "__lambda__"):
            return "Lambda"
        children = config.values()
    elif isinstance(config, list):
        children = config
    else:
        return None
    for child in children:
        found = _keras_only(child)
        if found:
            return found
    return None


# The models rebuilt last, by their configuration: two tests of one model rebuild it once.
_rebuilt = {}
REBUILT_KEPT = 4


def forget_models():
    """Drop the models kept by rebuild_model() and handed_over_model()."""
    _rebuilt.clear()
    _handed_over.clear()
    _architectures.clear()


def rebuild_model(exercise, record, what="the model"):
    """Rebuild a model from its record (Keras's safe mode: no code is loaded from it).

    A model with the same configuration as one of the last few rebuilt is reused,
    with the record's weights and trainable flags set again.
    """
    import keras

    if "error" in record:
        error = record["error"]
        fail(
            exercise,
            f"{what} cannot be saved by Keras (model.to_json() raised {error['type']}: "
            f"{error['message']}). Build it only from Keras layers, as the instructions do.",
        )
    try:
        model = _rebuilt.pop(record["config"], None)
        if model is None:
            config = json.loads(record["config"])
            foreign = _keras_only(config)
            if foreign:
                raise ValueError(f"{foreign} is not a Keras built-in layer")
            model = keras.saving.deserialize_keras_object(config, safe_mode=True)
        _rebuilt[record["config"]] = model  # the newest last
        while len(_rebuilt) > REBUILT_KEPT:
            del _rebuilt[next(iter(_rebuilt))]
        model.set_weights(list(record["weights"]))
        set_trainable(model, record["trainable"])
    except Exception as error:  # noqa: BLE001 -- any damaged record
        text = (str(error).strip().splitlines() or [""])[0][:MAX_MESSAGE]
        fail(
            exercise,
            f"{what} could not be rebuilt from its configuration ({type(error).__name__}: "
            f"{text}). Build it only from Keras layers, as the instructions do.",
        )
    return model


def set_trainable(model, flags):
    """Set the trainable flags of ``model`` and of every layer in it, as `model_record()` lists them."""
    layers = layers_in_order(model)
    if not isinstance(flags, list) or not all(isinstance(flag, bool) for flag in flags):
        raise ValueError("the trainable flags are not a list of True/False")
    if len(flags) != len(layers) + 1:
        raise ValueError(f"{len(flags)} trainable flags for {len(layers) + 1} layers")
    model.trainable = flags[0]
    for layer, flag in zip(layers, flags[1:]):
        layer.trainable = flag


def learner_error(exercise, error):
    """Fail with a readable message for an error record of your code."""
    if error["type"] == "not callable":
        fail(
            exercise,
            f"expected the function {exercise.split()[0]}, got {error['found']}. "
            f"Pass the function itself, without calling it.",
        )
    where = ""
    if error.get("line") is not None:
        code = f": {error['code']}" if error.get("code") else "."
        where = (
            f"\nIt happened at line {error['line']} of the cell where you wrote "
            f"{exercise.split()[0]}(){code}"
        )
    if error["not_implemented"]:
        fail(
            exercise,
            "the function still raises NotImplementedError. Replace the "
            "`raise NotImplementedError()` line with your code.",
        )
    text = error["message"]
    hint = "Read the error, fix the line it points to, and run the cell again."
    if "Layer count mismatch" in text:
        hint = (
            "The weights file BASE_WEIGHTS has no ImageNet classifier: create "
            "MobileNetV2() with include_top=False (step 1)."
        )
    elif "mobilenetv2" in text and "incompatible" in text:
        hint = (
            "The base model was built for another image size than the inputs: pass "
            "input_shape=input_shape to MobileNetV2() (step 1)."
        )
    elif error.get("in_mobilenet"):
        hint = (
            "The error comes from tf.keras.applications.MobileNetV2(): check its "
            "arguments against step 1 of the exercise."
        )
    fail(
        exercise,
        f"your code raised {error['type']}: {text}{where}\n{hint}",
        detail=error.get("traceback"),
    )


def run_check(exercise, what, function, *args, **kwargs):
    """Run a step of a test on your model; a crash becomes a readable failure."""
    try:
        return function(*args, **kwargs)
    except AssertionError:
        raise
    except Exception as error:  # noqa: BLE001 -- reported to the learner
        text = (str(error).strip().splitlines() or [""])[0][:MAX_MESSAGE]
        function = exercise.split()[0]
        fail(
            exercise,
            f"{what} failed with {type(error).__name__}: {text}\n"
            f"The test ran this on what your {function}() returned. Check its layers "
            f"against the steps of the exercise, run the cell where you wrote "
            f"{function}() again, then this test cell.",
        )


# --------------------------------------------------------------------------
# MobileNetV2: reference weights, moving statistics, one training step
# --------------------------------------------------------------------------


# MobileNetV2's architecture (see architecture()), by input shape, computed once each.
_references = {}


def reference_architecture(input_shape):
    """The architecture of Keras's own MobileNetV2 (include_top=False) for ``input_shape``."""
    import keras

    input_shape = tuple(int(d) for d in input_shape)
    if input_shape not in _references:
        model = keras.applications.MobileNetV2(
            input_shape=input_shape, include_top=False, weights=None
        )
        _references[input_shape] = _architecture(model)
    return _references[input_shape]


def export_references(input_shapes):
    """The course's own references for these input shapes, as JSON data.

    MobileNetV2's architecture for each shape and the digests of the ImageNet weights
    depend on Keras and the weights file only, never on a submission: a grader computes
    them once, in a run that judges nothing, and hands them to every later run
    (``import_references``) instead of building MobileNetV2 again for each.
    """
    try:
        digests = [list(pair) for pair in imagenet_digests()]
    except Exception:  # noqa: BLE001 -- no weights here: each run says so for itself
        digests = None
    return {
        "architectures": [
            [list(shape), reference_architecture(shape)] for shape in sorted(set(input_shapes))
        ],
        "digests": digests,
    }


def import_references(data):
    """Take the references of ``export_references`` (from a run that judged nothing)."""
    global _digests
    for shape, rows in data["architectures"]:
        _references[tuple(int(d) for d in shape)] = rows
    if data.get("digests") is not None:
        _digests = tuple((str(path), str(digest)) for path, digest in data["digests"])


# architecture() of the last models it read: [(model, rows)], the newest last. Two tests
# of one rebuilt model (alpaca_model_test and frozen_base_test) read it once.
_architectures = []


def architecture(model):
    """The layers of a functional model as data: ``[(type, config, inputs), ...]``.

    Each layer's configuration without its name and trainable flag (the tests check
    flags apart), and its calls, with each input named by the position of the layer
    it comes from. So names, the model's, the input layer's and any layer's, do
    not count; types, configurations and connections do.
    """
    for known, rows in _architectures:
        if known is model:
            return rows
    rows = _architecture(model)
    _architectures.append((model, rows))
    del _architectures[:-REBUILT_KEPT]
    return rows


def _architecture(model):
    config = model.get_config()
    layers = config.get("layers", [])
    position = {layer.get("name"): i for i, layer in enumerate(layers)}

    def connect(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                history = list(value.get("config", {}).get("keras_history") or [None])
                return ["<tensor of layer>", position.get(history[0], "?")] + history[1:]
            return {k: connect(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [connect(v) for v in value]
        return value

    rows = []
    for layer in layers:
        inner = {k: v for k, v in layer.get("config", {}).items() if k not in ("name", "trainable")}
        rows.append(
            (
                layer.get("class_name"),
                layer.get("module"),
                inner,
                connect(layer.get("inbound_nodes")),
            )
        )
    for ends in ("input_layers", "output_layers"):
        found = config.get(ends) or []
        if found and not isinstance(found[0], (list, tuple)):
            found = [found]
        rows.append((ends, None, [[position.get(e[0], "?"), *e[1:]] for e in found], None))
    # As JSON data (lists, not tuples): rows computed here and rows handed over by
    # import_references() compare equal.
    return json.loads(json.dumps(rows, default=str))


def mobilenet_difference(base_model, input_shape):
    """Compare ``base_model`` with Keras's MobileNetV2, layer by layer.

    Returns None when every layer has the type, the configuration and the inputs of
    MobileNetV2's (include_top=False, for ``input_shape``), else ``(index, got, expected)``
    describing the first layer that differs.
    """
    import keras

    if not isinstance(base_model, keras.Model) or not hasattr(base_model, "get_config"):
        return 0, type(base_model).__name__, "Functional"
    try:
        got = architecture(base_model)
    except Exception:  # noqa: BLE001 -- not a functional model
        return 0, type(base_model).__name__, "a functional model"
    expected = reference_architecture(input_shape)
    for index in range(max(len(got), len(expected))):
        if index >= len(got):
            return index, "nothing", expected[index][0]
        if index >= len(expected):
            return index, got[index][0], "nothing"
        if got[index] != expected[index]:
            return index, got[index][0], expected[index][0]
    return None


def _digest(array):
    array = np.ascontiguousarray(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()


_digests = None  # imagenet_digests(), once per process


def imagenet_digests():
    """SHA-256 of every weight of MobileNetV2 (include_top=False) in the ImageNet weights file.

    Read with h5py from the file of ``utils.mobilenet_weights()``, once per process, in
    the order Keras loads them (layer by layer, each layer's weights in order): the
    order of ``base_model.weights``. The weights do not depend on the image size.
    """
    global _digests
    if _digests is not None:
        return _digests
    import h5py

    digests = []
    with h5py.File(utils.mobilenet_weights(include_top=False), "r") as weights:
        for layer in weights.attrs["layer_names"]:
            group = weights[_text(layer)]
            for name in group.attrs.get("weight_names", []):
                path = _text(name).removesuffix(":0")
                digests.append((path, _digest(np.asarray(group[_text(name)]))))
    _digests = tuple(digests)
    return _digests


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def has_imagenet_weights(base_model):
    """Return ``(True, None)``, or ``(False, layer name)`` for the first weight that differs.

    Every weight of the base model (kernels, biases, BatchNormalization statistics) is
    compared with the ImageNet weights file, by its SHA-256 digest.
    """
    import keras

    reference = imagenet_digests()
    weights = base_model.weights
    for index, (path, digest) in enumerate(reference):
        if index >= len(weights):
            return False, path.split("/")[0]
        if _digest(keras.ops.convert_to_numpy(weights[index])) != digest:
            return False, path.split("/")[0]
    if len(weights) != len(reference):
        return False, weights[len(reference)].path.split("/")[0]
    return True, None


def is_batch_norm(layer):
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def moving_statistics(base_model):
    """Snapshot every BatchNormalization moving mean and variance of ``base_model``."""
    snapshot = {}
    for layer in base_model.layers:
        if is_batch_norm(layer):
            snapshot[layer.name + "/moving_mean"] = layer.moving_mean.numpy().copy()
            snapshot[layer.name + "/moving_variance"] = layer.moving_variance.numpy().copy()
    return snapshot


def kernels(base_model):
    """Snapshot the kernel of every convolution of ``base_model``: ``{index: (name, kernel)}``."""
    snapshot = {}
    for index, layer in enumerate(base_model.layers):
        kernel = getattr(layer, "depthwise_kernel", None)
        if kernel is None:
            kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            snapshot[index] = (layer.name, kernel.numpy().copy())
    return snapshot


def changed(before, after):
    """Return the keys whose arrays are not exactly equal (np.array_equal)."""
    return [key for key in before if not np.array_equal(before[key], after[key])]


def random_batch(image_shape, count=FIT_BATCH, seed=0):
    """Return ``count`` random images in [0, 255] and alternating 0/1 labels."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(count,) + tuple(image_shape) + (3,)).astype("float32")
    labels = (np.arange(count) % 2).reshape(-1, 1).astype("float32")
    return images, labels


def fit_step(model, image_shape, images_in_0_255=True):
    """Run one real training step of ``model`` on a tiny random batch.

    The step runs eagerly: tracing MobileNetV2's training graph takes several
    seconds, one eager step well under one. ``fit()`` and ``train_on_batch()``
    run the same ``train_step``.
    """
    images, labels = random_batch(image_shape)
    if not images_in_0_255:
        images = images / 127.5 - 1.0
    model.run_eagerly = True
    model.train_on_batch(images, labels)


def compile_for_test(model, learning_rate=utils.BASE_LEARNING_RATE):
    """Compile a model built by the tests (never a model of the notebook)."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
        run_eagerly=True,
    )
    return model


def model_for_fine_tuning(image_shape=(96, 96), base_learning_rate=utils.BASE_LEARNING_RATE):
    """Build a fresh, compiled test model: Input -> frozen MobileNetV2 -> GAP -> Dense(1).

    It stands in for the model of Exercise 2, so that Exercise 3 is tested on
    its own. It is compiled with Adam(base_learning_rate), so a `fine_tune()`
    that does not recompile leaves that optimizer in place. Returns
    ``(model, base_model)``.
    """
    import keras

    input_shape = tuple(image_shape) + (3,)
    base_model = keras.applications.MobileNetV2(
        input_shape=input_shape,
        include_top=False,
        weights=utils.mobilenet_weights(include_top=False),
    )
    base_model.trainable = False
    inputs = keras.Input(shape=input_shape)
    x = base_model(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs, name="fine_tune_test_model")
    compile_for_test(model, base_learning_rate)
    model.run_eagerly = False
    return model, base_model


# The model handed to fine_tune(), by image shape: (model, its base, weights, trainable flags).
_handed_over = {}


def handed_over_model(image_shape=(96, 96), base_learning_rate=utils.BASE_LEARNING_RATE):
    """The model `model_for_fine_tuning()` hands to fine_tune(), as it is handed over.

    Built once per image shape; each call sets its weights, trainable flags and
    compile settings back to those of a fresh one. Returns ``(model, base_model)``.
    """
    key = tuple(image_shape)
    if key not in _handed_over:
        model, base_model = model_for_fine_tuning(image_shape, base_learning_rate)
        flags = [bool(model.trainable)] + [
            bool(layer.trainable) for layer in layers_in_order(model)
        ]
        _handed_over[key] = (model, base_model, model.get_weights(), flags)
    model, base_model, weights, flags = _handed_over[key]
    model.set_weights(weights)
    set_trainable(model, flags)
    compile_for_test(model, base_learning_rate)
    model.run_eagerly = False
    return model, base_model


# What compile() takes that fine_tune() is asked to set.
COMPILE_ARGUMENTS = ("optimizer", "loss", "metrics")


def compile_from_record(model, config):
    """Compile ``model`` with the compile configuration recorded after fine_tune().

    Only the optimizer, the loss and the metrics are applied; their classes must be
    Keras's own and are read in safe mode. Returns the model's compile configuration
    as Keras gives it back afterwards, which is what the tests read.
    """
    import keras

    if not isinstance(config, dict):
        raise ValueError("the compile settings are not a dictionary")
    foreign = _keras_only(config)
    if foreign:
        raise ValueError(f"{foreign} is not a Keras built-in")
    arguments = {
        name: keras.saving.deserialize_keras_object(config[name], safe_mode=True)
        for name in COMPILE_ARGUMENTS
        if config.get(name) is not None
    }
    if "optimizer" not in arguments:
        raise ValueError("no optimizer in the compile settings")
    model.compile(**arguments, run_eagerly=True)
    return json.loads(json.dumps(model.get_compile_config(), default=str))


def augmenter(spec):
    """Build a fresh augmenter from ``{"name": ..., "layers": [[class name, config], ...]}``."""
    import keras

    layers = [getattr(keras.layers, kind)(**config) for kind, config in spec["layers"]]
    return keras.Sequential(layers, name=spec["name"])


def base_feature_size(size):
    """MobileNetV2 divides height and width by 32, rounding up (160 -> 5, 128 -> 4)."""
    return math.ceil(size / 32)


def recorded_call_kwargs(base_model, model):
    """Return the keyword arguments recorded when ``model`` called ``base_model``."""
    nodes = list(getattr(base_model, "_inbound_nodes", []))
    model_nodes = getattr(model, "_nodes", None)
    if model_nodes is not None:
        nodes = [node for node in nodes if node in model_nodes] or nodes
    return [dict(node.arguments.kwargs) for node in nodes if node.arguments is not None]
