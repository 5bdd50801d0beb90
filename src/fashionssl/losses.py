"""Loss functions as pure functions of embeddings: no state, no modules, known-answer tested."""

import math

import torch
import torch.nn.functional as F

from .device import at_least_float32
from .distributed import all_reduce_sum, gather, gather_with_grad, rank


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy over the 2N views of a batch.

    "Given a positive pair, we treat the other 2(N-1) augmented examples within a minibatch as
    negative examples" (Chen et al., 2020): each of the 2N embeddings is classified against the
    other 2N-1, of which exactly one (its other view) is the positive. The mean over all 2N anchors
    makes the loss symmetric in z1 and z2.
    """
    return multi_view_nt_xent([z1, z2], temperature)


def multi_view_nt_xent(views: list[torch.Tensor], temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent over V >= 2 views of each image (SimCLR with multi-crop): every one of the V*N
    embeddings is an anchor, classified against the other V*N - 1, among which the other V - 1
    views of its image are positives; its loss is the mean of their -log softmax (the supervised
    contrastive loss of Khosla et al., 2020, with the image as the label, as solo-learn's
    multi-crop SimCLR). For V = 2 this is nt_xent: one positive per anchor.

    Several processes: each view is this rank's n images of the global batch of N = W*n (rank
    order). The anchors are this rank's V*n views, the candidates all V*N views, gathered with
    gradient, so the mean of the ranks' losses is the loss of the global batch, negatives from every rank.
    """
    logits, positives = _multi_view_logits(views, temperature)
    # In float32: under CPU bf16 autocast the similarities come out of a bf16 matmul, and log_softmax
    # would stay in bf16 (F.cross_entropy casts up; log_softmax does not). For two views, the same
    # gradients bit for bit as F.cross_entropy with one target per anchor.
    log_p = at_least_float32(logits).log_softmax(dim=1)
    return -log_p.gather(1, positives).mean()


def debiased_nt_xent(views: list[torch.Tensor], temperature: float = 0.2, class_prior: float = 0.1) -> torch.Tensor:
    """Debiased contrastive loss (Chuang et al., 2020) over V >= 2 views of each image: NT-Xent whose
    negatives are corrected for the fraction `class_prior` of them that share the anchor's class.

    With few classes many "negatives" are not: on Fashion-MNIST one in ten is the anchor's own
    class, and NT-Xent pushes it away all the same. The paper estimates the mean exp-similarity of
    true negatives from the batch's as Ng = (mean_neg e^s - class_prior e^s_pos) / (1 - class_prior),
    clamped below at e^(-1/t), the least it can be, and each (anchor, positive) pair's loss is
    -log(e^s_pos / (e^s_pos + M Ng)) over M = V*N - V negatives. class_prior = 0 is NT-Xent for
    V = 2 (for more views, each positive's denominator holds the negatives and itself alone).
    Views, processes and the float32 maths as in multi_view_nt_xent.
    """
    positive, log_mean_negative, negatives = _positives_and_negatives(views, temperature)
    # In logs, relative to each positive: the loss is softplus(log M + log(Ng / e^s_pos)), finite and
    # exact from tiny losses to temperatures where e^(2/t) overflows float32.
    gap = log_mean_negative - positive  # log(mean_neg e^s / e^s_pos)
    # Ng / e^s_pos = (e^gap - prior) / (1 - prior) = e^gap (1 - prior e^-gap) / (1 - prior), where positive.
    # (e^-gap capped at e^80: past it the estimate is negative for any prior > 1e-34.)
    rest = 1 - class_prior * torch.exp((-gap).clamp_max(80))
    log_ratio = gap + torch.log(rest.clamp_min(1e-30)) - math.log1p(-class_prior)
    log_ratio = log_ratio.masked_fill(rest <= 0, float("-inf")).maximum(-1 / temperature - positive)  # the clamp
    return F.softplus(math.log(negatives) + log_ratio).mean()


def decoupled_nt_xent(views: list[torch.Tensor], temperature: float = 0.2) -> torch.Tensor:
    """Decoupled contrastive loss (Yeh et al., 2022) over V >= 2 views of each image: NT-Xent without
    the positive in its own denominator, -s_pos + log sum_neg e^s per (anchor, positive) pair.

    NT-Xent's gradient carries a factor 1 - p_pos (the softmax weight of the positive): once the
    views of an image agree, that factor shrinks and with it the push from the negatives, which the
    paper finds slows learning most at small batches and short schedules. Dropping the positive from
    the denominator removes the factor. Views, processes and the float32 maths as in multi_view_nt_xent.
    """
    positive, log_mean_negative, negatives = _positives_and_negatives(views, temperature)
    return (log_mean_negative + math.log(negatives) - positive).mean()


def _positives_and_negatives(views: list[torch.Tensor], temperature: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For each of this rank's V*n anchors: the logits of its V - 1 positives (V*n, V-1), the log of
    the mean exp-logit of its M = V*N - V negatives (V*n, 1), and M; in at least float32."""
    logits, positives = _multi_view_logits(views, temperature)
    logits = at_least_float32(logits)
    negatives = logits.shape[1] - positives.shape[1] - 1  # the anchor's own column is already -inf
    log_mean_negative = logits.scatter(1, positives, float("-inf")).logsumexp(1, keepdim=True) - math.log(negatives)
    return logits.gather(1, positives), log_mean_negative, negatives


def _multi_view_logits(views: list[torch.Tensor], temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The similarities / temperature of this rank's V*n anchors (rows, view-major) with all V*N
    views of the global batch (columns, view-major), each anchor's own column at -inf, and for each
    anchor the columns of its V - 1 positives: (V*n, V*N) logits and (V*n, V-1) column indices."""
    v, n = len(views), views[0].shape[0]
    anchors = F.normalize(at_least_float32(torch.cat(views)), dim=1)  # (V*n, D): this rank's views
    # One all-gather of every view, then regrouped view-major: (V*N, D) = view 1 of all N, view 2 of all N, ...
    everyone = gather_with_grad(anchors)  # (W * V*n, D), rank-major
    candidates = everyone.view(-1, v, n, everyone.shape[1]).transpose(0, 1).reshape(-1, everyone.shape[1])
    total = len(candidates) // v  # N
    own = rank() * n + torch.arange(n, device=anchors.device)  # this rank's images' places in the global batch
    places = torch.arange(v, device=anchors.device)[:, None] * total + own  # (V, n): where each view of each image sits
    logits = anchors @ candidates.T / temperature  # (V*n, V*N) cosine similarities
    logits[torch.arange(v * n, device=anchors.device), places.reshape(-1)] = float("-inf")  # not its own negative
    others = (torch.arange(v, device=anchors.device)[:, None] + torch.arange(1, v, device=anchors.device)) % v
    positives = places[others].transpose(1, 2)  # (V, n, V-1): where the other views of each anchor's image sit
    return logits, positives.reshape(v * n, v - 1)


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE: each query is classified against its own key (the positive) and a queue of
    negatives.

    "a query q and a set of encoded samples {k0, k1, k2, ...} that are the keys of a dictionary.
    [...] The contrastive loss is low when q is similar to its positive key k+ and dissimilar to all
    other keys" (He et al., 2020): L_q = -log exp(q.k+/T) / (exp(q.k+/T) + sum_k- exp(q.k-/T)).
    query, key: (N, D), row i of each from the same image; queue: (K, D). Every input is L2-normalised
    here, so the logits are cosine similarities / T. Gradients flow into `query` only where the caller
    passes a detached key and queue, as MoCo does.

    Distributed: the negatives are the queue this process holds; nothing is gathered here. Under
    DDP the caller must gather keys from every process before enqueueing them.
    """
    q = F.normalize(at_least_float32(query), dim=1)
    k = F.normalize(at_least_float32(key), dim=1)
    negatives = F.normalize(at_least_float32(queue), dim=1)
    positive = (q * k).sum(1, keepdim=True)  # (N, 1)
    negative = q @ negatives.T  # (N, K)
    logits = torch.cat([positive, negative], dim=1) / temperature  # (N, 1 + K), the positive in column 0
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def normalized_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss, the mean over the batch of || p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z).

    "we define the following mean squared error between the normalized predictions and target
    projections" (Grill et al., 2020). It lies in [0, 4]; the stop-gradient on `target` is the
    caller's to apply (BYOL's target network has no gradient at all). Per-sample: no cross-sample
    terms, so it needs no gathering under DDP.
    """
    return (2 - 2 * F.cosine_similarity(at_least_float32(prediction), at_least_float32(target), dim=1)).mean()


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -p/||p|| . z/||z||, averaged over the batch; it lies in [-1, 1].

    "D(p1, z2) = - p1/||p1||_2 . z2/||z2||_2 [...] the negative cosine similarity" (Chen & He, 2021).
    The stop-gradient D(p1, stopgrad(z2)) is the caller's to apply. Per-sample: nothing to gather
    under DDP.
    """
    return -F.cosine_similarity(at_least_float32(prediction), at_least_float32(target), dim=1).mean()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: each image is classified against every text of the batch (its own
    caption is the positive) and each text against every image, the two cross entropies averaged.

    "we instead explore training a system to solve the potentially easier proxy task of predicting
    only which text as a whole is paired with which image [...] optimize a symmetric cross entropy
    loss over these similarity scores" (Radford et al., 2021). image_emb, text_emb: (N, D), row i of
    each from the same pair; both are L2-normalised here. logit_scale multiplies the cosine
    similarities (1 / temperature; CLIP learns its logarithm and caps it at 100).

    Distributed: this rank's N images are contrasted with the texts of every rank and its texts with
    every rank's images (gathered with gradients), as open_clip's local loss does; with DDP averaging
    the ranks' gradients this is the gradient of the global-batch loss. In one process it is the
    plain N x N loss.
    """
    image = F.normalize(at_least_float32(image_emb), dim=1)
    text = F.normalize(at_least_float32(text_emb), dim=1)
    targets = torch.arange(len(image), device=image.device) + rank() * len(image)  # own pairs' global rows
    image_to_text = logit_scale * image @ gather_with_grad(text).T  # (N, world * N)
    text_to_image = logit_scale * text @ gather_with_grad(image).T
    return (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)) / 2


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes: soft assignments of the global batch's samples to prototypes, spread equally.

    scores: (B, K) similarities of this process's samples to K prototypes. Returns (B, K) codes Q,
    each row summing to 1 (a distribution over prototypes; exact, the last step normalises samples)
    and every prototype's column summing to about B_global / K (closer with more iterations): "we
    enforce that on average each prototype is selected at least B/K times in the batch" (Caron et
    al., 2020). Q = diag(u) exp(scores / epsilon) diag(v), the solution of the entropy-regularised
    transport problem, approximated by `iterations` rounds of alternately normalising prototypes and
    samples. In fp32; the prototype sums run over every process's samples (all_reduce_sum), so the
    codes are those of the global batch under torchrun. Scores are shifted by their global maximum
    first: the normalisations cancel any constant, and exp cannot overflow.
    """
    scores = at_least_float32(scores)
    batch = all_reduce_sum(torch.tensor(float(len(scores)), device=scores.device))
    q = torch.exp((scores - gather(scores.max().view(1)).max()) / epsilon).T  # (K, B)
    prototypes = q.shape[0]
    q /= all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True)) * prototypes  # each prototype: total 1/K
        q /= q.sum(dim=0, keepdim=True) * batch  # each sample: total 1/B
    return (q * batch).T


def swapped_prediction(scores: torch.Tensor, codes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SwAV's loss: predict each global view's code from every other view's prototype scores.

    scores: (V, B, K) prototype scores of all V views (global views first); codes: (G, B, K)
    Sinkhorn codes of the first G (global) views, without gradient. "we predict the code of a view
    from the representation of another view" (Caron et al., 2020): for each code i and each view
    v != i, the cross-entropy -sum_k q_i log softmax(scores_v / temperature), averaged over the
    batch, over the V - 1 views and over the G codes. Per-sample given the codes: nothing to gather.
    """
    log_p = F.log_softmax(at_least_float32(scores) / temperature, dim=-1)  # (V, B, K)
    total = log_p.new_zeros(())
    for i, q in enumerate(at_least_float32(codes)):
        others = torch.cat([log_p[:i], log_p[i + 1:]])  # (V - 1, B, K)
        total = total - (q * others).sum(-1).mean()
    return total / len(codes)


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
              student_temperature: float = 0.1, teacher_temperature: float = 0.04) -> torch.Tensor:
    """DINO's self-distillation loss: the student's distribution over out_dim dimensions matches the
    centred, sharpened teacher distribution of every other view.

    student: (V, B, D) logits of all V views (global first); teacher: (G, B, D) logits of the G
    global views; center: (D,). "P_t = softmax((g_t(x) - c) / tau_t) [...] we minimise
    sum over x in {x1g, x2g}, x' in V, x' != x of H(P_t(x), P_s(x'))" (Caron et al., 2021), averaged
    over the batch and the pairs. Centring keeps one dimension from dominating and sharpening keeps
    the output from going uniform; the teacher gets no gradient.
    """
    log_p = F.log_softmax(at_least_float32(student) / student_temperature, dim=-1)  # (V, B, D)
    targets = F.softmax((at_least_float32(teacher) - center) / teacher_temperature, dim=-1).detach()  # (G, B, D)
    total, pairs = log_p.new_zeros(()), 0
    for i, t in enumerate(targets):
        for v, lp in enumerate(log_p):
            if v != i:
                total = total - (t * lp).sum(-1).mean()
                pairs += 1
    return total / pairs


@torch.no_grad()
def dino_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """The new centre: momentum * center + (1 - momentum) * the mean teacher logit over the global
    batch (every view and sample of every process). teacher: (..., D); center: (D,)."""
    flat = at_least_float32(teacher).reshape(-1, teacher.shape[-1])
    total = all_reduce_sum(torch.cat([flat.sum(0), flat.new_tensor([len(flat)])]))
    return momentum * center + (1 - momentum) * total[:-1] / total[-1]


def _global_views(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views' embeddings of the whole global batch, (N, D) each in rank order, in fp32 (or
    wider), from one differentiable all-gather (the batch itself in one process)."""
    n, d = z1.shape
    everyone = gather_with_grad(at_least_float32(torch.cat([z1, z2])))  # (W * 2n, D), rank-major
    everyone = everyone.view(-1, 2, n, d).transpose(0, 1).reshape(2, -1, d)  # (2, N, D), view-major
    return everyone[0], everyone[1]


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The d(d-1) off-diagonal entries of a square matrix, flattened (the official codes' off_diagonal)."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 5e-3,
                      eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins' redundancy-reduction loss on the cross-correlation matrix of the two views.

    "L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2 [...] C is the cross-correlation
    matrix computed between the outputs of the two identical networks along the batch dimension"
    (Zbontar et al., 2021). The first term makes each embedding dimension invariant to the
    augmentation (C_ii -> 1), the second decorrelates different dimensions (C_ij -> 0), so the
    embedding cannot collapse onto a few directions. z1, z2: (N, D), row i of each from the same image.

    Normalisation: each view's dimensions are standardised over the batch with the BIASED std
    (divide by N) plus `eps` inside the square root, as the official code does with
    `BatchNorm1d(D, affine=False)` (eps 1e-5), and C = z1n.T @ z2n / N. C is then exactly the
    Pearson correlation matrix (eps = 0): C_ii = 1 for perfectly correlated views, and the loss
    reaches 0. The paper's pseudo-code (Algorithm 1) writes `z.std(0)`, torch's UNBIASED std (N - 1),
    with the same / N; its C_ii can reach only (N-1)/N.

    Several processes: z1, z2 are this rank's n images; the means, stds and C are those of the
    global batch (gathered with gradient), and every rank returns the same global loss L. That is
    its share in the module convention (the mean over ranks is L): the gather's backward sums the W
    ranks' identical gradients, W dL/dz for each rank's own rows, and DDP's average over W ranks
    then gives exactly the single-process gradient. (Returning L / W would make it W times too small,
    as does summing C over ranks with a plain, non-differentiable all_reduce: lightly's issue #1977.)
    """
    a, b = _global_views(z1, z2)  # every rank: the global batch, so the same global loss (not / W: docstring)
    n = len(a)
    a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + eps)
    b = (b - b.mean(0)) / torch.sqrt(b.var(0, unbiased=False) + eps)
    c = a.T @ b / n  # (D, D) cross-correlation
    return (torch.diagonal(c) - 1).square().sum() + lambda_offdiag * _off_diagonal(c).square().sum()


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance-invariance-covariance loss of two views' embeddings z1, z2: (N, D).

    "l(Z, Z') = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]" (Bardes, Ponce & LeCun, 2022),
    in the official code's form and weights (sim_coeff, std_coeff, cov_coeff = 25, 25, 1):
    - invariance: F.mse_loss(z1, z2), the mean over samples AND dimensions of the squared difference;
    - variance: mean_j relu(1 - sqrt(Var(z1_j) + eps)) / 2 + the same for z2, a hinge that keeps
      every dimension's std over the batch at 1 or more, so the embeddings cannot collapse to a point;
    - covariance: sum of squared off-diagonal entries of Cov(z1), divided by D, + the same for z2,
      which decorrelates dimensions (no collapse onto a few directions).
    Var and Cov are the UNBIASED ones (divide by N - 1), as torch's var and the official code's
    x.T @ x / (batch_size - 1) on centred x.

    Several processes, as the official code: the invariance term is per-sample, so each rank takes
    the mean over its own n images (equal shards: the mean over ranks is the global MSE); the variance
    and covariance are those of the global batch (gathered with gradient), the same on every rank. The
    mean over ranks is then the global loss, and with the gather's backward summing the ranks'
    gradients and DDP averaging them, the gradient is the single-process one (see barlow_twins_loss).
    """
    invariance = F.mse_loss(at_least_float32(z1), at_least_float32(z2))
    a, b = _global_views(z1, z2)
    d = a.shape[1]
    a = a - a.mean(0)
    b = b - b.mean(0)
    variance = (F.relu(1 - torch.sqrt(a.var(0) + eps)).mean() + F.relu(1 - torch.sqrt(b.var(0) + eps)).mean()) / 2
    covariance = (_off_diagonal(a.T @ a / (len(a) - 1)).square().sum()
                  + _off_diagonal(b.T @ b / (len(b) - 1)).square().sum()) / d
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float = 0.95,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabelled term (Sohn et al., 2020): where the classifier is confident about a weak
    view (its top class probability at least `threshold`), that class is the pseudo-label its strong
    view must be classified as; other images add zero. The mean is over all N images, confident or
    not, as in the paper, so the term grows as confidence spreads. Returns (loss, the fraction of
    images above the threshold). No gradient flows through the pseudo-labels."""
    confidence, pseudo_labels = torch.softmax(weak_logits.detach().float(), dim=1).max(dim=1)
    mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(strong_logits.float(), pseudo_labels, reduction="none") * mask).mean()
    return loss, mask.mean()


def distribution_aligned(logits: torch.Tensor, prediction_mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReMixMatch's distribution alignment (Berthelot et al., 2020) written on logits: scaling each
    image's class probabilities by target / prediction_mean and renormalising, so that pseudo-labels
    are drawn in the classes' expected proportions (`target`) rather than in those the classifier
    currently favours (`prediction_mean`, its running mean prediction). Softmax renormalises, so
    the scaling is a shift of every image's logits by log(target / prediction_mean). Both are
    floored at 1e-12, so an empty class or an underflowing mean gives a large finite shift, not an
    infinite one (or NaN)."""
    return logits + torch.log(target.clamp_min(1e-12) / prediction_mean.clamp_min(1e-12))
