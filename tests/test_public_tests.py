"""Tests of the public tests: catalogues of mistakes and of correct variants.

Every variant is the solution of the master notebook with a small textual
change (see `catalogue.py`). A mistake must make its public test raise an
AssertionError whose message names the problem; a correct variant must pass
every public test of its exercise, including the hidden-test arguments.
"""

from __future__ import annotations

import re

import catalogue
import numpy as np
import pytest

from grader.inside import artifacts

public_tests = pytest.importorskip("public_tests")
import test_utils  # noqa: E402


@pytest.fixture(scope="module")
def env():
    return catalogue.namespace()


def run_public(test_name, function, kwargs=()):
    """Run a public test as the notebook does: produce and check in one process."""
    getattr(public_tests, test_name)(function, **catalogue.call_kwargs(kwargs))


def run_graded(test_name, function, kwargs=(), folder=None):
    """Run a public test as grading does: the record goes to disk and back between the halves."""
    produce, check = public_tests.TESTS[test_name]
    kwargs = catalogue.call_kwargs(kwargs)

    stem = str(folder / test_name)
    artifacts.dump(produce(function, **public_tests.inputs_for(produce, kwargs)), stem)
    with open(f"{stem}.json", "rb") as handle:
        record = artifacts.load(handle.read(), f"{stem}.npz")
    check(record, **public_tests.inputs_for(check, kwargs))


# --------------------------------------------------------------------------
# The solution and the stubs
# --------------------------------------------------------------------------

SOLUTION_CALLS = [
    pytest.param(grade_id, name, kwargs, id=f"{name}" + ("" if not kwargs else "-hidden"))
    for grade_id, calls in catalogue.PUBLIC_CALLS.items()
    for name, kwargs in calls
]


@pytest.mark.slow
@pytest.mark.parametrize(("grade_id", "test_name", "kwargs"), SOLUTION_CALLS)
def test_solution_passes(env, capfd, grade_id, test_name, kwargs):
    """Does the solution pass every public test, with the hidden-test arguments too, printing one line and nothing on stderr?"""
    function = catalogue.load(grade_id, env=env)
    run_public(test_name, function, kwargs)
    out, err = capfd.readouterr()
    assert re.fullmatch(r"[a-z_]+( \([a-z ]+\))?: all tests passed\.\n", out), out
    assert err == "", f"a passing test wrote to stderr (nbgrader scores it 0):\n{err}"


STUB_CALLS = [
    pytest.param(grade_id, name, id=name)
    for grade_id, calls in catalogue.PUBLIC_CALLS.items()
    for name, kwargs in calls
    if not kwargs
]


@pytest.mark.parametrize(("grade_id", "test_name"), STUB_CALLS)
def test_stub_fails_readably(env, grade_id, test_name):
    """Does the released stub fail each public test with the readable NotImplementedError message?"""
    function = catalogue.load(grade_id, stub=True, env=env)
    with pytest.raises(AssertionError) as failure:
        run_public(test_name, function)
    message = str(failure.value)
    assert message.startswith(f"{grade_id}")
    assert "still raises NotImplementedError" in message
    assert "Replace the `raise NotImplementedError()` line with your code." in message
    shown = failure.value._render_traceback_()
    assert "still raises NotImplementedError" in shown[0], shown
    assert len([line for line in shown if line.strip()]) <= 15, shown
    assert not any("test_utils" in line or "public_tests" in line for line in shown), shown


def test_stub_is_what_nbgrader_releases():
    """Does the stub replace exactly the solution block, keeping the code around it?"""
    source = catalogue.stub_source("fine_tune")
    assert "### BEGIN SOLUTION" not in source
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()\n    return model" in source
    assert "base_model = utils.get_base_model(model)" in source


# --------------------------------------------------------------------------
# Catalogue of mistakes
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant", catalogue.MISTAKES, ids=[f"{v.grade_id}-{v.id}" for v in catalogue.MISTAKES]
)
def test_mistake_is_caught(env, variant, tmp_path):
    """Does the public test fail on this mistake, inline and as graded, with a message that names the problem?"""
    function = catalogue.load(variant.grade_id, variant.replacements, env=env)
    with pytest.raises(AssertionError) as graded:
        run_graded(variant.test, function, variant.kwargs, tmp_path)
    with pytest.raises(AssertionError) as failure:
        run_public(variant.test, function, variant.kwargs)
    # Keras numbers its layers per process ("input_layer_3"): compare without the numbers.
    assert re.sub(r"_\d+\b", "", str(graded.value)) == re.sub(r"_\d+\b", "", str(failure.value))
    message = str(failure.value)
    print(message)
    assert variant.phrase in message, message
    assert message.startswith(variant.grade_id), message
    assert "<keras" not in message and "object at 0x" not in message, message


def test_mistakes_are_distinct():
    """Is every mistake of the catalogue named once?"""
    keys = [(v.grade_id, v.id) for v in catalogue.MISTAKES + catalogue.CORRECT]
    assert len(keys) == len(set(keys))


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant", catalogue.CORRECT, ids=[f"{v.grade_id}-{v.id}" for v in catalogue.CORRECT]
)
def test_correct_variant_passes(env, variant, tmp_path):
    """Does this correct way of writing the solution pass every public test of its exercise, as graded?"""
    function = catalogue.load(variant.grade_id, variant.replacements, env=env)
    calls = catalogue.PUBLIC_CALLS[variant.grade_id]
    # Keep the file fast: the solution already runs every hidden-argument call.
    if variant.grade_id == "alpaca_model":
        calls = calls[:3]  # both layer tests, and the public frozen-base test
    if variant.grade_id == "fine_tune":
        calls = calls[:1] + calls[2:3]
    for test_name, kwargs in calls:
        run_graded(test_name, function, kwargs, tmp_path)


# --------------------------------------------------------------------------
# Other failures become readable AssertionErrors
# --------------------------------------------------------------------------


def test_other_exceptions_are_wrapped(env):
    """Does an exception in the learner's code become an AssertionError naming the exercise, the type and the message?"""
    function = catalogue.load(
        "data_augmenter",
        [("    return data_augmentation\n", "    return data_augmentaton\n")],
        env=env,
    )
    with pytest.raises(AssertionError) as failure:
        public_tests.data_augmenter_test(function)
    message = str(failure.value)
    assert message.startswith("data_augmenter: your code raised NameError:")
    assert "data_augmentaton" in message
    assert re.search(
        r"It happened at line \d+ of the cell where you wrote data_augmenter\(\)", message
    ), message
    assert "NameError" in failure.value.detail  # the full traceback, for %xmode Verbose


def test_a_failing_step_names_the_function_and_the_cell():
    """Does a step of a test that crashes name the learner's function and cell, not tests the learner cannot see?"""

    def crash():
        raise ValueError("Input 0 of layer 'dense' is incompatible with the layer")

    with pytest.raises(AssertionError) as failure:
        test_utils.run_check("alpaca_model (frozen base)", "one training step of the model", crash)
    message = str(failure.value)
    assert message.startswith(
        "alpaca_model (frozen base): one training step of the model failed with ValueError:"
    ), message
    assert "what your alpaca_model() returned" in message, message
    assert "the cell where you wrote alpaca_model()" in message, message
    assert "tests above" not in message, message


def test_not_a_function():
    """Does passing something that is not a function fail with a readable message?"""
    with pytest.raises(AssertionError, match="expected the function data_augmenter"):
        public_tests.data_augmenter_test(None)


# --------------------------------------------------------------------------
# test_utils
# --------------------------------------------------------------------------


def test_render_table_marks_the_first_difference():
    """Does the table align expected and got rows and mark the first differing row?"""
    table = test_utils.render_table(
        ("expected layer", "shape", "got layer", "shape"),
        [("Dropout(rate=0.2)", (None, 1280)), ("Dense(units=1)", (None, 1))],
        [("Dropout(rate=0.2)", (None, 1280)), ("Dense(units=2)", (None, 2))],
        mark=1,
    )
    lines = table.splitlines()
    assert lines[2].startswith(">> 1")
    assert lines[1].startswith("   0")
    assert len({line.index("|") for line in lines}) == 1


@pytest.fixture(scope="module")
def solution_model(env):
    """One model built by the solution, shared by the read-only checks below."""
    return catalogue.load("alpaca_model", env=env)()


def test_summary_lists_preprocessing_without_compiling(solution_model):
    """Does summary() list the operations in order, preprocessing included, without compiling the model?"""
    rows = test_utils.summary(solution_model)
    assert [r[0] for r in rows] == [
        "InputLayer",
        "Sequential",
        "TrueDivide",
        "Subtract",
        "Functional",
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
    ]
    assert rows[4][1] == (None, 5, 5, 1280)
    assert rows[-1][1:3] == [(None, 1), 1281]
    assert not solution_model.compiled


def test_comparator(solution_model, capsys):
    """Does comparator() pass on equal summaries and show a table on a difference?"""
    rows = test_utils.summary(solution_model)
    test_utils.comparator(rows, rows)
    assert capsys.readouterr().out == "All tests passed!\n"
    changed = [list(r) for r in rows]
    changed[7][0] = "Flatten"
    with pytest.raises(AssertionError, match=">> 7"):
        test_utils.comparator(changed, rows)


def test_recorded_training_argument(solution_model):
    """Does Keras keep training=False on the node of the base model call, as the frozen test assumes?"""
    base = solution_model.operations[4]
    assert test_utils.recorded_call_kwargs(base, solution_model) == [
        {"training": False, "mask": None}
    ]


def test_reference_kernels_match_keras_loading(solution_model):
    """Does the solution's base model match MobileNetV2 layer by layer, and every weight the digests of the weights file?"""
    assert test_utils.mobilenet_difference(solution_model.operations[4], (160, 160, 3)) is None
    base = solution_model.operations[4]
    assert test_utils.has_imagenet_weights(base) == (True, None)


def test_fit_step_moves_statistics_of_an_unfrozen_base():
    """Does one fit step change the BatchNormalization moving statistics when the base is not frozen, so that the behaviour checks can see it?"""
    import keras

    model, base = test_utils.model_for_fine_tuning()
    base.trainable = True
    test_utils.compile_for_test(model)
    before = test_utils.moving_statistics(base)
    test_utils.fit_step(model, (96, 96))
    moved = test_utils.changed(before, test_utils.moving_statistics(base))
    major, minor = (int(p) for p in keras.__version__.split(".")[:2])
    if (major, minor) < (3, 16):
        # Keras 3.0 to 3.15: fit() overrides the training=False recorded in the model,
        # so trainable BatchNormalization layers update their statistics.
        assert len(moved) == len(before), moved
    else:
        pytest.skip(
            "Keras 3.16 and later keep training=False inside fit(): only the "
            "trainable flags show an unfrozen BatchNormalization layer."
        )


def test_stale_catalogue_entry_is_reported():
    """Does a replacement that no longer matches the solution raise instead of passing silently?"""
    with pytest.raises(AssertionError, match="stale catalogue entry"):
        catalogue.load("fine_tune", [("text that is not in the solution", "x")])


# --------------------------------------------------------------------------
# What the messages say about Keras is what Keras does
# --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unfrozen_layers_of_a_frozen_base_model_do_what_the_message_says():
    """Without base_model.trainable = True, do the unfrozen layers train, and does base_model list them, as the fine_tune_test message says on this Keras?"""
    import trainable_training

    model, base = test_utils.model_for_fine_tuning()
    assert base.trainable is False
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= 120 and not test_utils.is_batch_norm(layer)
    test_utils.compile_for_test(model)
    before = test_utils.kernels(base)
    test_utils.fit_step(model, (96, 96))
    after = test_utils.kernels(base)
    trained = [i for i in before if not np.array_equal(before[i][1], after[i][1])]
    answer = trainable_training.answer(trainable_training.LAYER_TRAINS_IN_FROZEN_MODEL)
    if answer == "yes":  # "would train anyway, but base_model.trainable_weights would list none"
        assert trained and min(trained) >= 120, trained
        assert base.trainable_weights == []
    else:  # "none of the layers you unfroze would train"
        assert trained == []


def test_string_accuracy_reads_the_logit_at_one_half():
    """Does metrics=["accuracy"] with a logit output count a logit of 0.3 as class 0, as the compile test's message says?"""
    import keras

    inputs = keras.Input(shape=(1,))
    model = keras.Model(inputs, inputs)  # outputs its input: the "logit"
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    logits = np.array([[0.3], [0.7]], "float32")
    labels = np.array([[1.0], [1.0]], "float32")  # both are class 1: logit > 0
    accuracy = model.evaluate(logits, labels, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == 0.5  # 0.3 read as class 0, 0.7 as class 1


def test_plot_history_joins_any_metric_name():
    """Does the learning-curve figure join the accuracy of both phases when fine_tune() names its metric otherwise?"""
    import matplotlib.pyplot as plt

    import utils

    class History:
        def __init__(self, **history):
            self.history = history

    frozen = History(accuracy=[0.5, 0.6], val_accuracy=[0.5, 0.7], loss=[1, 0.9], val_loss=[1, 1])
    fine = History(
        binary_accuracy=[0.8, 0.9], val_binary_accuracy=[0.8, 0.9], loss=[0.5, 0.4], val_loss=[1, 1]
    )
    figure = utils.plot_history(frozen, fine, marker_epoch=2)
    lines = {line.get_label(): line.get_ydata() for line in figure.axes[0].get_lines()}
    plt.close(figure)
    assert list(lines["Training accuracy"]) == [0.5, 0.6, 0.8, 0.9]
    assert list(lines["Validation accuracy"]) == [0.5, 0.7, 0.8, 0.9]
    assert utils.history_curves({"acc": [1], "val_acc": [1], "loss": [0]}) == {
        "accuracy": [1],
        "val_accuracy": [1],
        "loss": [0],
    }
