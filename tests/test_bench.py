"""The method comparison: its table, its bench file, and a real two-method bench that resumes."""

from __future__ import annotations

import json

import pytest

from fashionssl import bench as bench_module
from fashionssl.bench import bench, comparison_table, has_label_fractions, label_efficiency_table, load_bench_file
from fashionssl.cli import main
from fashionssl.config import make_config
from fashionssl.errors import UserError
from fashionssl.label_efficiency import LabelFractions

ROW = {"name": "simclr", "linear_probe_test_acc": 0.9012, "knn_test_acc": 0.8567, "eval_seconds": 55.2,
       "pretrain_seconds": 600.0, "median_epoch_seconds": 19.74, "images_per_s": 2800.4}


def test_table_formats_each_column_and_marks_label_users():
    table = comparison_table([
        {"name": "raw pixels (784-d)", "linear_probe_test_acc": 0.8422, "knn_test_acc": 0.8178, "eval_seconds": 20.4},
        ROW,
        {**ROW, "name": "supervised", "uses_labels": True},
        {**ROW, "name": "clip", "uses_labels": True, "label_use": "captions derive from labels",
         "zero_shot_test_acc": 0.8125},
    ]).splitlines()
    assert len(table) == 6
    assert table[2] == "| raw pixels (784-d) | 84.22% | 81.78% |  |  |  |  | 20 s |"
    assert table[3] == "| simclr | 90.12% | 85.67% |  | 10.0 min | 19.7 s | 2,800 | 55 s |"
    assert table[4].startswith("| supervised (uses labels) | 90.12% | 85.67% |  |")
    assert table[5].startswith("| clip (captions derive from labels) | 90.12% | 85.67% | 81.25% |")


def fractions_row(name, probe, scratch, finetune=None):
    by_fraction = {}
    for fraction, p, s in zip(("0.01", "1"), probe, scratch):
        by_fraction[fraction] = {"probe_test_acc": p, "scratch_test_acc": s}
        if finetune:
            by_fraction[fraction]["finetune_test_acc"] = finetune
    return {**ROW, "name": name, "encoder": "cnn-bn", "label_fractions": by_fraction}


def test_label_efficiency_table_gives_a_shared_scratch_baseline_one_row():
    rows = [{"name": "raw pixels (784-d)"}, fractions_row("simclr", (0.83, 0.9), (0.82, 0.88), finetune=0.84),
            fractions_row("supervised", (0.86, 0.915), (0.82, 0.88)) | {"uses_labels": True}]
    table = label_efficiency_table(rows).splitlines()
    assert table == ["| encoder | classifier | 1% labels | 100% labels |", "|---|---|---:|---:|",
                     "| simclr | linear probe (frozen) | 83.00% | 90.00% |",
                     "| simclr | fine-tuned | 84.00% | 84.00% |",
                     "| supervised (uses labels) | linear probe (frozen) | 86.00% | 91.50% |",
                     "| cnn-bn, random init | from scratch | 82.00% | 88.00% |"]
    rows[2]["label_fractions"]["1"]["scratch_test_acc"] = 0.87  # another architecture or seed: one row each
    table = label_efficiency_table(rows).splitlines()
    assert "| simclr | from scratch | 82.00% | 88.00% |" in table
    assert "| supervised (uses labels) | from scratch | 82.00% | 87.00% |" in table
    assert not any("random init" in line for line in table)


def test_results_hold_label_fractions_only_for_the_same_protocol_fractions_and_fine_tuning():
    settings = LabelFractions((0.01, 1.0), finetune=True)
    results = {"label_fractions_protocol": settings.protocol(),
               "label_fractions": fractions_row("simclr", (0.8, 0.9), (0.8, 0.9), finetune=0.85)["label_fractions"]}
    assert has_label_fractions(results, settings)
    assert not has_label_fractions(results, LabelFractions((0.01,), finetune=True))
    assert not has_label_fractions(results, LabelFractions((0.01, 1.0), finetune=True, steps=10))
    assert has_label_fractions(results, LabelFractions((0.01, 1.0)))  # fine-tuning numbers extra: still fine
    del results["label_fractions"]["1"]["finetune_test_acc"]
    assert not has_label_fractions(results, settings)
    assert not has_label_fractions({}, settings)


def test_bench_file_reads_methods_shared_keys_and_per_method_tables(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text('methods = ["simclr", "byol"]\nepochs = 3\n[per_method.byol]\nlr = 1e-3\n')
    assert load_bench_file(path) == (["simclr", "byol"], {"epochs": 3}, {"byol": {"lr": 1e-3}})


@pytest.mark.parametrize("text, message", [
    ("epochz = 3\n", "unknown key(s) epochz"),
    ("[per_method.nope]\nlr = 1.0\n", "[per_method.nope]: unknown method"),
    ("per_method = {simclr = 3}\n", "per_method.simclr must be a table"),
])
def test_bench_file_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bench.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_bench_file(path)


def test_bad_per_method_value_fails_before_any_training(tmp_path, small_data_dir):
    path = tmp_path / "bench.toml"
    path.write_text('[per_method.byol]\nlr = -1.0\n')
    with pytest.raises(UserError, match="lr must be > 0"):
        bench(tmp_path / "out", ["simclr", "byol"], path, {"data_dir": str(small_data_dir), "val_size": 500})
    assert not (tmp_path / "out").exists()


def computed_again(cfg):
    raise AssertionError("the baselines were computed again")


def test_cli_bench_runs_two_methods_and_a_rerun_reuses_them(tmp_path, small_data_dir, capsys, monkeypatch):
    out = tmp_path / "bench"
    args = ["bench", "--methods", "simclr,rotation", "--epochs", "1", "--batch-size", "256", "--train-subset", "512",
            "--encoder", "cnn", "--val-size", "500", "--no-report", "--data-dir", str(small_data_dir), "--out", str(out)]
    assert main(args) == 0
    table = "\n".join(line for line in capsys.readouterr().out.splitlines() if line.startswith("|"))
    for name in ("raw pixels", "untrained cnn (seed 0)", "| simclr |", "| rotation |"):
        assert name in table
    saved = json.loads((out / "comparison.json").read_text())
    assert [r["name"] for r in saved["rows"]][2:] == ["simclr", "rotation"]
    assert saved["budget"]["epochs"] == 1 and saved["budget"]["knn_every"] == 0
    assert (out / "comparison.md").read_text().endswith(table + "\n")
    checkpoint_time = (out / "simclr" / "checkpoint.pt").stat().st_mtime_ns
    monkeypatch.setattr(bench_module, "baseline_rows", computed_again)
    assert main(args) == 0  # nothing retrained or probed again: results.json and baselines.json read back
    assert (out / "simclr" / "checkpoint.pt").stat().st_mtime_ns == checkpoint_time
    rerun = capsys.readouterr().out.splitlines()
    assert "\n".join(line for line in rerun if line.startswith("|")) == table

    fractions = ["--label-fractions", "0.01", "--finetune-steps", "2"]
    assert main(args + fractions) == 0  # evaluated again for the label fractions, not retrained
    assert (out / "simclr" / "checkpoint.pt").stat().st_mtime_ns == checkpoint_time
    text = capsys.readouterr().out
    assert "Label efficiency (training subset:" in text and "| encoder | classifier | 1% labels |" in text
    assert "| cnn, random init | from scratch |" in text and "| rotation | linear probe (frozen) |" in text
    results_time = (out / "rotation" / "results.json").stat().st_mtime_ns
    assert main(args + fractions) == 0  # the numbers are there now: nothing evaluated again
    assert (out / "rotation" / "results.json").stat().st_mtime_ns == results_time
    assert "1% labels" in (out / "comparison.md").read_text()


def test_baselines_are_kept_for_their_settings_only(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench_module, "baseline_rows", lambda cfg: calls.append(cfg.encoder) or [{"name": cfg.encoder}])
    cfg = make_config(None, encoder="cnn")
    assert bench_module.saved_baseline_rows(tmp_path, cfg) == [{"name": "cnn"}]
    assert bench_module.saved_baseline_rows(tmp_path, cfg) == [{"name": "cnn"}]
    assert bench_module.saved_baseline_rows(tmp_path, make_config(None, encoder="cnn-bn")) == [{"name": "cnn-bn"}]
    (tmp_path / "baselines.json").write_text("{not json")
    assert bench_module.saved_baseline_rows(tmp_path, make_config(None, encoder="cnn-bn")) == [{"name": "cnn-bn"}]
    assert calls == ["cnn", "cnn-bn", "cnn-bn"]
