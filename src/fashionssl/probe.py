"""Judging frozen features: extraction from a backbone, then a linear probe and a kNN classifier.

Protocol (every number in results.json names it): features from the backbone in eval mode on
un-augmented, normalised images; the probe is multinomial logistic regression on standardised
features, fitted by full-batch L-BFGS, with its weight decay chosen on the validation split and
then refitted on train+validation; kNN is cosine-similarity, k=200, weighted by exp(sim/0.1) as in
Wu et al. (2018). The test split is used once, for the reported numbers.

Pure functions of tensors, imported by the training loop (kNN monitor), evaluation and label
efficiency alike; it imports none of them.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, normalize

WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


@torch.no_grad()
def extract_features(backbone: nn.Module, images: torch.Tensor, aug: AugmentConfig, device: torch.device,
                     batch_size: int = 1024, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 features (N, D) on `device`, in eval mode (BatchNorm uses
    its running statistics, so a sample's features do not depend on its batch)."""
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    parts = []
    try:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start:start + batch_size].to(device), aug)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                parts.append(backbone(x).float())
    finally:
        for module, training in modes.items():
            module.training = training
    return torch.cat(parts)


def count_classes(*labels: torch.Tensor) -> int:
    """The number of classes labels index into: one more than the largest label."""
    return max(int(y.max()) for y in labels if len(y)) + 1


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int = 200,
                temperature: float = 0.1, num_classes: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN: each query's k most cosine-similar bank entries vote for their label with weight
    exp(similarity / temperature). Returns (Q,) predicted labels. `num_classes`: default, the bank's."""
    num_classes = num_classes or count_classes(bank_labels)
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, len(bank))
    predictions = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        similarity, index = (q @ bank.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return (predictions == labels).float().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts of (true class, predicted class) pairs: row = true label, column = prediction."""
    pairs = (labels * num_classes + predictions).cpu()
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes).tolist()


def fit_linear_classifier(x: torch.Tensor, y: torch.Tensor, weight_decay: float, num_classes: int,
                          max_iter: int = 50, init: nn.Linear | None = None) -> nn.Linear:
    """Multinomial logistic regression, cross entropy + weight_decay/2 * ||W||^2, by full-batch L-BFGS.

    A convex problem: the result is deterministic and needs no epochs or learning rate to tune.
    Starting from zero, or from `init` (a solution for a nearby weight decay), which converges in
    far fewer iterations when sweeping a grid. Each iteration reads the whole feature matrix (276 MB
    for 60,000 x 1152 floats), so the cost is memory traffic; 50 iterations chose the same weight
    decay and gave the same test accuracy (within 0.01 points) as 100 in half the time.

    Stopping rule: after `max_iter` iterations, or earlier when an iteration no longer changes the
    float32 objective (tolerance_change lies below float32's resolution), i.e. at the minimum to
    float32 precision. The gradient left there depends on where the CPU's kernels round (3e-4 on one
    machine, 2e-5 on another for the same small problem), the objective does not.
    """
    layer = nn.utils.skip_init(nn.Linear, x.shape[1], num_classes, device=x.device)  # no RNG draw
    with torch.no_grad():
        layer.weight.copy_(init.weight if init is not None else torch.zeros_like(layer.weight))
        layer.bias.copy_(init.bias if init is not None else torch.zeros_like(layer.bias))
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), y) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return layer.requires_grad_(False)


def feature_statistics(fit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each feature's mean and standard deviation over `fit` (at least 1e-6), as `standardize` uses them."""
    return fit.mean(0), fit.std(0).clamp_min(1e-6)


def on_raw_features(layer: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """The linear layer that gives on raw features what `layer` gives on features standardised by
    (mean, std): W / std, b - (W / std) @ mean. A probe's solution as a head for the raw backbone."""
    raw = nn.Linear(layer.in_features, layer.out_features, device=layer.weight.device)
    with torch.no_grad():
        raw.weight.copy_(layer.weight / std)
        raw.bias.copy_(layer.bias - raw.weight @ mean)
    return raw


def standardize(fit: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every feature to zero mean and unit variance using statistics of `fit` alone."""
    mean, std = feature_statistics(fit)
    return [(t - mean) / std for t in (fit, *others)]


def probe_on_validation(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                        num_classes: int, weight_decays: Sequence[float] = WEIGHT_DECAYS,
                        ) -> tuple[dict[float, float], dict[float, nn.Linear]]:
    """Fit the probe on `train` at each weight decay; its validation accuracy and the fit for each.

    The grid is swept from strong to weak regularisation, each fit warm-started from the previous
    solution: the same optima, found several times faster. The test split is not touched, so
    sweeps (benchmarks/sweep.py) may compare and choose with these numbers.
    """
    x_train, x_val = standardize(train[0], val[0])
    val_accuracy, solutions, previous = {}, {}, None
    for wd in sorted(weight_decays, reverse=True):
        previous = solutions[wd] = fit_linear_classifier(x_train, train[1], wd, num_classes, init=previous)
        val_accuracy[wd] = accuracy(previous(x_val).argmax(1), val[1])
    return val_accuracy, solutions


def best_weight_decay(val_accuracy: dict[float, float]) -> float:
    """The weight decay of the best validation accuracy; ties go to the stronger regulariser."""
    return max(val_accuracy, key=lambda wd: (val_accuracy[wd], wd))


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], weight_decays: Sequence[float] = WEIGHT_DECAYS) -> dict:
    """Choose the weight decay on `val`, refit on train+val with it, report accuracy on `test` once.

    The refit starts from the chosen weight decay's solution on train alone (see probe_on_validation).
    """
    classes = count_classes(train[1], val[1], test[1])
    val_accuracy, solutions = probe_on_validation(train, val, classes, weight_decays)
    best = best_weight_decay(val_accuracy)
    x_fit, x_test = standardize(torch.cat([train[0], val[0]]), test[0])
    classifier = fit_linear_classifier(x_fit, torch.cat([train[1], val[1]]), best, classes, init=solutions[best])
    predictions = classifier(x_test).argmax(1)
    return {
        "linear_probe_test_acc": accuracy(predictions, test[1]),
        "linear_probe_val_acc": val_accuracy[best],
        "linear_probe_weight_decay": best,
        "linear_probe_val_acc_by_weight_decay": {str(wd): acc for wd, acc in val_accuracy.items()},
        "linear_probe_confusion": confusion_matrix(predictions, test[1], classes),
    }


def evaluate_features(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                      test: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Linear probe and kNN on precomputed features ((features, labels) per split)."""
    results = linear_probe(train, val, test)
    bank, bank_labels = torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]])
    classes = count_classes(bank_labels, test[1])
    results["knn_test_acc"] = accuracy(knn_predict(bank, bank_labels, test[0], num_classes=classes), test[1])
    return results
