"""The dataset and the weights: found where the README says, checked, with clear errors."""

import pathlib
import shutil

import numpy as np
import pytest

import utils

GRAYSCALE = ("4b9ef3ce2685ee32.jpg", "5a71db307230880e.jpg")


def small_dataset(source: pathlib.Path, target: pathlib.Path, per_class: int = 6) -> pathlib.Path:
    """Copy a few real photos of each class (the two grayscale ones included) into target."""
    for name in utils.CLASS_NAMES:
        (target / name).mkdir(parents=True)
        photos = sorted((source / name).glob("*.jpg"))[:per_class]
        if name == "not alpaca":
            photos += [source / name / gray for gray in GRAYSCALE]
        for photo in photos:
            shutil.copy(photo, target / name / photo.name)
    return target


@pytest.fixture
def small(dataset_dir, tmp_path):
    return small_dataset(dataset_dir, tmp_path / "data")


def test_course_split(dataset_dir):
    """Does the course data split into 262 training and 65 validation images, 160x160x3?"""
    train, validation = utils.load_datasets()
    assert train.class_names == list(utils.CLASS_NAMES)
    counts = [sum(int(labels.shape[0]) for _, labels in dataset) for dataset in (train, validation)]
    assert counts == [262, 65]
    images, labels = next(iter(train))
    assert images.shape == (32, 160, 160, 3)
    assert set(np.unique(labels.numpy())) <= {0, 1}


def test_dataset_from_environment(small, monkeypatch):
    """Is $ALPACA_DATASET used when no folder is passed?"""
    monkeypatch.setenv(utils.DATASET_ENV, str(small))
    assert utils.dataset_dir() == small
    assert sum(len(files) for files in utils.check_dataset().values()) == 14


def test_grayscale_photos_load_as_rgb(dataset_dir, tmp_path):
    """Do the two grayscale photos just work, as three-channel images?"""
    data = tmp_path / "gray"
    for name in utils.CLASS_NAMES:
        (data / name).mkdir(parents=True)
    for gray in GRAYSCALE:
        shutil.copy(dataset_dir / "not alpaca" / gray, data / "not alpaca" / gray)
    shutil.copy(next((dataset_dir / "alpaca").glob("*.jpg")), data / "alpaca" / "a.jpg")
    import tensorflow as tf

    dataset = tf.keras.utils.image_dataset_from_directory(
        str(data), image_size=utils.IMG_SIZE, batch_size=8, shuffle=False, verbose=False
    )
    images, labels = next(iter(dataset))
    assert images.shape == (3, 160, 160, 3)
    gray_images = images.numpy()[labels.numpy() == 1]
    # A grayscale photo becomes three equal channels.
    assert np.array_equal(gray_images[..., 0], gray_images[..., 1])


def test_images_are_decoded_once(small):
    """Does the pipeline keep decoded images, so that epoch 2 reads no JPEG again?"""
    train, validation = utils.load_datasets(small, batch_size=4)
    first = [images.numpy() for images, _ in train.concatenate(validation)]
    shutil.rmtree(small)  # The files are gone: only the cache can serve epoch 2.
    second = [images.numpy() for images, _ in train.concatenate(validation)]
    assert sum(len(batch) for batch in second) == 14
    # Shuffling changes the order between epochs, not the set of images.
    sums = sorted(float(image.sum()) for batch in first for image in batch)
    assert sums == sorted(float(image.sum()) for batch in second for image in batch)


def test_training_order_changes_between_epochs(dataset_dir):
    """Does each epoch see the training images in a new order, cache or not?"""
    train, validation = utils.load_datasets()
    epochs = [np.concatenate([labels.numpy() for _, labels in train]) for _ in range(2)]
    assert len(epochs[0]) == 262 and not np.array_equal(*epochs)
    assert sorted(epochs[0]) == sorted(epochs[1])
    labels = [np.concatenate([labels.numpy() for _, labels in validation]) for _ in range(2)]
    assert np.array_equal(*labels)  # validation keeps its order


def test_missing_dataset_folder(tmp_path):
    """Does a wrong dataset path stop with a message naming the path and the fix?"""
    missing = tmp_path / "nowhere"
    with pytest.raises(utils.DatasetError) as error:
        utils.load_datasets(missing)
    message = str(error.value)
    assert str(missing) in message and "does not exist" in message
    assert utils.DATASET_ENV in message


def test_folder_without_classes(tmp_path):
    """Does a folder with no class folders say which folders it expects?"""
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "photo.jpg").write_bytes(b"")
    with pytest.raises(utils.DatasetError, match="one folder per class"):
        utils.check_dataset(tmp_path / "flat")


def test_empty_class_folder(small):
    """Does an empty class folder stop with a message naming it?"""
    for photo in (small / "alpaca").iterdir():
        photo.unlink()
    with pytest.raises(utils.DatasetError) as error:
        utils.load_datasets(small)
    assert "alpaca" in str(error.value) and "has no images" in str(error.value)


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.jpg", b""),
        ("notes.jpg", b"these are not the pixels you are looking for\n" * 20),
        ("truncated.jpg", None),
    ],
    ids=["empty-file", "text-file", "truncated-jpeg"],
)
def test_bad_image_is_reported_by_name(small, name, content):
    """Is a file that is not a readable image reported by name, before TensorFlow sees it?"""
    target = small / "alpaca" / name
    if content is None:  # A real JPEG cut in half.
        whole = next((small / "alpaca").glob("*.jpg")).read_bytes()
        content = whole[: len(whole) // 2]
    target.write_bytes(content)
    with pytest.raises(utils.DatasetError) as error:
        utils.load_datasets(small)
    message = str(error.value)
    assert name in message and "not a readable image" in message
    assert "Remove or replace" in message
    assert target.exists(), "the bad file must not be deleted"


def test_weights_shared_names(weights_dir):
    """Are the weights files of ../shared found through $ALPACA_WEIGHTS_DIR?"""
    assert utils.mobilenet_weights() == str(weights_dir / "mobilenet_v2_1.0_224_no_top.h5")
    assert utils.mobilenet_weights(include_top=True).endswith("mobilenet_v2_1.0_224_with_top.h5")
    assert utils.imagenet_class_index()["355"] == ["n02437616", "llama"]


def test_weights_official_names(weights_dir, tmp_path, monkeypatch):
    """Are the official Keras file names accepted too?"""
    for shared, official in utils.WEIGHT_FILES.values():
        (tmp_path / official).symlink_to(weights_dir / shared)
    monkeypatch.setenv(utils.WEIGHTS_ENV, str(tmp_path))
    assert utils.mobilenet_weights().endswith("kernels_1.0_160_no_top.h5")
    assert utils.mobilenet_weights(include_top=True).endswith("kernels_1.0_160.h5")


def test_weights_missing_in_named_folder(tmp_path, monkeypatch):
    """Does a weights folder without the file say which file to put where?"""
    monkeypatch.setenv(utils.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(utils.WeightsError) as error:
        utils.mobilenet_weights()
    message = str(error.value)
    assert "mobilenet_v2_1.0_224_no_top.h5" in message and str(tmp_path) in message
    assert "imagenet_base_model" in message
    with pytest.raises(utils.WeightsError, match="imagenet_class_index.json"):
        utils.imagenet_class_index()


def test_weights_download_fails_clearly(tmp_path, monkeypatch):
    """With no local weights and no network, is the error about the weights, not a URL trace?"""
    monkeypatch.delenv(utils.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(utils, "HERE", tmp_path)  # no imagenet_base_model/ with weights
    monkeypatch.setattr(utils, "KERAS_WEIGHTS_URL", "http://127.0.0.1:9/")  # refused at once
    with pytest.raises(utils.WeightsError) as error:
        utils.mobilenet_weights()
    assert "Could not find or download" in str(error.value)
    assert "imagenet_base_model" in str(error.value)


def test_imagenet_classifier_sees_llamas(dataset_dir):
    """Does the ImageNet classifier, with preprocess_input, call most alpacas 'llama'?"""
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(
        input_shape=(160, 160, 3), include_top=True, weights=utils.mobilenet_weights(True)
    )
    photos = sorted((dataset_dir / "alpaca").glob("*.jpg"))[:40]
    images = np.stack(
        [
            tf.keras.utils.img_to_array(tf.keras.utils.load_img(p, target_size=(160, 160)))
            for p in photos
        ]
    )
    probabilities = model.predict(
        tf.keras.applications.mobilenet_v2.preprocess_input(images), verbose=0
    )
    top1 = [row[0][0] for row in utils.decode_predictions(probabilities, top=1)]
    assert top1.count("llama") >= 20, top1  # measured: 28 of 40
