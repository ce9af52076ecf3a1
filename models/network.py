"""The id-embedding network: user and item embeddings plus an item bias."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MatrixFactorization(nn.Module):
    """``score(u, i) = <user_emb[u], item_emb[i]> + item_bias[i]``."""

    def __init__(self, n_users: int, n_items: int, dim: int, *, init_std: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        with torch.no_grad():
            self.user_emb.weight.normal_(0.0, init_std, generator=generator)
            self.item_emb.weight.normal_(0.0, init_std, generator=generator)

    @classmethod
    def from_arrays(
        cls, user_factors: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray
    ) -> MatrixFactorization:
        """A network whose weights are copies of the given arrays (used for transfer initialisation)."""
        net = cls(user_factors.shape[0], item_factors.shape[0], user_factors.shape[1])
        with torch.no_grad():
            net.user_emb.weight.copy_(torch.from_numpy(np.asarray(user_factors, dtype=np.float32)))
            net.item_emb.weight.copy_(torch.from_numpy(np.asarray(item_factors, dtype=np.float32)))
            net.item_bias.copy_(torch.from_numpy(np.asarray(item_bias, dtype=np.float32)))
        return net

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user: (batch,) -> (batch, n_items)."""
        return self.user_emb(users) @ self.item_emb.weight.T + self.item_bias

    def score_users(self, user_index: torch.Tensor) -> torch.Tensor:
        """Like :meth:`forward`, but rows with index -1 (unknown users) get a zero user vector."""
        known = user_index >= 0
        vectors = torch.zeros((len(user_index), self.user_emb.embedding_dim), dtype=self.user_emb.weight.dtype,
                              device=self.user_emb.weight.device)
        vectors[known] = self.user_emb(user_index[known])
        return vectors @ self.item_emb.weight.T + self.item_bias

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user_factors, item_factors, item_bias) as float32 numpy copies."""
        return (
            self.user_emb.weight.detach().cpu().numpy().copy(),
            self.item_emb.weight.detach().cpu().numpy().copy(),
            self.item_bias.detach().cpu().numpy().copy(),
        )
