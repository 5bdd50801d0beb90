"""Loss functions as pure functions of embeddings: no state, no modules, known-answer tested."""

import torch
import torch.nn.functional as F


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
