"""The text table's transforms: ZCA or PCA whitening, and plain principal components."""

from __future__ import annotations

import torch


def whitening(
    vectors: torch.Tensor, eps: float = 1e-6, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA whitening of the rows of `vectors` (n, d) -> mean (d,), transform (d, d), such that
    (vectors - mean) @ transform has identity covariance up to one scale, chosen so that the
    whitened rows keep the centred rows' mean norm. Directions with variance below `eps` times
    the largest (a catalog smaller than d) are scaled as if they had that variance.

    `dim` < d: PCA whitening onto the `dim` directions of largest variance instead, largest
    first -> transform (d, dim), same scale rule (BERT-whitening's dimension reduction)."""
    mean, centred, variances, directions = _principal_axes(vectors)
    scale = variances.clamp(min=eps * variances.max().clamp(min=1e-30)).rsqrt()  # (d,)
    if dim is None or dim >= len(variances):
        transform = directions @ torch.diag(scale) @ directions.T  # (d, d)
    else:
        transform = directions[:, :dim] * scale[:dim]  # (d, dim)
    whitened_norm = (centred @ transform).norm(dim=1).mean()
    transform = transform * (centred.norm(dim=1).mean() / whitened_norm.clamp(min=1e-30))
    return mean.to(vectors.dtype), transform.to(vectors.dtype)


def principal_components(vectors: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of `vectors` (n, d) centred and projected onto their `dim` directions of
    largest variance, largest first, unscaled -> mean (d,), transform (d, dim)."""
    mean, _, _, directions = _principal_axes(vectors)
    return mean.to(vectors.dtype), directions[:, :dim].to(vectors.dtype)


def _principal_axes(vectors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(n, d) -> mean (d,), centred rows (n, d), covariance eigenvalues (d,) and eigenvectors
    (d, d columns), largest variance first; float64."""
    data = vectors.double()
    mean = data.mean(0)  # (d,)
    centred = data - mean  # (n, d)
    covariance = centred.T @ centred / max(len(data) - 1, 1)  # (d, d)
    variances, directions = torch.linalg.eigh(covariance)  # ascending
    return mean, centred, variances.flip(0), directions.flip(1)
