"""Integration tests of the `fashionssl` command: in-process through fashionssl.cli.main, and once
through `python -m fashionssl` for the real exit code and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fashionssl
from fashionssl.cli import main
from fashionssl.data import FASHION_MNIST_CLASSES

SRC = Path(fashionssl.__file__).resolve().parents[1]

# A run small enough to finish in seconds; cases below add the flag they get wrong (argparse lets a
# later flag override an earlier one).
QUICK = ["--train-subset", "512", "--batch-size", "256", "--epochs", "1", "--val-size", "500",
         "--knn-every", "0", "--encoder", "cnn"]


def test_run_quick_job_prints_the_results_table_and_the_run_dir(tmp_path, small_data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", *QUICK, "--data-dir", str(small_data_dir), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"run directory: {out}" in stdout
    assert "| simclr / cnn" in stdout
    assert "linear probe, test" in stdout and "kNN (k=200, cosine), test" in stdout
    results = json.loads((out / "results.json").read_text())
    # The table shows the numbers of results.json.
    assert f"{100 * results['linear_probe_test_acc']:.2f}%" in stdout
    assert f"{100 * results['knn_test_acc']:.2f}%" in stdout


def test_evaluate_data_dir_reads_fashion_mnist_there_and_data_reads_any_idx_folder(trained_run, small_data_dir,
                                                                                   tmp_path):
    """--data-dir moves a run's Fashion-MNIST (its names and fixed statistics); --data is other data:
    the same IDX files without classes.txt are classes "0".."9"."""
    _, run_dir = trained_run
    copy = tmp_path / "idx"
    copy.mkdir()
    for path in small_data_dir.glob("*-ubyte*"):
        (copy / path.name).write_bytes(path.read_bytes())
    names = {}
    for flag in ("--data-dir", "--data"):
        out = tmp_path / f"results{flag}.json"
        assert main(["evaluate", str(run_dir), flag, str(copy), "--out", str(out)]) == 0
        names[flag] = json.loads(out.read_text())["class_names"]
    assert names == {"--data-dir": list(FASHION_MNIST_CLASSES), "--data": [str(i) for i in range(10)]}
    with pytest.raises(SystemExit) as given_both:
        main(["evaluate", str(run_dir), "--data", str(copy), "--data-dir", str(copy)])
    assert given_both.value.code == 2


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def case(name: str, argv: list[str], words: list[str], marks=()):
    """One error case: argv ({tmp} = the scratch dir), words its error line must contain."""
    return pytest.param(argv, words, id=name, marks=marks)


ERROR_CASES = [
    case("unknown-method", ["run", "--method", "nosuch"], ["nosuch", "simclr"]),
    case("unknown-encoder", ["run", "--encoder", "nosuch"], ["nosuch", "cnn", "cnn-bn", "resnet18"]),
    case("negative-temperature", ["run", "--opt", "temperature=-1"], ["temperature"]),
    case("unknown-method-option", ["run", "--opt", "nosuch=1"], ["nosuch", "temperature"]),
    case("option-without-value", ["run", "--opt", "temperature"], ["key=value"]),
    case("unknown-aug-option", ["run", "--aug", "nosuch=1"], ["nosuch", "crop_scale"]),
    case("reversed-crop-scale", ["run", "--aug", "crop_scale=[0.9,0.1]"], ["crop_scale"]),
    case("unknown-augment-preset", ["run", "--augment", "nosuch"], ["nosuch", "default"]),
    case("zero-epochs", ["run", "--epochs", "0"], ["epochs"]),
    case("negative-lr", ["run", "--lr", "-1"], ["lr"]),
    case("warmup-longer-than-run", ["run", "--warmup-epochs", "5", "--epochs", "2"], ["warmup_epochs"]),
    case("unknown-optimizer", ["run", "--optimizer", "nosuch"], ["nosuch", "adamw"]),
    case("unknown-precision", ["run", "--precision", "fp16"], ["precision", "fp16"]),
    case("batch-larger-than-subset", ["run", "--train-subset", "200", "--batch-size", "256"], ["batch_size", "200"]),
    case("val-size-too-large", ["run", "--val-size", "3000"], ["validation size", "3000"]),
    case("cuda-on-cpu-only-machine", ["run", "--device", "cuda"], ["cuda"], marks=NO_CUDA),
    case("unknown-device", ["run", "--device", "tpu"], ["tpu"]),
    case("empty-data-dir", ["run", "--data-dir", "{tmp}/empty"], ["empty", "train-images-idx3-ubyte"]),
    case("missing-config-file", ["run", "--config", "{tmp}/missing.toml"], ["missing.toml"]),
    case("config-with-unknown-key", ["run", "--config", "{tmp}/unknown_key.toml"], ["unknown_key.toml", "nosuch"]),
    case("resume-missing-run", ["pretrain", "--resume", "{tmp}/nowhere"], ["nowhere"]),
    case("evaluate-missing-path", ["evaluate", "{tmp}/nowhere"], ["nowhere"]),
    case("evaluate-torch-file-not-a-checkpoint", ["evaluate", "{tmp}/tensor.pt"], ["tensor.pt", "not a fashionssl checkpoint"]),
    case("evaluate-json-file", ["evaluate", "{tmp}/results.json"], ["results.json"]),
    case("evaluate-text-file", ["evaluate", "{tmp}/notes.txt"], ["notes.txt"]),
    case("evaluate-toml-file", ["evaluate", "{tmp}/unknown_key.toml"], ["unknown_key.toml"]),
    case("string-temperature", ["run", "--opt", "temperature=abc"], ["temperature"]),
    case("negative-hidden-dim", ["run", "--opt", "hidden_dim=-1"], ["hidden_dim"]),
    case("nan-temperature", ["run", "--opt", "temperature=nan"], ["temperature"]),
]


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """A working directory holding the files the error cases point at."""
    monkeypatch.chdir(tmp_path)  # a run without --out would land in ./runs
    (tmp_path / "empty").mkdir()
    (tmp_path / "unknown_key.toml").write_text("epochs = 1\nnosuch = 3\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "results.json").write_text(json.dumps({"knn_test_acc": 0.5}))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "tensor.pt")
    return tmp_path


def expand(argv: list[str], tmp: Path, data: Path) -> list[str]:
    return [a.format(tmp=tmp, data=data) for a in argv]


def check_one_line_error(rc: int, stderr: str, words: list[str]) -> None:
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fashionssl: error: ")
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("argv, words", ERROR_CASES)
def test_user_error_exits_2_with_one_line_and_no_traceback(argv, words, scratch, small_data_dir, capsys):
    command, *rest = argv
    if command == "evaluate":
        full = [command, *rest, "--data-dir", str(small_data_dir)]
    else:  # a quick run into scratch/run, the case's own flags last so they win
        full = [command, *QUICK, "--data-dir", str(small_data_dir), "--out", str(scratch / "run"), *rest]
    rc = main(expand(full, scratch, small_data_dir))
    captured = capsys.readouterr()
    check_one_line_error(rc, captured.err, [w.format(tmp=scratch) for w in words])
    assert not (scratch / "run" / "checkpoint.pt").exists()
    assert not (scratch / "runs").exists()


def run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "fashionssl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv, words", [
    pytest.param(["run", "--epochs", "0"], ["epochs"], id="zero-epochs"),
    pytest.param(["evaluate", "{tmp}/notes.txt"], ["notes.txt"], id="evaluate-text-file"),
])
def test_python_m_fashionssl_user_error_exit_code_and_stderr(argv, words, scratch, small_data_dir):
    done = run_module(expand(argv, scratch, small_data_dir), scratch)
    check_one_line_error(done.returncode, done.stderr, words)
    assert done.stdout == ""


@pytest.mark.parametrize("argv, words", [
    (["--help"], ["run", "pretrain", "evaluate"]),
    (["run", "--help"], ["--method", "--encoder", "--epochs", "--resume", "--opt", "--aug"]),
    (["pretrain", "--help"], ["--method", "--resume"]),
    (["evaluate", "--help"], ["checkpoint", "--out"]),
], ids=["top", "run", "pretrain", "evaluate"])
def test_help_exits_0(argv, words, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 0
    stdout = capsys.readouterr().out
    for word in words:
        assert word in stdout
