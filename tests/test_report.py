"""The HTML report (rendered from a real run and opened in headless Chromium), the augmentation
preview and the export round trip through README's loading snippet."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from fashionssl.augment import make_config
from fashionssl.cli import main
from fashionssl.config import Config
from fashionssl.encoders import ConvNet
from fashionssl import report as report_module
from fashionssl.probe import confusion_matrix, extract_features
from fashionssl.evaluate import load_trained
from fashionssl.report import (Page, Run, attention_figure, label_efficiency_figure, label_efficiency_section,
                               nearest_neighbours, pick_per_class, seeds_figure, summary, unique_names, write_report)

README = Path(__file__).resolve().parents[1] / "README.md"
CHROMIUM = shutil.which("chromium")


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(predictions, labels, num_classes=3) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_pick_per_class_takes_distinct_classes_then_repeats():
    labels = torch.arange(30) % 3
    picked = pick_per_class(labels, 5, seed=1)
    assert labels[picked].tolist() == [0, 1, 2, 0, 1]
    assert len(set(picked.tolist())) == 5
    assert torch.equal(picked, pick_per_class(labels, 5, seed=1))
    assert not torch.equal(picked, pick_per_class(labels, 5, seed=2))


def test_runs_that_share_a_folder_name_are_named_by_their_parents(tmp_path):
    """A bench over seeds holds simclr/seed-0 and rotation/seed-0: the report must tell them apart
    by method, not as seed-0 and seed-0-2."""
    bench = tmp_path / "bench"
    paths = [bench / "simclr" / "seed-0", bench / "rotation" / "seed-0", tmp_path / "other", bench / "simclr" / "seed-1"]
    assert unique_names(paths) == ["simclr-seed-0", "rotation-seed-0", "other", "seed-1"]
    assert unique_names([tmp_path / "a" / "run", tmp_path / "b" / "run"]) == ["a-run", "b-run"]
    assert unique_names([tmp_path / "run", tmp_path / "run"]) == ["run", "run-2"]


def test_nearest_neighbours_is_cosine_and_ignores_length():
    bank = torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    similarity, index = nearest_neighbours(bank, torch.tensor([[0.0, 2.0], [3.0, 3.0]]), k=2)
    assert index.tolist() == [[1, 2], [2, 0]]
    assert similarity[:, 0].tolist() == pytest.approx([1.0, 1.0])
    assert similarity[0, 1].item() == pytest.approx(2 ** -0.5)


def test_summary_marks_label_use_and_shows_zero_shot_only_when_present(tmp_path):
    def run(name, method, uses_labels, results):
        trained = SimpleNamespace(config=Config(method=method), model=SimpleNamespace(uses_labels=uses_labels), epochs=3)
        return Run(name, tmp_path / name, trained, [], results)

    page = Page(tmp_path)
    summary(page, [run("a", "simclr", False, {"linear_probe_test_acc": 0.9, "knn_test_acc": 0.85}),
                   run("b", "supervised", True, {"linear_probe_test_acc": 0.93, "knn_test_acc": 0.92,
                                                 "zero_shot_test_acc": 0.5})])
    text = "".join(page.parts)
    assert "<th>zero-shot (test)</th>" in text and "50.00%" in text
    assert "supervised (uses labels)" in text and "simclr (uses labels)" not in text
    assert "<td>90.00%</td><td>85.00%</td><td>-</td>" in text  # run a has no zero-shot number
    page = Page(tmp_path)
    summary(page, [run("a", "simclr", False, None)])
    assert "zero-shot" not in "".join(page.parts) and "no results.json" in "".join(page.parts)


def test_label_efficiency_figure_draws_a_shared_scratch_baseline_once():
    def results(scratch):
        return {"0.01": {"n_labels": 650, "probe_test_acc": 0.83, "scratch_test_acc": scratch},
                "1": {"n_labels": 60000, "probe_test_acc": 0.9, "finetune_test_acc": 0.89, "scratch_test_acc": 0.88}}

    labels = lambda fig: [line.get_label() for line in fig.axes[0].get_lines()]  # noqa: E731
    assert labels(label_efficiency_figure([("a", results(0.82))])) == [
        "linear probe (frozen)", "fine-tuned", "from scratch"]
    assert labels(label_efficiency_figure([("a", results(0.82)), ("b", results(0.82))])) == [
        "a: linear probe (frozen)", "a: fine-tuned", "b: linear probe (frozen)", "b: fine-tuned",
        "from scratch (every run)"]
    assert len(labels(label_efficiency_figure([("a", results(0.82)), ("b", results(0.81))]))) == 6


def test_seeds_figure_draws_mean_and_one_std_either_side_and_every_seed():
    fig = seeds_figure({"raw pixels": {"linear probe": [0.84]},
                        "simclr": {"linear probe": [0.90, 0.92], "kNN": [0.85, 0.86, 0.87]}})
    probe, knn = fig.axes
    assert [t.get_text() for t in probe.get_yticklabels()] == ["raw pixels", "simclr"]
    bars = lambda ax: [(c.lines[0].get_xdata()[0], c.lines[2][0].get_segments()[0][:, 0])  # noqa: E731
                       for c in ax.containers]
    (raw_mean, raw_bar), (simclr_mean, simclr_bar) = bars(probe)
    assert raw_mean == pytest.approx(84) and raw_bar == pytest.approx([84, 84])  # one seed: no spread
    assert simclr_mean == pytest.approx(91) and simclr_bar == pytest.approx([91 - 2 ** 0.5, 91 + 2 ** 0.5])
    [(knn_mean, knn_bar)] = bars(knn)  # raw pixels have no kNN here: nothing drawn for them
    assert knn_mean == pytest.approx(86) and knn_bar == pytest.approx([85, 87])
    seed_dots = [line.get_xdata().tolist() for line in knn.get_lines() if line.get_marker() == "o"]
    assert seed_dots == [pytest.approx([85, 86, 87])]


def test_label_efficiency_section_says_how_to_get_it_when_no_run_has_it(tmp_path):
    page = Page(tmp_path)
    trained = SimpleNamespace(config=Config(), model=SimpleNamespace(uses_labels=False), epochs=3)
    label_efficiency_section(page, [Run("a", tmp_path / "a", trained, [], {"linear_probe_test_acc": 0.9})])
    text = "".join(page.parts)
    assert ">Label efficiency</h2>" in text and "--label-fractions 0.01,0.1,1.0" in text
    assert page.files == []


def test_attention_figure_has_image_mean_and_one_panel_per_head():
    fig = attention_figure(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.rand(2, 3, 7, 7))
    assert len(fig.axes) == 2 * (1 + 1 + 3)


def fake_cls_attention(self, x):
    """Stands in for a ViT's CLS attention: three 'heads' of 3x3 maps from the conv features."""
    return self.features(x)[:, :3].softmax(1)


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory):
    """A report of two copies of the trained run, both named like it in folders of their own (the
    report must tell them apart, by those folders' names): the first with results holding a
    confusion matrix, the second with results that lack it but have a zero-shot number. Both backbones get a cls_attention, so the attention section is
    drawn, and the t-SNE map takes 300 points to keep the test short."""
    _, run_dir = trained_run
    copies = [tmp_path_factory.mktemp(f"copy{i}") / run_dir.name for i in range(2)]
    for copy in copies:
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("results.json", "report", "export"))
    confusion = (torch.eye(10, dtype=torch.long) * 90 + 1).tolist()
    label_fractions = {"0.01": {"n_labels": 650, "probe_test_acc": 0.83, "finetune_test_acc": 0.8312,
                                "scratch_test_acc": 0.82},
                       "1": {"n_labels": 60000, "probe_test_acc": 0.9, "scratch_test_acc": 0.88}}
    (copies[0] / "results.json").write_text(json.dumps(
        {"linear_probe_test_acc": 0.91, "knn_test_acc": 0.88, "linear_probe_confusion": confusion,
         "label_fractions": label_fractions, "label_fractions_protocol": "stratified subsets"}))
    (copies[1] / "results.json").write_text(json.dumps(
        {"linear_probe_test_acc": 0.8, "knn_test_acc": 0.7, "zero_shot_test_acc": 0.5}))
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ConvNet, "cls_attention", fake_cls_attention, raising=False)
        mp.setattr(report_module, "TSNE_POINTS", 300)
        html = write_report(copies, out, over_seeds={"simclr": {"linear probe": [0.9, 0.92], "kNN": [0.85, 0.86]}})
    return html, [f"{copy.parent.name}-{copy.name}" for copy in copies]


def test_report_writes_every_figure_and_embeds_each(report):
    html_path, (first, second) = report
    out = html_path.parent
    expected = ["curves.png", "knn.png", "label-efficiency.png", "seeds.png"]
    expected += [f"{run}-{kind}.png" for run in (first, second)
                 for kind in ("tsne", "retrieval", "augmentations", "attention")]
    expected.append(f"{first}-confusion.png")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(expected)
    text = html_path.read_text()
    for png in expected:
        assert (out / png).stat().st_size > 1000
        assert f'data-file="{png}"' in text
    assert text.count('src="data:image/png;base64,') == len(expected)
    assert f"{second}-confusion.png" not in text and "has no linear_probe_confusion" in text
    assert "<th>zero-shot (test)</th>" in text and "91.00%" in text and "50.00%" in text
    assert "of 300 random test images" in text
    assert "<td>0.01</td><td>650</td><td>83.00%</td><td>83.12%</td><td>82.00%</td>" in text
    assert "<td>60,000</td><td>90.00%</td><td>-</td><td>88.00%</td>" in text  # no fine-tuning at 1
    assert "Protocol: stratified subsets." in text
    assert ">Over seeds</h2>" in text and "over up to 2 seeds" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_opens_in_headless_chromium_with_every_image_decoded(report, tmp_path):
    html_path, (first, second) = report
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1200,2000"]
    url = html_path.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=60).stdout
    figures = len(list(html_path.parent.glob("*.png")))
    assert re.search(r'<body[^>]*data-figures="decoded (\d+)"', dom).group(1) == str(figures)
    for heading in ("Summary", "Training curves", "kNN monitor", "Label efficiency", f"Run {first}", f"Run {second}", "Embedding map",
                    "Nearest neighbours", "Augmented views", "Linear-probe confusion matrix", "CLS attention"):
        assert f">{heading}</h" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=60)
    assert shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (1200, 2000)


def test_augment_preview_draws_images_by_views_grid(tmp_path, small_data_dir):
    out = tmp_path / "preview.png"
    config = tmp_path / "recipe.toml"
    config.write_text('augment = "seed"\n[augment_options]\ncrop_scale = [0.5, 1.0]\n')
    argv = ["augment-preview", "--config", str(config), "--aug", "blur_p=0.0", "--images", "3", "--views", "4",
            "--out", str(out), "--data-dir", str(small_data_dir)]
    assert main(argv) == 0
    with Image.open(out) as image:
        assert image.size == (550, 360)  # figsize (1.1 * (4 + 1), 1.2 * 3) inches at 100 dpi
    assert main(["augment-preview", "--aug", "nosuch=1", "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_augment_preview_of_the_none_preset_shows_the_original_in_every_column(tmp_path, small_data_dir):
    out = tmp_path / "none.png"
    assert main(["augment-preview", "--augment", "none", "--images", "1", "--views", "2", "--out", str(out),
                 "--data-dir", str(small_data_dir)]) == 0
    pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    third = pixels.shape[1] // 3  # original | view 1 | view 2, equal columns
    columns = [pixels[20:, i * third:(i + 1) * third] for i in range(3)]  # below the titles
    assert make_config("none").crop_scale == (1.0, 1.0)
    assert np.abs(columns[1] - columns[2]).mean() < 1.0
    assert np.abs(columns[0] - columns[1]).mean() < 1.0


def readme_snippet() -> str:
    text = README.read_text()
    return re.search(r"<!-- export-snippet -->\n```python\n(.*?)```", text, re.S).group(1)


def test_export_round_trip_through_the_readme_snippet(trained_run, small_data_dir, tmp_path):
    cfg, run_dir = trained_run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out), "--data-dir", str(small_data_dir)]) == 0
    snippet = readme_snippet()
    assert 'export_dir = Path("runs/r18/export")' in snippet
    namespace: dict = {}
    exec(snippet.replace("runs/r18/export", str(out)), namespace)

    from fashionssl.data import load_dataset
    data = load_dataset(small_data_dir, cfg.val_size)
    trained = load_trained(run_dir)
    expected = extract_features(trained.model.backbone, data.test.images, trained.augmentation(),
                                torch.device("cpu")).numpy()
    assert namespace["info"]["encoder"] == cfg.encoder and namespace["info"]["feature_dim"] == expected.shape[1]
    np.testing.assert_allclose(namespace["embed"](data.test.images).numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(namespace["embeddings"], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(namespace["labels"], data.test.labels.numpy())
    for split in ("train", "val"):
        embeddings, labels = np.load(out / f"embeddings_{split}.npy"), np.load(out / f"labels_{split}.npy")
        assert embeddings.shape == (len(getattr(data, split)), expected.shape[1]) and embeddings.dtype == np.float32
        np.testing.assert_array_equal(labels, getattr(data, split).labels.numpy())
