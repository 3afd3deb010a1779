"""The shipped course model and the data helper: the file is the one recorded, and it is as good as recorded."""

import collections
import hashlib

import pytest
import torch

from qtutor import metrics
from qtutor.data import COURSE_IMAGE_SIZE, DIGITS_DIR, ImageData, read_labels
from qtutor.errors import InputError
from qtutor.models import COURSE_MODEL, build_densenet, course_model, load_checkpoint, train, training_record


def test_shipped_weights_are_the_recorded_file():
    record = training_record()
    assert hashlib.sha256(COURSE_MODEL.read_bytes()).hexdigest() == record["sha256"]
    assert record["weights"] == COURSE_MODEL.name and record["image_size"] == COURSE_IMAGE_SIZE


def test_training_curve_has_plateaued():
    """The recorded validation accuracy of the last few epochs is flat: the recipe converged."""
    history = training_record()["history"]
    last = history["val_accuracy"][-4:]
    assert len(history["val_accuracy"]) == training_record()["recipe"]["epochs"]
    assert max(last) - min(last) <= 0.01 and history["learning_rate"][-1] < 1e-5


@pytest.fixture(scope="module")
def data(digits):
    return digits  # conftest's course_data(), read once per run


def test_course_data_is_the_bundled_ten_class_split(data):
    assert len(data.split("train")) == 3500 and len(data.split("val")) == 500 and len(data.split("test")) == 1000
    assert data.split("test").class_to_idx == {str(digit): digit for digit in range(10)}
    assert read_labels(DIGITS_DIR / "labels.txt", 10)[4] == "four"
    images = data.batch(3)
    assert images.shape == (3, 3, COURSE_IMAGE_SIZE, COURSE_IMAGE_SIZE)
    # stats.json holds the training split's statistics at its own 28x28: normalized, mean 0 and std 1.
    native = ImageData(DIGITS_DIR, data.mean, data.std, 28)
    train = torch.stack([native.split("train")[i][0] for i in range(3500)])
    assert abs(train.mean().item()) < 1e-3 and abs(train.std().item() - 1) < 1e-3


def test_calibration_order_is_fixed_by_the_seed(data):
    first = next(iter(data.calibration_loader(seed=3)))[1]
    assert torch.equal(first, next(iter(data.calibration_loader(seed=3)))[1])
    assert not torch.equal(first, next(iter(data.calibration_loader(seed=4)))[1])


def test_calibration_order_does_not_depend_on_how_the_loader_is_iterated(data):
    """tqdm.auto makes an iterator eagerly; a shuffling DataLoader would then give other batches (it did)."""
    from tqdm.auto import tqdm

    loader = data.calibration_loader(subset=16)
    plain = [labels for _, labels in loader]
    wrapped = [labels for _, labels in tqdm(loader, disable=True)]
    assert all(torch.equal(a, b) for a, b in zip(plain, wrapped, strict=True))
    assert sorted(torch.cat(plain).tolist()) != torch.cat(plain).tolist()  # still shuffled, not in folder order


def test_image_data_reads_any_image_folder(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for path in sorted((DIGITS_DIR / "train" / "1").glob("*.png"))[:3]:
            (tmp_path / "train" / name / path.name).write_bytes(path.read_bytes())
    custom = ImageData(tmp_path, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), None)
    assert custom.input_size == 224 and custom.batch(2, split="train").shape == (2, 3, 224, 224)
    assert custom.split("train").classes == ["cat", "dog"]


def test_shipped_model_reaches_its_recorded_test_accuracy(data):
    """Recomputed here, not read from the record: at least 98.5% on the 1,000 bundled test digits."""
    measured = metrics.accuracy(metrics.predict(course_model(), data.test_loader()))
    assert measured.count == 1000
    assert measured.value == pytest.approx(training_record()["test_accuracy"], abs=1e-9)
    assert measured.value >= 0.985


def test_build_densenet_has_the_requested_classifier():
    model = build_densenet(7)
    assert model.classifier.out_features == 7 and model.classifier.in_features == 1024


def test_layer_outputs_copies_each_output_before_an_in_place_relu_overwrites_it():
    from qtutor.models import layer_outputs

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(inplace=True), torch.nn.Linear(8, 2)).eval()
    inputs = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    outputs = layer_outputs(model, ["0", "1"], inputs)
    assert list(outputs) == ["0", "1"]
    assert torch.equal(outputs["0"], model[0](inputs)) and (outputs["0"] < 0).any()  # not overwritten by the ReLU
    assert torch.equal(outputs["1"], outputs["0"].relu()) and not outputs["0"].requires_grad
    assert not model[0]._forward_hooks and not model[1]._forward_hooks  # hooks removed again
    assert torch.equal(layer_outputs(model, "2", inputs)["2"], model(inputs).detach())
    with pytest.raises(ValueError, match="no submodule named 'conv9'"):
        layer_outputs(model, ["0", "conv9"], inputs)


def test_layer_outputs_in_float64_are_float32_tensors_that_do_not_depend_on_the_thread_count():
    from qtutor.models import layer_outputs

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(inplace=True), torch.nn.Conv2d(16, 8, 3)
    ).eval()
    inputs = torch.randn(4, 3, 20, 20)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(layer_outputs(model, ["1", "3"], inputs, float64=True))
    finally:
        torch.set_num_threads(threads)
    for name in ("1", "3"):
        assert results[0][name].dtype == torch.float32 and torch.equal(results[0][name], results[1][name])
        assert torch.allclose(results[0][name], layer_outputs(model, name, inputs)[name], atol=1e-5)
    assert next(model.parameters()).dtype == torch.float32  # the model itself is left in float32


def tiny_builder(classes_number):
    """A stand-in for build_densenet with a 'classifier', so load_checkpoint can be tested in milliseconds."""
    return torch.nn.Sequential(
        collections.OrderedDict(features=torch.nn.Linear(4, 8), classifier=torch.nn.Linear(8, classes_number))
    )


class RunsCode:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_load_checkpoint_loads_a_state_dict_in_eval_mode(tmp_path):
    trained = tiny_builder(3)
    torch.save(trained.state_dict(), tmp_path / "model.pth")
    loaded = load_checkpoint(tmp_path / "model.pth", 3, builder=tiny_builder)
    assert not loaded.training and torch.equal(loaded.classifier.weight, trained.classifier.weight)


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "does not exist; expected a DenseNet-121 state_dict"),
        (b"not a checkpoint", "not a readable PyTorch file"),
        ([torch.zeros(2)], "holds a list, not a state_dict of tensors"),
        ({"classifier.weight": RunsCode()}, "holds code or objects that weights_only loading refuses"),
        ({"features.weight": torch.zeros(8, 4)}, "not a Sequential state_dict"),
        ("classes", "its classifier has 3 outputs but classes_number=2; expected them to match"),
    ],
)
def test_load_checkpoint_refuses_bad_files_naming_arguments_not_flags(tmp_path, capsys, content, message):
    path = tmp_path / "model.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "classes":
        torch.save(tiny_builder(3).state_dict(), path)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(InputError, match=message) as caught:
        load_checkpoint(path, 2, builder=tiny_builder)
    assert "--" not in str(caught.value) and "ran code" not in capsys.readouterr().out


def test_train_refuses_a_class_count_that_does_not_match_the_dataset(tmp_path):
    for split in ("train", "val"):
        for digit in ("4", "9"):
            folder = tmp_path / split / digit
            folder.mkdir(parents=True)
            for path in sorted((DIGITS_DIR / "train" / digit).glob("*.png"))[:2]:
                (folder / path.name).write_bytes(path.read_bytes())
    with pytest.raises(InputError, match="2 classes in train/ but classes_number=10; expected them to match"):
        train(tmp_path, image_size=16, classes_number=10, progress=False)
