"""How a pair's score is made from its two embeddings: the raw cosine, or adaptive score normalisation.

``as-norm`` is symmetric adaptive score normalisation (AS-norm). Each image
is compared with a cohort of identities that take no part in the test: the
checkpoint's own class centres, the margin head's L2-normalised weight rows.
The ``K`` centres most similar to the image give a mean ``mu`` and a spread
``sigma``, and a pair's cosine ``s`` is standardised against both sides::

    score = 0.5 * ((s - mu_a) / sigma_a + (s - mu_b) / sigma_b)

A face that resembles many people (a common pose, light or look) has high
cosines with everyone, and a raw threshold then accepts it too easily;
standardising removes that per-face offset, so one threshold fits every face
better. Nothing about the test people is used beyond the pair itself.

A sub-centre head holds several rows per class; as in its classification
logits, an image's cosine with a class is that of its nearest sub-centre, so
the cohort keeps one entry per identity (not near-copies of the same one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from helpers.core.errors import UserError

METHODS = ("none", "as-norm")

# K = 300 nearest class centres: enough values for a steady mean and spread
# (their noise shrinks as 1/sqrt(K)), few enough to stay adaptive (only the
# identities a false accept would come from): about 3.5 % of the course's
# 8,631 classes. Cohorts with fewer classes use all of them (plain S-norm).
DEFAULT_COHORT_SIZE = 300

# Images whose cohort cosines are computed at once: 1,024 x 8,631 classes x
# 3 sub-centres in fp32 is about 100 MB, fine on any device.
_CHUNK = 1024

# A spread below this is a cohort of equal cosines (identical or untrained
# rows); real identities' cosines differ by far more, and the floor keeps the
# score finite instead of inf or NaN.
_MIN_SPREAD = 1e-6


@dataclass(frozen=True)
class ScoreNorm:
    """The score a pair gets: ``none`` (cosine) or ``as-norm`` against the top ``cohort_size`` class centres."""

    method: str = "none"
    cohort_size: int = DEFAULT_COHORT_SIZE

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"unknown score normalisation '{self.method}'; use none or as-norm")
        if not isinstance(self.cohort_size, (int, np.integer)) or self.cohort_size < 2:
            raise UserError(f"the cohort size must be a whole number of at least 2 (the spread of a single "
                            f"cosine is 0), not {self.cohort_size}")

    def top_k(self, head) -> int:
        """The cohort entries each image's statistics use: ``cohort_size``, or every class when there are fewer."""
        if head.out_features < 2:
            raise UserError("AS-norm needs a cohort of at least 2 classes; this checkpoint's head has "
                            f"{head.out_features}")
        return min(self.cohort_size, head.out_features)

    def describe(self, head) -> dict:
        """What was applied, for reports: the method and, for AS-norm, the K used out of how many classes."""
        if self.method == "none":
            return {"method": "none"}
        return {"method": self.method, "cohort_size": self.top_k(head), "cohort_classes": head.out_features}


def norm_words(described: dict) -> str:
    """What :meth:`ScoreNorm.describe` returned, in a report's words ('' for raw cosines)."""
    if described["method"] == "none":
        return ""
    return f"AS-norm against the top {described['cohort_size']} of {described['cohort_classes']} class centres"


@torch.no_grad()
def cohort_statistics(embeddings: torch.Tensor, head, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the mean and spread (float64, CPU) of its ``top_k`` highest cosines with the head's classes.

    The spread is the standard deviation of those K values themselves (no
    Bessel correction). A NaN embedding (an unreadable image) gets NaN.
    """
    means, spreads = [], []
    device = head.weight.device
    for chunk in embeddings.split(_CHUNK):
        nearest = head.cosine(chunk.to(device)).topk(top_k, dim=1).values.double().cpu()
        means.append(nearest.mean(dim=1))
        spreads.append(nearest.std(dim=1, correction=0))
    return torch.cat(means), torch.cat(spreads)


def pair_scores(embeddings: torch.Tensor, first, second, norm: ScoreNorm = ScoreNorm(), head=None) -> np.ndarray:
    """Scores (float64) of the pairs ``(embeddings[first[i]], embeddings[second[i]])`` of unit embeddings.

    Each image's cohort statistics are computed once, however many pairs
    name it; ``head`` (the margin head) is needed only for AS-norm.
    """
    first, second = torch.as_tensor(first, dtype=torch.long), torch.as_tensor(second, dtype=torch.long)
    cosines = (embeddings[first] * embeddings[second]).sum(dim=1).double()
    if norm.method == "as-norm":
        mean, spread = cohort_statistics(embeddings, head, norm.top_k(head))
        spread = spread.clamp_min(_MIN_SPREAD)
        cosines = 0.5 * ((cosines - mean[first]) / spread[first] + (cosines - mean[second]) / spread[second])
    return cosines.numpy()
