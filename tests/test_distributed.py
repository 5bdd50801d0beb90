"""Several processes (gloo on CPU) against one: training steps on 2 processes with B images each
must equal those of a single process with the same 2B images and the same views; a failing rank
must end a torchrun job instead of hanging it; rank 0 alone writes; a run resumes with another
number of processes.

BatchNorm: with per-rank statistics, 2 x B is not 1 x 2B, so the step comparison uses SyncBatchNorm
(`sync_batchnorm=True`; in one process it is plain BatchNorm). The optimizer is SGD without weight
decay, whose first step moves every parameter by lr * gradient, so a gradient off by the world size,
or negatives from one rank only, shows in the weights. Two steps: the second uses what the first
left behind (MoCo's queue, EMA targets), and DDP only complains about parameters left out of the
loss at the step after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import fashionssl
from fashionssl import augment, distributed
from fashionssl.checkpoint import load_checkpoint
from fashionssl.config import Config
from fashionssl.data import FASHION_MNIST_INFO
from fashionssl.errors import UserError
from fashionssl.optim import build_optimizer
from fashionssl.train import build_training_model, pretrain, train_step, training_forward

from conftest import quick_config

SRC = Path(fashionssl.__file__).resolve().parents[1]
WORLD = 2
PER_RANK = 8  # images per process; the single process gets WORLD * PER_RANK

# Methods whose distributed steps must equal the single-process steps, with the options they run
# with here (a case named method-variant runs that method with the variant's options). Adding a method is one
# line (views come from `global_views`, whatever the method needs).
STEP_CASES = {
    "simclr": {},
    "simclr-multi-crop": {"local_crops": 2},  # four views per image (2 + 2 small): the multi-positive loss
    "simclr-debiased": {"loss": "debiased"},  # negatives from every rank enter the debiased estimate
    "simclr-decoupled": {"loss": "decoupled"},
    "simclr-alone": {"rotation_weight": 0.0},  # without E-SSL's rotation term (the others have it: 8 images a rank, same turns)
    "moco": {"queue_size": 40},  # smaller than the 32 keys of two steps: the queue wraps; its content is compared
    "byol": {},
    "simsiam": {},
    "rotation": {},
    "supervised": {},
    "swav": {"prototypes": 20, "freeze_prototypes_steps": 1},  # frozen in the first step, trained in the second
    "dino": {"out_dim": 64},
    "clip": {},
    "barlow": {},
    "vicreg": {},
}


def step_config(case: str) -> Config:
    return Config(method=case.partition("-")[0], method_options=STEP_CASES[case], encoder="cnn-bn", optimizer="sgd", lr=0.1,
                  weight_decay=0.0, precision="fp32", channels_last=False, sync_batchnorm=True, seed=3)


def global_views(model, images: torch.Tensor) -> list[torch.Tensor]:
    """The views of the whole global batch, made once (as the training loop makes them) and shared,
    in float64 (see build_float64)."""
    views = augment.views(images, augment.make_config("default"), torch.Generator().manual_seed(1), model.view_spec)
    return [v.double() for v in views]


def build_float64(cfg: Config):
    """The training model in float64. The claim is about arithmetic, not rounding: in float32 two
    summation orders (1 and 2 processes, or two CPUs' kernels) differ in the last bits, and a max-pool
    window whose two largest values lie one float32 step apart then picks a different maximum (seen
    with VICReg's defaults), so a float32 comparison can fail without any mistake in the code."""
    return build_training_model(cfg, FASHION_MNIST_INFO, torch.device("cpu")).double()


def train_steps(cfg: Config, batches: list[tuple[list[torch.Tensor], torch.Tensor]]) -> dict:
    """Steps of the training loop's code, each on this rank's shard of a global batch (views, labels)."""
    device = torch.device("cpu")
    model = build_float64(cfg)
    forward = training_forward(model, device, compile=False)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay)
    losses = []
    for step, (views, labels) in enumerate(batches):
        n = len(labels) // distributed.world_size()
        part = slice(distributed.rank() * n, (distributed.rank() + 1) * n)
        values = train_step(forward, model, optimizer, [v[part] for v in views], labels[part], cfg.lr, step, 10, None)
        losses.append(distributed.mean_over_ranks(values["loss"]).item())  # the global batch's loss
    return {"losses": losses, "state": {k: v.clone() for k, v in model.state_dict().items()}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, port: int, timeout_s: float) -> None:
    """What torchrun would set for this process."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), **{distributed.TIMEOUT_ENV: str(timeout_s)})


def step_worker(rank: int, port: int, inputs_file: Path, out: Path) -> None:
    torch.set_num_threads(1)
    torchrun_env(rank, port, timeout_s=60)
    inputs = torch.load(inputs_file)
    with distributed.torchrun_process_group():
        results = {m: train_steps(step_config(m), inputs[m]) for m in inputs}
    if rank == 0:
        torch.save(results, out)


@pytest.fixture(scope="module")
def step_results(tmp_path_factory):
    """{method: (single-process result, rank 0's result of the 2-process run)}."""
    torch.manual_seed(0)
    inputs, single = {}, {}
    for method in STEP_CASES:
        cfg = step_config(method)
        model = build_float64(cfg)
        inputs[method] = []
        for _ in range(2):
            images = torch.randint(0, 256, (WORLD * PER_RANK, 28, 28), dtype=torch.uint8)
            inputs[method].append((global_views(model, images), torch.randint(0, 10, (WORLD * PER_RANK,))))
        single[method] = train_steps(cfg, inputs[method])
    folder = tmp_path_factory.mktemp("ddp")
    # The inputs travel as a file, not as spawn arguments (shared-memory tensors): with them, a worker
    # of a full-suite run sometimes aborted ("terminate called without an active exception").
    torch.save(inputs, folder / "inputs.pt")
    out = folder / "rank0.pt"
    mp.spawn(step_worker, args=(free_port(), folder / "inputs.pt", out), nprocs=WORLD)
    multi = torch.load(out)
    return {m: (single[m], multi[m]) for m in STEP_CASES}


@pytest.mark.parametrize("method", STEP_CASES)
def test_two_processes_take_the_steps_of_one_with_the_global_batch(step_results, method):
    single, multi = step_results[method]
    initial = build_float64(step_config(method)).state_dict()
    # Tolerances, in float64 (build_float64): the updates differ only by float64 rounding in two
    # summation orders; measured worst difference 1.4e-14 (CLIP), every method, AMD EPYC native and
    # generic AVX2 kernels, against atol 1e-12. A gradient off by the world size, or statistics of one
    # rank, is off by order 1. The logged losses are float32 (train_step's logs): the mean of two
    # halves and the whole agree to an ulp or two (measured 1.1e-7 relative), against rel 1e-6.
    assert multi["losses"] == pytest.approx(single["losses"], rel=1e-6)
    moved = 0
    for name, value in single["state"].items():
        if value.is_floating_point() and value.numel():  # compare the updates: parameters, EMA copies, BN statistics, the queue
            update, expected = multi["state"][name] - initial[name], value - initial[name]
            torch.testing.assert_close(update, expected, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name}: {m}")
            moved += bool(expected.abs().max() > 1e-3)
        else:  # BatchNorm's counters, MoCo's queue pointer
            assert torch.equal(multi["state"][name], value), name
    assert moved > len(single["state"]) // 3, "the steps barely moved anything: the comparison would be too weak"


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_a_bad_timeout_is_a_user_error(monkeypatch, value):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, value)
    with pytest.raises(UserError, match=distributed.TIMEOUT_ENV):
        distributed.collective_timeout()


def test_combine_moments_of_groups_is_the_whole_batch_mean_and_variance():
    # Known answer: groups [1, 2, 3] and [10, 20] -> mean 7.2, biased variance 254.8 / 5 = 50.96
    counts = torch.tensor([3.0, 2.0])
    means = torch.tensor([[2.0], [15.0]])
    m2s = torch.tensor([[2.0], [50.0]])  # (1-2)^2 + 0 + (3-2)^2; (10-15)^2 + (20-15)^2
    n, mean, var = distributed.combine_moments(counts, means, m2s)
    assert n.item() == 5 and mean.item() == pytest.approx(7.2) and var.item() == pytest.approx(50.96)


def test_combine_moments_keeps_float32_digits_where_the_mean_dwarfs_the_spread():
    # Channels with mean 1000 and std 0.1: float32 E[x^2] - E[x]^2 cancels 7 digits and gets the
    # variance wrong by more than 10%; the combination stays within 1e-4 of float64's answer.
    x = 1000 + 0.1 * torch.randn(2, 64, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    parts = x.float()
    means = parts.mean(1)
    m2s = (parts - means[:, None]).square().sum(1)
    _, mean, var = distributed.combine_moments(torch.tensor([64.0, 64.0]), means, m2s)
    expected = x.flatten(0, 1).var(0, unbiased=False)
    torch.testing.assert_close(var.double(), expected, rtol=1e-4, atol=0)
    flat = parts.flatten(0, 1)
    one_pass = flat.square().mean(0) - flat.mean(0).square()
    assert ((one_pass.double() - expected).abs() / expected).max() > 0.1


def test_sync_batchnorm_keeps_batchnorm_state_dict_keys():
    model = build_training_model(step_config("byol"), FASHION_MNIST_INFO, torch.device("cpu"))
    synced = distributed.sync_batchnorm(build_training_model(step_config("byol"), FASHION_MNIST_INFO, torch.device("cpu")))
    assert any(isinstance(m, distributed.SyncBatchNorm) for m in synced.modules())
    assert synced.state_dict().keys() == model.state_dict().keys()
    assert not any(p.requires_grad for p in synced.target_backbone.parameters())


def test_shard_batches_in_one_process_is_the_order_minus_the_incomplete_batch():
    order = torch.randperm(10)
    assert torch.equal(distributed.shard_batches(order, 4), order[:8])


# A torchrun job in a subprocess: 2 epochs of SimCLR, rank 1 fails in the second epoch. Each rank
# runs in its own working directory with a relative --out, as ranks on different machines would, so
# anything rank 1 writes shows up in its own directory.
WRAPPER = """
import os, sys
from pathlib import Path
rank = int(os.environ["RANK"])
os.chdir(Path(sys.argv[1]) / f"rank{rank}")
from fashionssl.methods.base import Method
if rank == 1:
    def fail(self, step, total_steps):
        if step >= int(sys.argv[2]):
            raise RuntimeError("injected failure on rank 1")
    Method.after_step = fail
from fashionssl.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def crashed_job(tmp_path_factory, small_data_dir):
    root = tmp_path_factory.mktemp("torchrun")
    for rank in range(WORLD):
        (root / f"rank{rank}").mkdir()
    (root / "wrapper.py").write_text(WRAPPER)
    cfg = quick_config(Path("run"), small_data_dir, method="simclr", epochs=2, train_subset=256, batch_size=64,
                       knn_bank_size=200)
    (root / "run.toml").write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in dataclasses.asdict(cfg).items()
                                              if v is not None and not isinstance(v, dict)) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: "60"}
    # A hang would end in TimeoutExpired, failing every test that uses this fixture.
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
                           "--master-port", str(free_port()), str(root / "wrapper.py"), str(root), str(STEPS_PER_EPOCH),
                           "pretrain", "--config", str(root / "run.toml")],
                          env=env, capture_output=True, text=True, timeout=150)
    return root, proc


STEPS_PER_EPOCH = 256 // 64


def test_a_failing_rank_ends_the_torchrun_job_with_its_error(crashed_job):
    _, proc = crashed_job
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr


def test_only_rank_0_writes_files(crashed_job):
    root, _ = crashed_job
    assert list((root / "rank1").iterdir()) == []
    run_dir = root / "rank0" / "run"
    assert {"checkpoint.pt", "config.json", "versions.json", "metrics.jsonl"} <= {p.name for p in run_dir.iterdir()}
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 4]  # each step of epoch 1 once (log_every=1), then the epoch line


def test_a_two_process_run_resumes_in_one_process(crashed_job):
    root, _ = crashed_job
    run_dir = root / "rank0" / "run"
    assert load_checkpoint(run_dir)["epoch"] == 1  # written by the 2-process job before rank 1 failed
    assert pretrain(resume=run_dir) == run_dir
    assert load_checkpoint(run_dir)["epoch"] == 2
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines if "epoch" in line] == [1, 2]
    assert all(0 < line["knn_val_acc"] <= 1 for line in lines if "epoch" in line)
