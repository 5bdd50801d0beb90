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
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    n = z1.shape[0]
    logits = z @ z.T / temperature  # (2N, 2N) cosine similarities
    logits.fill_diagonal_(float("-inf"))  # an embedding is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # i <-> i + N
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
    image = F.normalize(image_emb.float(), dim=1)
    text = F.normalize(text_emb.float(), dim=1)
    targets = torch.arange(len(image), device=image.device) + rank() * len(image)  # own pairs' global rows
    image_to_text = logit_scale * image @ gather_with_grad(text).T  # (N, world * N)
    text_to_image = logit_scale * text @ gather_with_grad(image).T
    return (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)) / 2
