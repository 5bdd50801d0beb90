"""The method comparison: its tables, its statistics over seeds, its bench file, and real two-method
benches (one seed, and two seeds) that resume."""

from __future__ import annotations

import json
import math

import pytest

from fashionssl import bench as bench_module
from fashionssl.bench import (accuracies_by_name, bench, comparison_table, has_label_fractions, label_efficiency_table,
                              load_bench_file, paired_table, parse_seeds, seeds_table, verdict)
from fashionssl.cli import main
from fashionssl.config import make_config
from fashionssl.errors import UserError
from fashionssl.label_efficiency import LabelFractions
from fashionssl.seed_statistics import mean_std, paired_difference

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


def test_label_efficiency_table_gives_mean_and_std_over_a_method_s_seeds():
    rows = [fractions_row("simclr", (0.83, 0.9), (0.82, 0.88)) | {"seed": 0},
            fractions_row("simclr", (0.85, 0.9), (0.82, 0.88)) | {"seed": 1}]
    assert label_efficiency_table(rows).splitlines()[2:] == [
        "| simclr | linear probe (frozen) | 84.00 ± 1.41% | 90.00 ± 0.00% |",
        "| cnn-bn, random init | from scratch | 82.00% | 88.00% |"]


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
    path.write_text('methods = ["simclr", "byol"]\nseeds = [0, 1, 2]\nepochs = 3\n[per_method.byol]\nlr = 1e-3\n')
    assert load_bench_file(path) == (["simclr", "byol"], [0, 1, 2], {"epochs": 3}, {"byol": {"lr": 1e-3}})


@pytest.mark.parametrize("text, message", [
    ("epochz = 3\n", "unknown key(s) epochz"),
    ("[per_method.nope]\nlr = 1.0\n", "[per_method.nope]: unknown method"),
    ("per_method = {simclr = 3}\n", "per_method.simclr must be a table"),
    ("seeds = []\n", "seeds must be distinct integers, at least one"),
    ('seeds = [0, "1"]\n', "seeds must be distinct integers"),
    ("seeds = [0, 0]\n", "seeds must be distinct integers"),
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


def computed_again(cfg, raw_pixels):
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

    def baseline_rows(cfg, raw_pixels):
        calls.append((cfg.encoder, cfg.seed, raw_pixels))
        return [{"name": f"{cfg.encoder} {cfg.seed}"}]

    monkeypatch.setattr(bench_module, "baseline_rows", baseline_rows)
    saved = bench_module.saved_baseline_rows
    cfg = make_config(None, encoder="cnn")
    assert saved(tmp_path, cfg) == [{"name": "cnn 0"}]
    assert saved(tmp_path, cfg) == [{"name": "cnn 0"}]
    assert saved(tmp_path, make_config(None, encoder="cnn", seed=1), raw_pixels=False) == [{"name": "cnn 1"}]
    assert saved(tmp_path, cfg) == [{"name": "cnn 0"}]  # a second seed's baselines are kept beside the first's
    assert saved(tmp_path, make_config(None, encoder="cnn", seed=1)) == [{"name": "cnn 1"}]  # with raw pixels now
    assert saved(tmp_path, make_config(None, encoder="cnn-bn")) == [{"name": "cnn-bn 0"}]
    (tmp_path / "baselines.json").write_text("{not json")
    assert saved(tmp_path, make_config(None, encoder="cnn-bn")) == [{"name": "cnn-bn 0"}]
    assert calls == [("cnn", 0, True), ("cnn", 1, False), ("cnn", 1, True), ("cnn-bn", 0, True), ("cnn-bn", 0, True)]


def test_mean_std_and_paired_difference_give_known_answers():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std (ddof=1)
    assert mean_std([0.9]) == (0.9, None)
    mean, low, high = paired_difference([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # differences 1, 2, 3
    half_width = 4.302653 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) * std / sqrt(n)
    assert mean == 2.0
    assert low == pytest.approx(2.0 - half_width, abs=1e-6) and high == pytest.approx(2.0 + half_width, abs=1e-6)
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])  # pairs, or nothing


def test_verdict_says_a_difference_is_real_only_when_the_interval_excludes_zero():
    assert verdict(0.001, 0.02) == "beats SimCLR"
    assert verdict(-0.02, -0.001) == "loses to SimCLR"
    assert verdict(-0.01, 0.02) == "no detectable difference"


def seeded_rows():
    """Raw pixels once, the untrained encoder and two methods at seeds 0 and 1."""
    rows = [{"name": "raw pixels (784-d)", "linear_probe_test_acc": 0.84, "knn_test_acc": 0.82, "eval_seconds": 20.0}]
    for seed, untrained in ((0, 0.70), (1, 0.72)):
        rows.append({"name": "untrained cnn", "seed": seed, "linear_probe_test_acc": untrained,
                     "knn_test_acc": untrained, "eval_seconds": 9.0})
    for seed, simclr, byol in ((0, 0.90, 0.91), (1, 0.89, 0.91)):
        rows.append({**ROW, "method": "simclr", "seed": seed, "linear_probe_test_acc": simclr, "knn_test_acc": simclr})
        rows.append({**ROW, "name": "byol", "method": "byol", "seed": seed, "images_per_s": 1000.0 + 1000 * seed,
                     "linear_probe_test_acc": byol, "knn_test_acc": byol - 0.01 * seed})
    return rows


def test_seeds_table_gives_mean_and_std_over_seeds_and_the_number_of_seeds():
    table = seeds_table(seeded_rows()).splitlines()
    assert table[0] == "| features | linear probe | kNN k=200 | zero-shot | pretraining | images/s | seeds |"
    assert table[2] == "| raw pixels (784-d) | 84.00% | 82.00% |  |  |  |  |"
    assert table[3] == "| untrained cnn | 71.00 ± 1.41% | 71.00 ± 1.41% |  |  |  | 2 |"
    assert table[4] == "| simclr | 89.50 ± 0.71% | 89.50 ± 0.71% |  | 10.0 min | 2,800 | 2 |"
    assert table[5] == "| byol | 91.00 ± 0.00% | 90.50 ± 0.71% |  | 10.0 min | 1,500 | 2 |"
    assert len(table) == 6


def test_accuracies_by_name_give_each_row_s_per_seed_values_for_the_report():
    assert accuracies_by_name(seeded_rows()) == {
        "raw pixels (784-d)": {"linear probe": [0.84], "kNN": [0.82]},
        "untrained cnn": {"linear probe": [0.70, 0.72], "kNN": [0.70, 0.72]},
        "simclr": {"linear probe": [0.90, 0.89], "kNN": [0.90, 0.89]},
        "byol": {"linear probe": [0.91, 0.91], "kNN": [0.91, 0.90]}}


def test_paired_table_compares_each_method_with_simclr_seed_by_seed():
    table = paired_table(seeded_rows()).splitlines()
    assert table[0] == "| method | measure | difference (method − SimCLR) | 95% interval | verdict |"
    half_width = 100 * 12.706205 * math.sqrt(2 * 0.005 ** 2) / math.sqrt(2)  # linear probe: differences 1, 2 points
    assert table[2] == (f"| byol | linear probe | +1.50 points | [{1.5 - half_width:+.2f}, {1.5 + half_width:+.2f}] "
                        "| no detectable difference |")
    assert table[3] == "| byol | kNN | +1.00 points | [+1.00, +1.00] | beats SimCLR |"  # the same +1 at both seeds
    assert len(table) == 4


def test_seeds_parse_from_a_comma_separated_list_and_bad_ones_are_refused():
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    for text, message in (("1,x", "give comma-separated integers"), ("", "give comma-separated integers"),
                          ("3,3", "seeds must be distinct")):
        with pytest.raises(UserError, match=message):
            parse_seeds(text)


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "1,x"], "fashionssl: error: --seeds '1,x': give comma-separated integers, e.g. --seeds 0,1,2"),
    (["--seeds", ""], "fashionssl: error: --seeds '': give comma-separated integers, e.g. --seeds 0,1,2"),
    (["--seeds", "0,1", "--seed", "3"], "fashionssl: error: seed and seeds both given; with seeds (0, 1) each run "
                                        "takes its own"),
])
def test_cli_bench_refuses_bad_seeds_in_one_line_before_any_training(tmp_path, capsys, flags, message):
    assert main(["bench", "--methods", "simclr", "--out", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err.splitlines() == [message]
    assert not (tmp_path / "out").exists()


def test_cli_bench_over_two_seeds_gives_mean_std_and_paired_tables_and_resumes(tmp_path, small_data_dir, capsys,
                                                                             monkeypatch):
    out = tmp_path / "bench"
    args = ["bench", "--methods", "simclr,rotation", "--seeds", "0,1", "--epochs", "1", "--batch-size", "256",
            "--train-subset", "512", "--encoder", "cnn", "--val-size", "500", "--no-report", "--data-dir",
            str(small_data_dir), "--out", str(out)]
    trained, evaluate = [], bench_module.evaluate_checkpoint

    def pretrain(cfg=None, resume=None):  # records the runs trained from scratch, then trains for real
        trained.extend([] if cfg is None else [cfg.out])
        return real_pretrain(cfg, resume=resume)

    def interrupted_at_seed_1(run_dir, **kwargs):  # Ctrl-C while evaluating seed 1's simclr
        if run_dir == out / "simclr" / "seed-1":
            raise KeyboardInterrupt
        return evaluate(run_dir, **kwargs)

    real_pretrain = bench_module.pretrain
    monkeypatch.setattr(bench_module, "pretrain", pretrain)
    monkeypatch.setattr(bench_module, "evaluate_checkpoint", interrupted_at_seed_1)
    assert main(args) == 130
    assert trained == [str(out / "simclr" / "seed-0"), str(out / "rotation" / "seed-0"), str(out / "simclr" / "seed-1")]
    checkpoints = {run: (out / run / "checkpoint.pt").stat().st_mtime_ns
                   for run in ("simclr/seed-0", "rotation/seed-0", "simclr/seed-1")}
    monkeypatch.setattr(bench_module, "evaluate_checkpoint", evaluate)
    monkeypatch.setattr(bench_module, "baseline_rows", computed_again)
    capsys.readouterr()
    assert main(args) == 0  # resumed: seed 1's simclr evaluated from its checkpoint, only rotation's trained
    assert trained[3:] == [str(out / "rotation" / "seed-1")]
    assert {run: (out / run / "checkpoint.pt").stat().st_mtime_ns for run in checkpoints} == checkpoints

    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    saved = json.loads((out / "comparison.json").read_text())
    assert [(r["name"], r.get("seed")) for r in saved["rows"]] == [
        ("raw pixels (784-d)", None), ("untrained cnn", 0), ("untrained cnn", 1), ("simclr", 0), ("rotation", 0),
        ("simclr", 1), ("rotation", 1)]
    simclr = [r["linear_probe_test_acc"] for r in saved["rows"] if r["name"] == "simclr"]
    assert f"| simclr | {bench_module.percent(simclr)} |" in "\n".join(table) and " ± " in bench_module.percent(simclr)
    assert [line.split(" | ")[0] for line in table[2:6]] == ["| raw pixels (784-d)", "| untrained cnn", "| simclr",
                                                             "| rotation"]
    assert all(line.endswith(" | 2 |") for line in table[3:6])
    paired = table[table.index("| method | measure | difference (method − SimCLR) | 95% interval | verdict |"):]
    assert [line.split(" | ")[:2] for line in paired[2:]] == [["| rotation", "linear probe"], ["| rotation", "kNN"]]
    assert all(line.endswith(("| beats SimCLR |", "| loses to SimCLR |", "| no detectable difference |"))
               for line in paired[2:])
    comparison = (out / "comparison.md").read_text()
    assert "Paired differences against SimCLR (same seeds):" in comparison and "seeds: 0, 1" in comparison

    assert main(args) == 0  # all finished: nothing trained, evaluated or probed again
    assert len(trained) == 4
    assert {run: (out / run / "checkpoint.pt").stat().st_mtime_ns for run in checkpoints} == checkpoints
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")] == table

    assert main([*args, "--lr", "0.01"]) == 2  # other settings: refused, not read back as if they were these
    assert capsys.readouterr().err.splitlines() == [
        f"fashionssl: error: {out / 'simclr' / 'seed-0'} holds a run of other settings than asked for (lr: the run has 0.004, "
        f"asked for 0.01): write to another output folder, or delete {out / 'simclr' / 'seed-0'} to train it again"]
    assert len(trained) == 4
    assert {run: (out / run / "checkpoint.pt").stat().st_mtime_ns for run in checkpoints} == checkpoints
