"""Tests for fashionssl.label_efficiency: stratified, nested, seeded label subsets; fraction parsing
and its CLI errors; fine-tuning from a random initialisation; training on class probabilities, as
the low-label study's distillation does; FixMatch's loss by known answers and its training on a
small pool; and one small real run of `evaluate --label-fractions --finetune --fixmatch` that must
produce every result key."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fashionssl.cli import label_fractions_from_args, main, parser
from fashionssl.data import FASHION_MNIST_CLASSES, Split, load_dataset
from fashionssl.encoders import build_encoder
from fashionssl.augment import make_config, normalize
from fashionssl.errors import UserError
from fashionssl.evaluate import evaluate_checkpoint, results_table
from fashionssl.label_efficiency import (
    FixMatch,
    LabelFractions,
    classifier_accuracy,
    label_subsets,
    parse_fractions,
    reinitialised,
    stratified_subset,
    train_classifier,
    train_fixmatch,
)
from fashionssl.losses import distribution_aligned, fixmatch_loss
from fashionssl.methods.supervised import Supervised

# No single_thread here: the shared `trained_run` may be built by this module, and test_train checks
# that a rerun with the default thread count reproduces it bit for bit.


def balanced_labels(per_class: int, seed: int = 0) -> torch.Tensor:
    """Labels shaped like Fashion-MNIST's training split after carving validation: equal classes, shuffled."""
    labels = torch.arange(10).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_one_percent_of_the_training_split_is_55_per_class():
    labels = balanced_labels(5500)  # 55,000 training images once 5,000 are carved for validation
    subset = stratified_subset(labels, 0.01, seed=0)
    assert len(subset) == 550 and len(set(subset.tolist())) == 550
    assert torch.bincount(labels[subset], minlength=10).tolist() == [55] * 10
    assert torch.bincount(labels[stratified_subset(labels, 0.1, seed=0)], minlength=10).tolist() == [550] * 10


def test_subsets_are_nested_seeded_and_the_whole_split_at_one():
    labels = balanced_labels(300)
    small, large = (set(stratified_subset(labels, f, seed=3).tolist()) for f in (0.01, 0.1))
    assert small < large
    assert stratified_subset(labels, 0.1, seed=3).tolist() == stratified_subset(labels, 0.1, seed=3).tolist()
    assert set(stratified_subset(labels, 0.1, seed=4).tolist()) != large
    assert stratified_subset(labels, 1.0, seed=3).tolist() == list(range(len(labels)))


def test_subsets_keep_a_minimum_per_class():
    labels = balanced_labels(500)  # the 5,000 validation images
    assert len(stratified_subset(labels, 0.001, seed=0)) == 10  # at least one per class by default
    assert torch.bincount(labels[stratified_subset(labels, 0.001, seed=0)]).tolist() == [1] * 10
    val = stratified_subset(labels, 0.01, seed=0, minimum=100)  # 1% would be 50: 10 per class instead
    assert torch.bincount(labels[val], minlength=10).tolist() == [10] * 10


@pytest.mark.parametrize("text, expected", [("0.01,0.1,1.0", (0.01, 0.1, 1.0)), (" 1, 0.5 ,0.5,", (0.5, 1.0)),
                                            ("1", (1.0,))])
def test_parse_fractions(text, expected):
    assert parse_fractions(text) == expected


@pytest.mark.parametrize("text", ["0", "1.5", "-0.1", "abc", "", " , ", "nan", "inf", "0.1,,x"])
def test_bad_fractions_are_user_errors(text):
    with pytest.raises(UserError, match="label fraction"):
        parse_fractions(text)


@pytest.mark.parametrize("argv, words", [
    (["--label-fractions", "0"], ["label fraction", "(0, 1]"]),
    (["--label-fractions", "2"], ["2.0", "(0, 1]"]),
    (["--label-fractions", "ten"], ["'ten'", "not a number"]),
    (["--label-fractions", ""], ["no label fractions"]),
    (["--finetune"], ["--finetune", "--label-fractions"]),
    (["--finetune-steps", "100"], ["--finetune-steps", "--label-fractions"]),
    (["--label-fractions", "0.1", "--finetune-steps", "0"], ["steps", "--finetune-steps"]),
    (["--fixmatch"], ["--fixmatch", "--label-fractions"]),
    (["--label-fractions", "0.1", "--fixmatch-steps", "10"], ["--fixmatch-steps", "add --fixmatch"]),
    (["--label-fractions", "0.1", "--fixmatch", "--fixmatch-steps", "0"], ["fixmatch_steps", "--fixmatch-steps"]),
    (["--label-seed", "0"], ["--label-seed", "--label-fractions"]),
    (["--label-fractions", "0.1", "--label-seed", "-1"], ["seed", "-1", "--label-seed"]),
], ids=["zero", "above-one", "not-a-number", "empty", "finetune-alone", "steps-alone", "zero-steps", "fixmatch-alone",
        "fixmatch-steps-alone", "zero-fixmatch-steps", "label-seed-alone", "negative-label-seed"])
def test_cli_bad_label_fractions_exit_2_with_one_line(argv, words, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fashionssl: error: ")
    for word in words:
        assert word in err[0]


def test_reinitialised_copy_is_fresh_seeded_and_leaves_the_original():
    torch.manual_seed(0)
    original = build_encoder("cnn-bn")
    before = {k: v.clone() for k, v in original.state_dict().items()}
    state = torch.random.get_rng_state()
    a, b = reinitialised(original, seed=1), reinitialised(original, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    for key, value in original.state_dict().items():
        torch.testing.assert_close(value, before[key])
        torch.testing.assert_close(a.state_dict()[key], b.state_dict()[key])
    assert not torch.allclose(a.features[0].weight, original.features[0].weight)


@pytest.fixture(scope="module")
def small_data(small_data_dir):
    return load_dataset(small_data_dir, val_size=500)


def test_training_from_scratch_changes_the_weights_and_beats_chance(small_data):
    backbone = reinitialised(build_encoder("cnn-bn"), seed=0)
    before = [p.detach().clone() for p in backbone.parameters()]
    train = Split(small_data.train.images[:500], small_data.train.labels[:500])
    aug = make_config("default", crop_scale=(0.5, 1.0), blur_p=0.0)
    model = train_classifier(backbone, train, FASHION_MNIST_CLASSES, aug, torch.device("cpu"),
                             LabelFractions((1.0,), steps=20, batch_size=64))
    assert model[0] is backbone and not model.training
    assert all(not torch.equal(p, q) for p, q in zip(before, backbone.parameters()))
    test = Split(small_data.test.images[:500], small_data.test.labels[:500])
    assert classifier_accuracy(model, test, aug, torch.device("cpu")) > 0.4  # chance: 0.1; measured 0.69


class ConstantTeacher(torch.nn.Module):
    """Calls every image class 3, whatever its label."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 10 * torch.nn.functional.one_hot(torch.full((len(images),), 3), 10).float()


def test_distillation_learns_the_teachers_labels_not_the_true_ones(small_data, benchmark_script):
    distill = benchmark_script("bench_low_label").distill  # SimCLRv2's distillation, a variant of the low-label study
    images = small_data.train.images[:500]
    aug = make_config("default", crop_scale=(0.5, 1.0), blur_p=0.0)
    student = distill(ConstantTeacher(), reinitialised(build_encoder("cnn-bn"), seed=0), images, FASHION_MNIST_CLASSES,
                      aug, aug, torch.device("cpu"), LabelFractions((1.0,), steps=20, batch_size=64))
    test = Split(small_data.test.images[:500], torch.full((500,), 3))
    assert classifier_accuracy(student, test, aug, torch.device("cpu")) > 0.95  # 10% of the true labels are 3


def test_the_head_starts_from_a_given_layer(small_data):
    head = torch.nn.Linear(1152, 10)
    train = Split(small_data.train.images[:64], small_data.train.labels[:64])
    aug = make_config("default", crop_scale=(0.5, 1.0), blur_p=0.0)
    settings = LabelFractions((1.0,), steps=1, batch_size=64, lr=1e-12)  # one step that barely moves it
    model = train_classifier(build_encoder("cnn-bn"), train, FASHION_MNIST_CLASSES, aug, torch.device("cpu"), settings,
                             head=head)
    torch.testing.assert_close(model[1].weight, head.weight)
    torch.testing.assert_close(model[1].bias, head.bias)
    fresh = train_classifier(build_encoder("cnn-bn"), train, FASHION_MNIST_CLASSES, aug, torch.device("cpu"), settings)
    assert not torch.allclose(fresh[1].weight, head.weight)


def test_recalibrated_batchnorm_holds_the_statistics_of_the_images(small_data, benchmark_script):
    recalibrated = benchmark_script("bench_low_label").recalibrated
    classifier = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    images = small_data.train.images[:1500]  # two batches of the recalibration: 1024 and 476
    aug = make_config("default")
    model = recalibrated(classifier, images, aug, torch.device("cpu"))
    assert not model.training and classifier[1].running_mean.abs().sum() == 0  # the original is untouched
    outputs = [classifier[0](normalize(images[s:s + 1024], aug)) for s in (0, 1024)]
    expected = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(0)  # the average of the batches' means
    torch.testing.assert_close(model[1].running_mean, expected, rtol=1e-4, atol=1e-5)


def test_supervised_takes_class_probabilities_as_labels():
    model = Supervised(build_encoder("cnn-bn"), FASHION_MNIST_CLASSES)
    views, labels = [torch.randn(8, 1, 28, 28)], torch.arange(8)
    hard_loss, hard_logs = model(views, labels)
    soft_loss, soft_logs = model(views, torch.nn.functional.one_hot(labels, 10).float())
    torch.testing.assert_close(soft_loss, hard_loss)
    assert soft_logs["train_acc"] == hard_logs["train_acc"]


def test_fixmatch_loss_learns_confident_pseudo_labels_only():
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 10.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    loss, confident = fixmatch_loss(weak, strong, threshold=0.95)
    # images 0 and 2 are confident (p = 0.99991) in classes 0 and 2; image 1 (p = 1/3) adds zero,
    # and the mean is over all three: (log 3 + log 3 + 0) / 3
    torch.testing.assert_close(loss, torch.tensor(2 * math.log(3) / 3))
    torch.testing.assert_close(confident, torch.tensor(2 / 3))
    loss.backward()
    assert weak.grad is None  # the pseudo-labels are targets, not paths for the gradient
    torch.testing.assert_close(strong.grad[1], torch.zeros(3))
    torch.testing.assert_close(strong.grad[0], (torch.full((3,), 1 / 3) - torch.tensor([1.0, 0, 0])) / 3)
    below, none = fixmatch_loss(weak, strong, threshold=1.0)  # nothing reaches certainty: nothing to learn
    assert below.item() == 0 and none.item() == 0


def test_distribution_alignment_rescales_probabilities_by_target_over_mean():
    probabilities = torch.tensor([[0.5, 0.3, 0.2]])
    mean, target = torch.tensor([0.5, 0.25, 0.25]), torch.full((3,), 1 / 3)
    aligned = torch.softmax(distribution_aligned(probabilities.log(), mean, target), 1)
    # p * target / mean = [1, 1.2, 0.8] / 3, renormalised: [1, 1.2, 0.8] / 3
    torch.testing.assert_close(aligned, torch.tensor([[1.0, 1.2, 0.8]]) / 3)


def test_fixmatch_alignment_pulls_a_one_sided_classifier_to_the_labelled_classes():
    """A classifier that favours class 0 everywhere: its running mean after one batch (from zero, so
    that batch's mean times 1 - momentum: the same proportions) cancels the preference, and the
    pseudo-label distribution becomes the labelled images' class frequencies; the image that leans
    least to class 0 is labelled 1."""
    backbone = torch.nn.Identity()
    backbone.feature_dim = 2
    model = FixMatch(backbone, ("a", "b"), class_prior=torch.tensor([0.5, 0.5]))
    logits = torch.tensor([[3.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    aligned = torch.softmax(model.aligned(logits), 1)
    mean = torch.softmax(logits, 1).mean(0)
    torch.testing.assert_close(model.prediction_average / (1 - 0.999), mean)  # the first batch's mean
    torch.testing.assert_close(aligned, torch.softmax(logits, 1) / mean / (torch.softmax(logits, 1) / mean).sum(1, True))
    assert aligned.argmax(1).tolist() == [0, 1, 0]
    model.aligned(logits)  # the same batch again: the proportions stay that batch's
    torch.testing.assert_close(model.prediction_average / (1 - 0.999 ** 2), mean)
    empty = distribution_aligned(logits, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert torch.isfinite(empty).all()  # an empty class or a zero mean: a large shift, not inf or NaN


def test_fixmatch_with_alignment_trains_on_other_pseudo_labels(small_data):
    """A head confident in class 3 for every image: without alignment every pseudo-label is 3; with
    it, the labelled images' uniform classes pull them apart, so the weights end elsewhere."""
    train = Split(small_data.train.images[:100], small_data.train.labels[:100])
    settings = LabelFractions((0.1,), fixmatch=True, fixmatch_steps=3)
    head = torch.nn.Linear(1152, 10)
    head.bias.data = 10 * torch.nn.functional.one_hot(torch.tensor(3), 10).float()

    def fixmatch(align: bool) -> torch.nn.Sequential:
        backbone = reinitialised(build_encoder("cnn-bn"), seed=0)
        return train_fixmatch(backbone, head, train, small_data.train.images[100:612], make_config("default"),
                              torch.device("cpu"), settings, align=align)

    plain, aligned = fixmatch(False), fixmatch(True)
    assert torch.isfinite(aligned[1].weight).all() and not torch.equal(plain[1].weight, aligned[1].weight)


def test_fixmatch_trains_the_encoder_on_the_unlabelled_pool(small_data):
    train = Split(small_data.train.images[:100], small_data.train.labels[:100])
    aug = make_config("default")
    settings = LabelFractions((0.1,), fixmatch=True, fixmatch_steps=30)

    def fixmatch(pool: torch.Tensor) -> torch.nn.Sequential:
        backbone = reinitialised(build_encoder("cnn-bn"), seed=0)
        head = torch.nn.Linear(1152, 10)
        head.bias.data = 10 * torch.nn.functional.one_hot(torch.tensor(3), 10).float()  # confident from the start
        return train_fixmatch(backbone, head, train, pool, aug, torch.device("cpu"), settings)

    model = fixmatch(small_data.train.images[100:2100])
    assert not model.training
    test = Split(small_data.test.images[:500], small_data.test.labels[:500])
    assert classifier_accuracy(model, test, aug, torch.device("cpu")) > 0.3  # chance: 0.1; measured 0.56 (Intel Xeon)
    other = fixmatch(small_data.train.images[2100:])  # the same labelled images, another pool
    assert not torch.equal(model[1].weight, other[1].weight)


def test_evaluate_with_label_fractions_writes_every_key(trained_run, tmp_path):
    _, run_dir = trained_run
    settings = LabelFractions((1.0, 0.1), finetune=True, steps=5, batch_size=32, fixmatch=True, fixmatch_steps=3)
    results = evaluate_checkpoint(run_dir, out=tmp_path / "results.json", label_fractions=settings)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "linear_probe_test_acc" in results and "knn_test_acc" in results  # the existing keys stay
    assert "validation subset" in results["label_fractions_protocol"]
    by_fraction = results["label_fractions"]
    assert list(by_fraction) == ["0.1", "1"]
    for row in by_fraction.values():
        assert set(row) == {"n_train_labels", "n_val_labels", "n_labels", "probe_test_acc", "probe_val_acc",
                            "weight_decay", "finetune_val_acc", "finetune_test_acc", "scratch_val_acc",
                            "scratch_test_acc", "fixmatch_val_acc", "fixmatch_test_acc", "fixmatch_scratch_val_acc",
                            "fixmatch_scratch_test_acc", "seconds"}
        assert all(0 <= row[k] <= 1 for k in row if k.endswith("_acc"))
    # the small data: 2,500 training and 500 validation images
    assert (by_fraction["0.1"]["n_train_labels"], by_fraction["0.1"]["n_val_labels"]) == (250, 100)
    assert by_fraction["0.1"]["n_labels"] == 350
    assert (by_fraction["1"]["n_train_labels"], by_fraction["1"]["n_val_labels"]) == (2500, 500)
    # all the labels: exactly the full-label probe
    assert by_fraction["1"]["probe_test_acc"] == results["linear_probe_test_acc"]
    assert by_fraction["1"]["weight_decay"] == results["linear_probe_weight_decay"]
    table = results_table(results)
    assert "from scratch" in table and "fine-tune" in table and "FixMatch" in table
    assert f"{100 * by_fraction['0.1']['scratch_test_acc']:.2f}%" in table


def test_label_subsets_of_the_real_splits(small_data):
    train_idx, val_idx = label_subsets(small_data, 0.1, seed=0)
    assert (len(train_idx), len(val_idx)) == (250, 100)
    assert torch.bincount(small_data.val.labels[val_idx], minlength=10).min() >= 9  # stratified (classes unequal)


def test_label_seed_reaches_the_settings_and_their_protocol():
    args = parser().parse_args(["evaluate", "some-run", "--label-fractions", "0.01", "--label-seed", "2"])
    settings = label_fractions_from_args(args)
    assert settings.seed == 2 and "seed 2" in settings.protocol()  # a bench re-evaluates when the seed changes
    default = label_fractions_from_args(parser().parse_args(["evaluate", "some-run", "--label-fractions", "0.01"]))
    assert default.seed == 0


def test_fixmatch_weight_average_at_its_two_ends(small_data):
    """Momentum 0 averages nothing: the last weights; momentum 1 never moves: the starting weights,
    with the trained BatchNorm statistics either way."""
    train = Split(small_data.train.images[:64], small_data.train.labels[:64])
    settings = LabelFractions((0.1,), fixmatch=True, fixmatch_steps=3)
    head = torch.nn.Linear(1152, 10)

    def fixmatch(average: float | None) -> torch.nn.Sequential:
        backbone = reinitialised(build_encoder("cnn-bn"), seed=0)
        return train_fixmatch(backbone, head, train, small_data.train.images[64:320], make_config("default"),
                              torch.device("cpu"), settings, average=average)

    last, none_averaged, never_moved = fixmatch(None), fixmatch(0.0), fixmatch(1.0)
    for (name, value), same, start in zip(last.state_dict().items(), none_averaged.state_dict().values(),
                                          never_moved.state_dict().values(), strict=True):
        assert torch.equal(value, same), name
        if name == "1.weight":
            assert torch.equal(start, head.weight) and not torch.equal(value, head.weight)
        if "running_mean" in name:
            assert torch.equal(start, value)  # the last step's statistics, not the initial zeros
    assert not never_moved.training


def test_fixmatch_threshold_decides_which_images_get_pseudo_labels():
    """Weak logits (3, 0) give a top probability of 0.953 and (0, 0) of 0.5: at threshold 0.9 one
    image of two is confident, at 0.99 none, and then the unlabelled term is zero."""
    backbone = torch.nn.Identity()
    backbone.feature_dim = 2
    unlabelled = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    views = [torch.tensor([[1.0, 0.0]]), unlabelled, unlabelled]
    for threshold, confident in ((0.9, 0.5), (0.99, 0.0)):
        model = FixMatch(backbone, ("a", "b"), threshold=threshold)
        with torch.no_grad():
            model.classifier.weight.copy_(torch.eye(2))
            model.classifier.bias.zero_()
        loss, extras = model(views, torch.tensor([0]))
        assert extras["confident"].item() == confident
        labelled_only = torch.nn.functional.cross_entropy(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
        assert (loss.item() > labelled_only.item()) == (confident > 0)


def test_fixmatch_batches_threshold_and_monitor_follow_the_settings(small_data, monkeypatch):
    """Two unlabelled images per labelled one: weak and strong views of 64 unlabelled images beside
    32 labelled ones; the loss gets the settings' threshold; the monitor sees the classifier in eval
    mode every MONITOR_EVERY steps, training goes on in train mode, and the weights end as without it."""
    import fashionssl.label_efficiency as label_efficiency
    sizes, modes, thresholds, seen = [], [], [], []
    augment_views, loss = label_efficiency.augment.augment, label_efficiency.fixmatch_loss
    backbone = reinitialised(build_encoder("cnn-bn"), seed=0)

    def spy_augment(images, *args):
        sizes.append(len(images))
        modes.append(backbone.training)
        return augment_views(images, *args)

    monkeypatch.setattr(label_efficiency.augment, "augment", spy_augment)
    monkeypatch.setattr(label_efficiency, "fixmatch_loss",
                        lambda weak, strong, threshold: thresholds.append(threshold) or loss(weak, strong, threshold))
    monkeypatch.setattr(label_efficiency, "MONITOR_EVERY", 2)
    train = Split(small_data.train.images[:32], small_data.train.labels[:32])
    settings = LabelFractions((0.1,), fixmatch=True, fixmatch_steps=4, fixmatch_unlabelled_ratio=2,
                              fixmatch_threshold=0.9)
    head, pool = torch.nn.Linear(1152, 10), small_data.train.images[32:300]

    def fixmatch(start: torch.nn.Module, monitor=None) -> torch.nn.Sequential:
        return train_fixmatch(start, head, train, pool, make_config("default"), torch.device("cpu"), settings,
                              monitor=monitor)

    watched = fixmatch(backbone, lambda step, classifier: seen.append((step, classifier.training)))
    assert sizes == [32, 64, 64] * 4 and all(modes)  # the step after the monitor's trains in train mode
    assert thresholds == [0.9] * 4
    assert seen == [(2, False), (4, False)]
    unwatched = fixmatch(reinitialised(build_encoder("cnn-bn"), seed=0))
    for (name, value), other in zip(watched.state_dict().items(), unwatched.state_dict().values(), strict=True):
        assert torch.equal(value, other), name


@pytest.mark.parametrize("field, value", [("fixmatch_threshold", 0.0), ("fixmatch_threshold", 1.5),
                                          ("fixmatch_unlabelled_ratio", 0), ("fixmatch_unlabelled_ratio", 2.5)])
def test_fixmatch_settings_out_of_range_are_user_errors(field, value):
    with pytest.raises(UserError, match="fix LabelFractions"):
        LabelFractions((0.01,), fixmatch=True, **{field: value})


class ConfidentOnBrightImages(torch.nn.Module):
    """Class 3 at probability 0.9995 for an image brighter than the data's mean, else ten equal
    logits (class 0 by argmax, at probability 0.1)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bright = (images.flatten(1).mean(1) > 0).float()
        return 10 * bright[:, None] * torch.nn.functional.one_hot(torch.full((len(images),), 3), 10).float()


def test_pseudo_label_monitor_scores_the_confident_predictions_apart(benchmark_script):
    monitor_for = benchmark_script("bench_low_label").pseudo_label_monitor
    dark, bright = torch.zeros(100, 1, 28, 28, dtype=torch.uint8), torch.full((100, 1, 28, 28), 255, dtype=torch.uint8)
    # the bright half confident (class 3), half of it right; the dark half not confident, all right (class 0)
    pool = Split(torch.cat([dark, bright]), torch.cat([torch.zeros(100), torch.tensor([3, 5]).repeat(50)]).long())
    val = Split(dark, torch.zeros(100, dtype=torch.long))
    rows = []
    monitor = monitor_for(pool, val, 0.95, make_config("default"), torch.device("cpu"), None, rows)
    monitor(500, ConfidentOnBrightImages())
    # step, validation accuracy, confident, confident ones right, all right, largest class share of the confident
    assert rows == ["| 500 | 100.00% | 50.0% | 50.00% | 75.00% | 100.0% |"]
    monitor_for(Split(dark, torch.zeros(100, dtype=torch.long)), val, 0.95, make_config("default"),
                torch.device("cpu"), None, rows)(1000, ConfidentOnBrightImages())
    assert rows[1] == "| 1000 | 100.00% | 0.0% | - | 100.00% | 0.0% |"  # nothing confident: no accuracy of none
