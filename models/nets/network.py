"""The networks: an id-embedding model and a two-tower model whose item tower also reads content.

Both score ``score(u, i) = <user_vector(u), item_vector(i)> + item_bias[i]`` and both collapse to plain arrays
(:meth:`MatrixFactorization.arrays`), so every trained network is evaluated, served and stored as a
:class:`~models.factors.FactorModel` whatever its family.

* :class:`MatrixFactorization`: ``user_vector = user_emb[u]``, ``item_vector = item_emb[i]``.
* :class:`TwoTower`: the item tower adds a linear map of the item's content features (its text embedding,
  which holds title and genres) to the id embedding: ``item_vector = item_emb[i] + content[i] @ P``. An item
  with no interaction still gets ``content[i] @ P``, and what ``P`` learns from some items carries to all.

Either can carry low-rank residual adapters (``v + v A B``, ``B`` starting at zero so the adapted network
starts equal to the original), the trainable part of the ``adapter`` fine-tuning mode.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class LowRankAdapter(nn.Module):
    """``x + (x @ A) @ B`` with ``A`` (dim, rank) small random and ``B`` (rank, dim) zero: identity at start."""

    def __init__(self, dim: int, rank: int, *, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.down = nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(dim))
        self.up = nn.Parameter(torch.zeros(rank, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x @ self.down) @ self.up


class MatrixFactorization(nn.Module):
    """``score(u, i) = <user_emb[u], item_emb[i]> + item_bias[i]`` (optionally through adapters)."""

    family = "mf"

    def __init__(self, n_users: int, n_items: int, dim: int, *, init_std: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.user_adapter: LowRankAdapter | None = None
        self.item_adapter: LowRankAdapter | None = None
        with torch.no_grad():
            self.user_emb.weight.normal_(0.0, init_std, generator=generator)
            self.item_emb.weight.normal_(0.0, init_std, generator=generator)

    @classmethod
    def from_arrays(
        cls, user_factors: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray
    ) -> MatrixFactorization:
        """A network whose weights are copies of the given arrays (used for transfer initialisation)."""
        net = cls(user_factors.shape[0], item_factors.shape[0], user_factors.shape[1])
        net._copy_arrays(user_factors, item_factors, item_bias)
        return net

    def _copy_arrays(self, user_factors: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray) -> None:
        with torch.no_grad():
            self.user_emb.weight.copy_(_tensor(user_factors))
            self.item_emb.weight.copy_(_tensor(item_factors))
            self.item_bias.copy_(_tensor(item_bias))

    @property
    def n_items(self) -> int:
        return int(self.item_bias.shape[0])

    @property
    def dim(self) -> int:
        return int(self.user_emb.embedding_dim)

    def add_adapters(self, rank: int, *, seed: int = 0) -> None:
        """Put a low-rank residual adapter on the user and the item side (identity until trained)."""
        self.user_adapter = LowRankAdapter(self.dim, rank, seed=seed)
        self.item_adapter = LowRankAdapter(self.dim, rank, seed=seed + 1)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) user rows -> (B, dim)."""
        vectors = self.user_emb(users)
        return self.user_adapter(vectors) if self.user_adapter is not None else vectors

    def _item_base(self, items: torch.Tensor | None) -> torch.Tensor:
        return self.item_emb.weight if items is None else self.item_emb(items)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of the given item rows (B,) -> (B, dim), or of every item when None."""
        vectors = self._item_base(items)
        return self.item_adapter(vectors) if self.item_adapter is not None else vectors

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user: (batch,) -> (batch, n_items)."""
        return self.user_vectors(users) @ self.item_vectors().T + self.item_bias

    def score_users(self, user_index: torch.Tensor) -> torch.Tensor:
        """Like :meth:`forward`, but rows with index -1 (unknown users) get a zero user vector."""
        known = user_index >= 0
        vectors = torch.zeros((len(user_index), self.dim), dtype=self.item_bias.dtype, device=self.item_bias.device)
        vectors[known] = self.user_vectors(user_index[known])
        # the bias added inside the product: one pass over the (users, items) scores instead of two (on the CPU
        # the same values as ``vectors @ items.T + bias``, checked by a unit test)
        return torch.addmm(self.item_bias, vectors, self.item_vectors().T)

    def transferred_parameters(self) -> list[nn.Parameter]:
        """The weights that carry what the source learnt (the user tower): the lower learning rate of
        discriminative fine-tuning applies to them."""
        return [self.user_emb.weight]

    def freeze_base(self) -> None:
        """Freeze every weight except the adapters and the item biases (the ``adapter`` mode)."""
        adapters = {id(p) for m in (self.user_adapter, self.item_adapter) if m is not None for p in m.parameters()}
        for parameter in self.parameters():
            if id(parameter) not in adapters and parameter is not self.item_bias:
                parameter.requires_grad_(False)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user_factors, item_factors, item_bias) as float32 numpy copies of the effective vectors."""
        with torch.no_grad():
            users = self.user_vectors(torch.arange(self.user_emb.num_embeddings, device=self.item_bias.device))
            items = self.item_vectors()
        return (_array(users), _array(items), _array(self.item_bias))


class TwoTower(MatrixFactorization):
    """Item tower ``item_emb[i] + content[i] @ P``; user tower ``user_emb[u]`` (see the module docstring).

    ``content`` (n_items, c) is a buffer (saved in checkpoints, not trained); ``P`` is ``content_proj``.
    """

    family = "two-tower"

    def __init__(self, n_users: int, n_items: int, dim: int, *, content: np.ndarray, init_std: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(n_users, n_items, dim, init_std=init_std, seed=seed)
        if content.shape[0] != n_items:
            raise ValueError(f"content has {content.shape[0]} rows for {n_items} items")
        self.register_buffer("content", _tensor(content))
        self.content_proj = nn.Linear(content.shape[1], dim, bias=False)
        generator = torch.Generator().manual_seed(seed + 7)
        with torch.no_grad():  # small: at the start the id embeddings dominate
            self.content_proj.weight.normal_(0.0, init_std / math.sqrt(content.shape[1]), generator=generator)

    @classmethod
    def from_arrays(  # type: ignore[override]
        cls, user_factors: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray, *, content: np.ndarray,
        projection: np.ndarray,
    ) -> TwoTower:
        """A two-tower network whose *effective* item vectors equal ``item_factors``: the id embeddings are
        the residuals ``item_factors - content @ projection`` (``projection``: (c, dim))."""
        net = cls(user_factors.shape[0], item_factors.shape[0], user_factors.shape[1], content=content)
        residual = np.asarray(item_factors, dtype=np.float32) - np.asarray(content, dtype=np.float32) @ projection
        net._copy_arrays(user_factors, residual, item_bias)
        with torch.no_grad():
            net.content_proj.weight.copy_(_tensor(np.asarray(projection, dtype=np.float32).T))
        return net

    def _item_base(self, items: torch.Tensor | None) -> torch.Tensor:
        content = self.content if items is None else self.content[items]
        return super()._item_base(items) + self.content_proj(content)

    def transferred_parameters(self) -> list[nn.Parameter]:
        return [self.user_emb.weight, self.content_proj.weight]


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32, copy=True)
