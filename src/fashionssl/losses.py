"""Loss functions as pure functions of embeddings: no state, no modules, known-answer tested."""

import torch
import torch.nn.functional as F

from .distributed import gather_with_grad, rank


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy over the 2N views of a batch.

    "Given a positive pair, we treat the other 2(N-1) augmented examples within a minibatch as
    negative examples" (Chen et al., 2020): each of the 2N embeddings is classified against the
    other 2N-1, of which exactly one (its other view) is the positive. The mean over all 2N anchors
    makes the loss symmetric in z1 and z2.

    Several processes: z1, z2 are this rank's n images of the global batch of N = W*n (rank order).
    The anchors are this rank's 2n views, the candidates all 2N views, gathered with gradient, so
    the mean of the ranks' losses is the loss of the global batch, negatives from every rank.
    """
    n = z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2n, D): this rank's views
    # One all-gather of both views, then regrouped view-major: (2N, D) = view 1 of all N, view 2 of all N.
    everyone = gather_with_grad(anchors)  # (W * 2n, D), rank-major
    candidates = everyone.view(-1, 2, n, everyone.shape[1]).transpose(0, 1).reshape(-1, everyone.shape[1])
    total = len(candidates) // 2  # N
    own = rank() * n + torch.arange(n, device=anchors.device)  # this rank's images' places in the global batch
    logits = anchors @ candidates.T / temperature  # (2n, 2N) cosine similarities
    logits[torch.arange(2 * n, device=anchors.device), torch.cat([own, total + own])] = float("-inf")  # not its own negative
    targets = torch.cat([total + own, own])  # view 1 of image i <-> view 2 of image i
    return F.cross_entropy(logits, targets)


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
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.float(), dim=1)
    negatives = F.normalize(queue.float(), dim=1)
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
    return (2 - 2 * F.cosine_similarity(prediction.float(), target.float(), dim=1)).mean()


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -p/||p|| . z/||z||, averaged over the batch; it lies in [-1, 1].

    "D(p1, z2) = - p1/||p1||_2 . z2/||z2||_2 [...] the negative cosine similarity" (Chen & He, 2021).
    The stop-gradient D(p1, stopgrad(z2)) is the caller's to apply. Per-sample: nothing to gather
    under DDP.
    """
    return -F.cosine_similarity(prediction.float(), target.float(), dim=1).mean()
