"""What an encoder learned, as one offline HTML page: training curves, label-efficiency curves, an
embedding map, nearest neighbours, the augmented views it was asked to match, the probe's confusion
matrix and, for encoders that have them, CLS attention maps. Several runs get a comparison table and
overlaid curves.

Every figure is written as a PNG and embedded in `report.html` as a base64 data URI, so the page
opens offline and can be mailed as one file. Figures use matplotlib's object API (`Figure`, drawn
by the Agg canvas), which needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm import tqdm

from . import augment
from .config import Config
from .data import Dataset, Split, load_dataset
from .device import autocast_dtype, resolve_device
from .errors import UserError
from .evaluate import Trained, load_data_for, load_trained
from .label_efficiency import LABEL_EFFICIENCY_CLASSIFIERS, same_scratch_baseline
from .probe import extract_features
from .runlog import read_metrics
from .seed_statistics import mean_std

# Test images on the embedding map, and t-SNE iterations: measured 48 CPU-seconds for 2,500 points
# and 1,000 iterations, 25 for 2,000 points and 500 iterations (250 of them early exaggeration):
# about 13 s on 2 cores, with the same clusters.
TSNE_POINTS = 2000
TSNE_ITERATIONS = 500
PCA_DIM = 50
QUERIES = 6  # retrieval queries and attention-map images, one class each
NEIGHBOURS = 8
# Retrieval searches the first 10,000 training images (the kNN monitor's bank): features of all
# 55,000 cost about 35 CPU-seconds with cnn-bn, five times the rest of a run's section.
RETRIEVAL_BANK = 10_000
AUG_IMAGES, AUG_VIEWS = 6, 8
# Stages of one run, for the progress bar; t-SNE is one opaque call, so the bar moves per stage.
RUN_STAGES = ("load checkpoint and data", "features", "t-SNE", "retrieval", "augmentations", "attention")


@dataclass
class Run:
    """A run directory with what the report reads from it."""

    name: str
    path: Path
    trained: Trained
    metrics: list[dict]
    results: dict | None


def load_run(run_dir: str | Path, name: str) -> Run:
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    return Run(name, run_dir, load_trained(run_dir), read_metrics(run_dir), results)


def unique_names(paths: list[Path]) -> list[str]:
    """Run directory names, which prefix the figures' file names. Where two runs share one (a bench
    over seeds: simclr/seed-0, rotation/seed-0), the parent folder's name goes in front
    (simclr-seed-0, rotation-seed-0); -2, -3, ... where names still clash (the same run twice)."""
    resolved = [path.resolve() for path in paths]
    names = [path.name or "run" for path in resolved]
    names = [f"{path.parent.name}-{name}" if any(n == name and p != path for p, n in zip(resolved, names)) else name
             for path, name in zip(resolved, names)]
    unique: list[str] = []
    for name in names:
        candidate, i = name, 1
        while candidate in unique:
            i += 1
            candidate = f"{name}-{i}"
        unique.append(candidate)
    return unique


# Pure computations.

def pick_per_class(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of n images: a random image of each class in turn (a class repeats only when n > classes)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    by_class = [order[labels[order] == c] for c in labels.unique()]
    picked = [int(members[r]) for r in range(n) for members in by_class if r < len(members)]
    return torch.tensor(picked[:n], dtype=torch.long)


def pick_images(split: Split, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of n images of `split`: one of each class in turn, or n random ones without labels."""
    if split.labels is None:
        return torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return pick_per_class(split.labels, n, seed)


def nearest_neighbours(bank: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarity, index) of each query's k most cosine-similar bank rows, both (Q, k), best first."""
    return (F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).T).topk(k, dim=1)


def embedding_map(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) t-SNE map, after PCA to 50 dimensions (the usual de-noising step,
    which also makes t-SNE's neighbour search cheap)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    reduced = PCA(min(PCA_DIM, *features.shape), random_state=seed).fit_transform(features)
    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(2, perplexity=perplexity, max_iter=TSNE_ITERATIONS, init="pca", random_state=seed).fit_transform(reduced)


# Figures: each returns a matplotlib Figure.

def picture(image: torch.Tensor) -> np.ndarray:
    """An image (C, H, W), uint8 or float in [0, 1], as imshow draws it: (H, W) grey or (H, W, 3)."""
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _show(ax, image: torch.Tensor, title: str | None = None, color: str = "black") -> None:
    ax.imshow(picture(image), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, color=color)


def _epoch_axis(metrics: list[dict]) -> float:
    """Steps per epoch of a run, read from its epoch lines, so that runs of different batch sizes
    share an x-axis in epochs."""
    epoch_lines = [m for m in metrics if "epoch" in m]
    return epoch_lines[0]["step"] / epoch_lines[0]["epoch"] if epoch_lines else 1.0


def curves_figure(runs: list[tuple[str, list[dict]]]) -> Figure:
    """Loss (per logged step, with epoch means as dots) and learning rate against epochs, one colour per run."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    loss_ax, lr_ax = fig.subplots(1, 2)
    for i, (name, metrics) in enumerate(runs):
        per_epoch = _epoch_axis(metrics)
        steps = [m for m in metrics if "loss" in m]
        epochs = [m for m in metrics if "epoch_loss" in m]
        color = f"C{i}"
        loss_ax.plot([m["step"] / per_epoch for m in steps], [m["loss"] for m in steps], color=color, alpha=0.5, lw=1)
        loss_ax.plot([m["epoch"] - 0.5 for m in epochs], [m["epoch_loss"] for m in epochs], "o", color=color, ms=4, label=name)
        lr_ax.plot([m["step"] / per_epoch for m in steps], [m["lr"] for m in steps], color=color, label=name)
    loss_ax.set(title="training loss (line: steps, dots: epoch means)", xlabel="epoch", ylabel="loss")
    lr_ax.set(title="learning rate", xlabel="epoch", ylabel="lr")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    return fig


def knn_figure(runs: list[tuple[str, list[dict]]]) -> Figure:
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, metrics) in enumerate(runs):
        points = [(m["epoch"], 100 * m["knn_val_acc"]) for m in metrics if "knn_val_acc" in m]
        if points:
            ax.plot(*zip(*points), "o-", color=f"C{i}", label=name, ms=4)
    ax.set(title="kNN monitor (validation split)", xlabel="epoch", ylabel="accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


LINE_STYLES = {"probe": "o-", "finetune": "s--", "scratch": "x:", "fixmatch": "^-.", "fixmatch_scratch": "v:"}  # per label-efficiency classifier


def label_efficiency_figure(runs: list[tuple[str, dict]]) -> Figure:
    """Test accuracy against the number of labelled images (log scale) of every classifier of every
    run's label-efficiency results: one colour per run, one line style per classifier; a from-scratch
    baseline shared by every run is drawn once, in grey."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    one_scratch = len(runs) > 1 and same_scratch_baseline([by_fraction for _, by_fraction in runs])

    def draw(rows: list[dict], key: str, label: str, color: str) -> None:
        points = [(row["n_labels"], 100 * row[f"{key}_test_acc"]) for row in rows if f"{key}_test_acc" in row]
        if points:
            ax.plot(*zip(*points), LINE_STYLES[key], color=color, ms=5, label=label)

    for i, (name, by_fraction) in enumerate(runs):
        rows = sorted(by_fraction.values(), key=lambda row: row["n_labels"])
        for key, label in LABEL_EFFICIENCY_CLASSIFIERS:
            if not (key == "scratch" and one_scratch):
                draw(rows, key, f"{name}: {label}" if len(runs) > 1 else label, f"C{i}")
    if one_scratch:
        draw(sorted(runs[0][1].values(), key=lambda row: row["n_labels"]), "scratch", "from scratch (every run)", "grey")
    ax.set_xscale("log")
    ax.set(title="label efficiency (test split)", xlabel="labelled images (training + validation subsets)",
           ylabel="accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    if len(runs) > 2:  # a long legend goes beside the axes, not over the lines
        fig.set_figwidth(10)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    else:
        ax.legend(fontsize=8)
    return fig


def seeds_figure(by_method: dict[str, dict[str, list[float]]]) -> Figure:
    """Each baseline's and method's accuracy over seeds, one panel per measure: a bar of +- one sample
    standard deviation around the mean (a diamond) and every seed's value as a dot, so that a reader
    sees whether two methods' spreads overlap. `by_method`: {name: {measure: per-seed accuracies}}."""
    measures = list(dict.fromkeys(m for values in by_method.values() for m in values))
    names = list(by_method)
    fig = Figure(figsize=(5 * len(measures), 0.8 + 0.35 * len(names)), layout="constrained")
    for ax, measure in zip(np.atleast_1d(fig.subplots(1, len(measures), sharey=True)), measures):
        for y, name in enumerate(names):
            values = [100 * v for v in by_method[name].get(measure, [])]
            if not values:
                continue
            mean, std = mean_std(values)
            ax.errorbar(mean, y, xerr=std or 0.0, fmt="D", color="C0", ms=5, capsize=4)
            ax.plot(values, [y] * len(values), "o", color="C1", ms=3, alpha=0.7)
        ax.set(title=f"{measure} (test split)", xlabel="accuracy (%)")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    return fig


def embedding_figure(points: np.ndarray, labels: np.ndarray | None, class_names: tuple[str, ...] | None,
                     split: str = "test") -> Figure:
    """The map's points coloured by class, named in the legend; one colour without labels."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, color="C0")
    else:
        colours = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "turbo"].resampled(len(class_names))
        for cls, name in enumerate(class_names):
            keep = labels == cls
            ax.scatter(points[keep, 0], points[keep, 1], s=4, color=colours(cls), label=name)
        ax.legend(markerscale=3, fontsize=8 if len(class_names) <= 20 else 6, loc="center left",
                  bbox_to_anchor=(1, 0.5), ncols=1 + len(class_names) // 30)
    ax.set(title=f"t-SNE of {len(points)} {split} images' backbone features", xticks=[], yticks=[])
    return fig


def retrieval_figure(queries: torch.Tensor, query_labels: torch.Tensor | None, neighbours: torch.Tensor,
                     neighbour_labels: torch.Tensor | None, similarity: torch.Tensor,
                     class_names: tuple[str, ...] | None) -> Figure:
    """Rows: a query, then its nearest training images (with labels: titles name the class, green
    when it matches the query's)."""
    rows, k = neighbours.shape[:2]
    fig = Figure(figsize=(1.1 * (k + 1), 1.25 * rows), layout="constrained")
    axes = fig.subplots(rows, k + 1, squeeze=False)
    for r in range(rows):
        true = None if query_labels is None else int(query_labels[r])
        _show(axes[r, 0], queries[r], "query" if true is None else f"query: {class_names[true]}")
        for c in range(k):
            label = None if true is None else int(neighbour_labels[r, c])
            name = "" if label is None else f"{class_names[label]} "
            colour = "black" if label is None else "green" if label == true else "red"
            _show(axes[r, c + 1], neighbours[r, c], f"{name}{similarity[r, c]:.2f}", colour)
    return fig


def augmentation_figure(images: torch.Tensor, aug: augment.AugmentConfig, views: int, seed: int = 0) -> Figure:
    """Rows: an original image, then `views` random views of it under `aug`, as training draws them
    (un-normalised back to [0, 1] for display)."""
    generator = torch.Generator().manual_seed(seed)
    drawn = augment.views(images, aug, generator, augment.ViewSpec(global_views=views))
    drawn = torch.stack([augment.denormalize(v, aug) for v in drawn], dim=1)  # (N, views, C, size, size)
    fig = Figure(figsize=(1.1 * (views + 1), 1.2 * len(images)), layout="constrained")
    axes = fig.subplots(len(images), views + 1, squeeze=False)
    for r in range(len(images)):
        _show(axes[r, 0], images[r], "original" if r == 0 else None)
        for c in range(views):
            _show(axes[r, c + 1], drawn[r, c], f"view {c + 1}" if r == 0 else None)
    return fig


def confusion_figure(counts: list[list[int]], class_names: tuple[str, ...]) -> Figure:
    """Counts as numbers, colour by the fraction of the true class (rows sum to 1)."""
    counts_np = np.asarray(counts)
    fractions = counts_np / np.maximum(counts_np.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for (r, c), n in np.ndenumerate(counts_np):
        ax.text(c, r, str(n), ha="center", va="center", fontsize=7, color="white" if fractions[r, c] > 0.5 else "black")
    ticks = range(len(counts_np))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="linear probe on the test set (counts)")
    return fig


def attention_figure(images: torch.Tensor, attention: torch.Tensor) -> Figure:
    """Rows: an image, its CLS attention averaged over heads, then each head's, upsampled to the image."""
    rows, heads = attention.shape[:2]
    size = images.shape[-1]
    maps = F.interpolate(torch.cat([attention.mean(1, keepdim=True), attention], 1).float(), size=(size, size),
                         mode="nearest")
    fig = Figure(figsize=(1.2 * (heads + 2), 1.25 * rows), layout="constrained")
    axes = fig.subplots(rows, heads + 2, squeeze=False)
    for r in range(rows):
        _show(axes[r, 0], images[r], "image" if r == 0 else None)
        for c in range(heads + 1):
            ax = axes[r, c + 1]
            ax.imshow(picture(images[r]), cmap="gray", vmin=0, vmax=1)
            ax.imshow(maps[r, c].numpy(), cmap="inferno", alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("mean of heads" if c == 0 else f"head {c}", fontsize=7)
    return fig


# The page.

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }} figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption, .note {{ color: #555; font-size: 0.9em; }}
</style></head>
<body>
<h1>{title}</h1>
{body}
<script>
// Marks the page once every figure has decoded, for tests and for a quick look in the DOM.
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const decoded = images.filter(img => img.complete && img.naturalWidth > 0).length;
  document.body.dataset.figures = decoded === images.length ? `decoded ${{decoded}}` : `broken ${{images.length - decoded}}`;
}});
</script>
</body></html>
"""


class Page:
    """Collects the report's HTML; figures are saved as PNG files in `out` and embedded."""

    def __init__(self, out: Path):
        self.out, self.parts, self.files = out, [], []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        cells = lambda tag, row: "".join(f"<{tag}>{html.escape(str(x))}</{tag}>" for x in row)  # noqa: E731
        body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
        self.parts.append(f"<table><tr>{cells('th', header)}</tr>{body}</table>")

    def figure(self, fig: Figure, name: str, caption: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        (self.out / name).write_bytes(buffer.getvalue())
        self.files.append(name)
        data = base64.b64encode(buffer.getvalue()).decode()
        self.parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
                          f'data-file="{html.escape(name)}"><figcaption>{html.escape(caption)} '
                          f'(<a href="{html.escape(name)}">{html.escape(name)}</a>)</figcaption></figure>')

    def write(self, title: str) -> Path:
        path = self.out / "report.html"
        path.write_text(PAGE.format(title=html.escape(title), body="\n".join(self.parts)))
        return path


def accuracy_cell(results: dict | None, key: str) -> str:
    """A table cell: `results[key]` as a percentage, '-' where the run has no such number."""
    return f"{100 * results[key]:.2f}%" if results and key in results else "-"


def summary(page: Page, runs: list[Run]) -> None:
    """The comparison table: one row per run."""
    zero_shot = any(r.results and "zero_shot_test_acc" in r.results for r in runs)
    header = ["run", "method", "encoder", "epochs", "linear probe (test)", "kNN (test)"]
    header += ["zero-shot (test)"] if zero_shot else []
    rows = []
    for r in runs:
        method = r.trained.config.method + (" (uses labels)" if r.trained.model.uses_labels else "")
        row = [r.name, method, r.trained.config.encoder, str(r.trained.epochs), accuracy_cell(r.results, "linear_probe_test_acc"),
               accuracy_cell(r.results, "knn_test_acc")]
        rows.append(row + ([accuracy_cell(r.results, "zero_shot_test_acc")] if zero_shot else []))
    page.heading("Summary")
    page.table(header, rows)
    if any(r.trained.model.uses_labels for r in runs):
        page.note("Runs marked 'uses labels' were trained with the class labels: a reference, not self-supervised.")
    for r in runs:
        if r.results is None:
            page.note(f"{r.name}: no results.json yet; `fashionssl evaluate {r.path}` computes the test numbers.")


def label_efficiency_section(page: Page, runs: list[Run]) -> None:
    """Accuracy per fraction of the labels, as a figure and a table, for the runs that have it."""
    page.heading("Label efficiency")
    measured = [(r.name, r.results["label_fractions"]) for r in runs if r.results and "label_fractions" in r.results]
    if not measured:
        page.note("no label-efficiency results in results.json; `fashionssl evaluate RUN_DIR --label-fractions "
                  "0.01,0.1,1.0 --finetune` adds them.")
        return
    page.figure(label_efficiency_figure(measured), "label-efficiency.png",
                "test accuracy when only a stratified fraction of the labels exists: a linear probe on the frozen "
                "encoder, the encoder fine-tuned, the same architecture trained from scratch on the same subset and, "
                "where run, FixMatch, which also learns from the images without their labels")
    classifiers = [(key, label) for key, label in LABEL_EFFICIENCY_CLASSIFIERS
                   if any(f"{key}_test_acc" in row for _, by_fraction in measured for row in by_fraction.values())]
    rows = [[name, fraction, f"{row['n_labels']:,}"] + [accuracy_cell(row, f"{key}_test_acc") for key, _ in classifiers]
            for name, by_fraction in measured for fraction, row in by_fraction.items()]
    page.table(["run", "fraction", "labelled images"] + [label for _, label in classifiers], rows)
    protocol = next(r.results.get("label_fractions_protocol") for r in runs if r.results and "label_fractions" in r.results)
    if protocol:
        page.note(f"Protocol: {protocol}.")


def run_section(page: Page, run: Run, data: Dataset, device: torch.device, bar: tqdm) -> None:
    """The figures of one run: embedding map, retrieval, augmentations, confusion matrix, attention.
    They show the test images, or without labels the training images, captioned with the data's
    class names."""
    cfg, backbone = run.trained.config, run.trained.model.backbone.to(device).eval()
    aug = run.trained.augmentation()
    amp = autocast_dtype(cfg.precision, device)
    names = data.info.class_names
    split, shown = ("test", data.test) if len(data.test) else ("training", data.train)
    page.heading(f"Run {run.name}")
    page.note(f"{run.path}: {cfg.method}, {cfg.encoder}, {run.trained.epochs} epochs, augmentation {cfg.augment} "
              f"{cfg.augment_options or ''}, data {data.source}".strip())

    bar.set_postfix_str(f"{run.name}: features")
    bank = slice(0, RETRIEVAL_BANK)
    train = extract_features(backbone, data.train.images[bank], aug, device, cfg.eval_batch_size, amp).cpu()
    features = extract_features(backbone, shown.images, aug, device, cfg.eval_batch_size, amp).cpu()
    bar.update()

    bar.set_postfix_str(f"{run.name}: t-SNE")
    subset = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:TSNE_POINTS]
    points = embedding_map(features[subset].numpy())
    labels = None if shown.labels is None else shown.labels[subset].numpy()
    page.heading("Embedding map", 3)
    page.figure(embedding_figure(points, labels, names, split), f"{run.name}-tsne.png",
                f"t-SNE (after PCA to {PCA_DIM} dimensions) of {len(subset)} random {split} images"
                + (", coloured by class" if labels is not None else " (the data has no labels)"))
    bar.update()

    bar.set_postfix_str(f"{run.name}: retrieval")
    queries = pick_images(shown, QUERIES)
    similarity, index = nearest_neighbours(train, features[queries], NEIGHBOURS)
    bank_labels = data.train.labels
    page.heading("Nearest neighbours", 3)
    page.figure(retrieval_figure(shown.images[queries], None if shown.labels is None else shown.labels[queries],
                                 data.train.images[bank][index],
                                 None if bank_labels is None else bank_labels[bank][index], similarity, names),
                f"{run.name}-retrieval.png",
                f"{split} queries and their {NEIGHBOURS} most cosine-similar images among the first {len(train)} "
                "training images (backbone features, similarity above each)"
                + ("; green: same class" if names else "; a query among them finds itself first"))
    bar.update()

    bar.set_postfix_str(f"{run.name}: augmentations")
    page.heading("Augmented views", 3)
    page.figure(augmentation_figure(data.train.images[pick_images(data.train, AUG_IMAGES)], aug, AUG_VIEWS),
                f"{run.name}-augmentations.png",
                f"what the model is asked to match: random views under the run's augmentation ({cfg.augment})")
    bar.update()

    page.heading("Linear-probe confusion matrix", 3)
    results = run.results or {}
    confusion = results.get("linear_probe_confusion")
    if confusion is None:
        page.note(results.get("not_evaluated") or "results.json has no linear_probe_confusion (missing, or written "
                  f"by an older fashionssl); `fashionssl evaluate {run.path}` adds it.")
    else:
        page.figure(confusion_figure(confusion, tuple(results.get("class_names") or names)),
                    f"{run.name}-confusion.png", "rows: true class, columns: the linear probe's prediction")

    bar.set_postfix_str(f"{run.name}: attention")
    if hasattr(backbone, "cls_attention"):
        images = shown.images[queries]
        with torch.no_grad():
            attention = backbone.cls_attention(augment.normalize(images.to(device), aug)).cpu()
        page.heading("CLS attention", 3)
        page.figure(attention_figure(images, attention), f"{run.name}-attention.png",
                    "the CLS token's attention over the patch grid (the encoder's cls_attention), "
                    "averaged over heads and per head")
    bar.update()


def preview_augmentations(cfg: Config, out: str | Path, images: int = AUG_IMAGES, views: int = AUG_VIEWS,
                          seed: int = 0) -> Path:
    """The report's augmentation grid for `cfg`'s augmentation on training images of different
    classes of its data, as one PNG: a recipe can be checked by eye before training with it."""
    if images < 1 or views < 1:
        raise UserError(f"--images and --views must be >= 1, got {images} and {views}")
    data = load_dataset(cfg.data, 0, data_dir=cfg.data_dir)
    aug = augment.make_config(cfg.augment, data.info, **cfg.augment_options)
    fig = augmentation_figure(data.train.images[pick_images(data.train, images, seed)], aug, views, seed)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    return out


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, data: str | None = None,
                 device: str | None = None, over_seeds: dict[str, dict[str, list[float]]] | None = None,
                 data_dir: str | None = None) -> Path:
    """Write report.html and its PNG figures to `out` (default: RUN_DIR/report for one run,
    runs/report-<time> for several), on `data`, Fashion-MNIST from `data_dir`, or else the data
    each run was trained on; returns the path of report.html. `over_seeds` (a bench over seeds:
    {name: {measure: per-seed test accuracies}}) adds the comparison with error bars (`seeds_figure`)."""
    if not run_dirs:
        raise UserError("no run directory given: pass one or more run directories")
    paths = [Path(p) for p in run_dirs]
    out = Path(out) if out else paths[0] / "report" if len(paths) == 1 else Path(f"runs/report-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report folder {out}: {e.strerror}") from None
    page = Page(out)
    with tqdm(total=len(paths) * len(RUN_STAGES), desc="report", unit="stage", disable=None) as bar:
        runs = []
        for path, name in zip(paths, unique_names(paths)):
            bar.set_postfix_str(f"{name}: load")
            runs.append(load_run(path, name))
            bar.update()
        summary(page, runs)
        if over_seeds:
            seeds = max(len(values) for measures in over_seeds.values() for values in measures.values())
            page.heading("Over seeds")
            page.figure(seeds_figure(over_seeds), "seeds.png",
                        f"test accuracy over up to {seeds} seeds: mean (diamond) +- one sample standard deviation, and "
                        "each seed (dots); the runs below are each method's first seed")
        curves = [(r.name, r.metrics) for r in runs]
        page.heading("Training curves")
        page.figure(curves_figure(curves), "curves.png", "loss and learning rate" + (" (overlaid)" if len(runs) > 1 else ""))
        page.heading("kNN monitor")
        if any("knn_val_acc" in m for r in runs for m in r.metrics):
            page.figure(knn_figure(curves), "knn.png", "kNN accuracy on the validation split after each epoch "
                        "(bank: the first training images), as logged during training")
        else:
            page.note("no kNN-monitor values in metrics.jsonl (trained with --knn-every 0).")
        label_efficiency_section(page, runs)
        datasets: dict[tuple, Dataset] = {}
        for run in runs:
            cfg = run.trained.config
            key = (data, data_dir, cfg.data, cfg.data_dir, cfg.val_size)
            if key not in datasets:
                datasets[key] = load_data_for(run.trained, data, data_dir)
            run_section(page, run, datasets[key], resolve_device(device or cfg.device), bar)
    title = "fashionssl report: " + ", ".join(r.name for r in runs)
    return page.write(title)
