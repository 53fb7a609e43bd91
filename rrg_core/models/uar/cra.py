"""Cross-modal Representation Aligner (CRA, UAR paper sec. 3.3, eqs 6-10).

CRA is modality-agnostic: one module, with one basis, one attention and one pair of gates,
processes the visual embeddings E^(I) (B, L, d) and the report embeddings E^(R) (B, T, d) alike.

- **Basis** (eq 6): B (n_basis x d), by QR of a Gaussian matrix, fixed (a buffer, so checkpoints
  keep the exact basis), adjusted as ``B_hat = gain * B + bias`` with gain and bias of B's shape
  (initialised to 1 and 0). With n_basis >= d, as in the paper (2048 x 512), B has orthonormal
  *columns* (B^T B = I_d); n_basis vectors in d dimensions cannot all be orthogonal to one another.
  With n_basis <= d its rows are orthonormal. Table 3's "uniform" and "normal" subspaces are the
  ``basis`` options of the same name, scaled to the orthonormal basis's entry variance 1/n_basis.
- **Attention** (eq 7): multi-head attention of each position's embedding (query) over B_hat (keys
  and values): ``F~ = softmax(E W_Q (B_hat W_K)^T / sqrt(d)) B_hat W_V``, the decoder's
  :class:`~rrg_core.models.decoder.MultiHeadAttention` (its output projection is the usual
  multi-head one). Each position attends on its own, so CRA never mixes positions: applied to a
  report it stays causal, and the decoder can apply it token by token.
- **Dual gate** (eqs 8-9): ``G(X, Y) = sigmoid(X W1 + Y W2)`` (W1 with a bias, as LSTM gates have),
  an input gate G_I and a forget gate G_F, and
  ``F = G_I(E, F~) * tanh(E + F~) + G_F(E, F~) * E + F~``. Table 4's variants are the ``fusion``
  options "none" (F = F~) and "addition" (F = E + F~).
- **Triplet loss** (eq 10): :func:`triplet_loss` on global features, with in-batch hardest negatives.
  The global feature of a modality is the mean of its CRA features over its real positions
  (:func:`masked_mean`): all L visual tokens (both views), the report's non-pad tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rrg_core.models.decoder import MultiHeadAttention

BASIS_KINDS: tuple[str, ...] = ("orthogonal", "uniform", "normal")
FUSIONS: tuple[str, ...] = ("dual_gate", "addition", "none")


def orthonormal_basis(n_basis: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """A random (n_basis, dim) matrix with orthonormal columns (n_basis >= dim) or rows (n_basis < dim).

    QR of a Gaussian matrix is the Gram-Schmidt orthogonalisation the paper names; flipping each
    direction by the sign of R's diagonal makes the result unique (Haar-distributed).
    """
    if n_basis < 1 or dim < 1:
        raise ValueError(f"basis sizes must be positive, got {n_basis} x {dim}")
    gaussian = torch.randn(max(n_basis, dim), min(n_basis, dim), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)  # q: orthonormal columns
    q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
    basis = q if n_basis >= dim else q.T
    return basis.float().contiguous()


def make_basis(kind: str, n_basis: int, dim: int, seed: int = 0) -> Tensor:
    """The fixed basis of eq 6: "orthogonal" (default), or Table 3's "uniform" / "normal" subspaces."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "orthogonal":
        return orthonormal_basis(n_basis, dim, generator)
    scale = n_basis**-0.5  # the entry standard deviation of an orthonormal basis with n_basis rows
    if kind == "normal":
        return torch.randn(n_basis, dim, generator=generator) * scale
    if kind == "uniform":  # U(-a, a) has std a / sqrt(3)
        return (torch.rand(n_basis, dim, generator=generator) * 2 - 1) * scale * 3**0.5
    raise ValueError(f"unknown basis kind {kind!r}; expected one of: {', '.join(BASIS_KINDS)}")


class Gate(nn.Module):
    """Eq 8: ``G(X, Y) = sigmoid(X W1 + Y W2)``, values in (0, 1), one per feature."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_model)
        self.w2 = nn.Linear(d_model, d_model, bias=False)  # one bias is enough for the sum

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.sigmoid(self.w1(x) + self.w2(y))


@dataclass
class CRAConfig:
    """Sizes and Table 3/4 variants of a :class:`CRA`; the paper's basis has 2048 vectors."""

    d_model: int = 512
    n_heads: int = 8
    n_basis: int = 2048
    dropout: float = 0.1
    basis: str = "orthogonal"
    fusion: str = "dual_gate"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.basis not in BASIS_KINDS:
            raise ValueError(f"unknown CRA basis {self.basis!r}; expected one of: {', '.join(BASIS_KINDS)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown CRA fusion {self.fusion!r}; expected one of: {', '.join(FUSIONS)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


class CRA(nn.Module):
    """Eqs 6-9 on embeddings (B, N, d) of either modality; see the module docstring."""

    def __init__(self, config: CRAConfig) -> None:
        super().__init__()
        self.config = config
        d, n = config.d_model, config.n_basis
        self.register_buffer("basis", make_basis(config.basis, n, d, config.seed))
        self.gain = nn.Parameter(torch.ones(n, d))
        self.bias = nn.Parameter(torch.zeros(n, d))
        self.attention = MultiHeadAttention(d, config.n_heads, config.dropout)
        self.input_gate = Gate(d)
        self.forget_gate = Gate(d)

    def adjusted_basis(self) -> Tensor:
        """Eq 6: ``B_hat = gain * B + bias`` (n_basis, d)."""
        return self.gain * self.basis + self.bias

    def attend(self, embeddings: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Eq 7: F~ (B, N, d) of embeddings (B, N, d); with ``return_weights`` also the attention
        over the basis (B, heads, N, n_basis)."""
        keys, values = self.attention.project_kv(self.adjusted_basis().unsqueeze(0))  # shared by the batch
        out, weights = self.attention.attend(embeddings, keys, values)
        return (out, weights) if return_weights else out

    def gates(self, embeddings: Tensor, attended: Tensor) -> tuple[Tensor, Tensor]:
        """The input and forget gates G_I(E, F~), G_F(E, F~) (eq 8), each (B, N, d) in (0, 1)."""
        return self.input_gate(embeddings, attended), self.forget_gate(embeddings, attended)

    def fuse(self, embeddings: Tensor, attended: Tensor) -> Tensor:
        """Eq 9 (or Table 4's "addition" / "none" variants)."""
        if self.config.fusion == "none":
            return attended
        if self.config.fusion == "addition":
            return embeddings + attended
        g_in, g_forget = self.gates(embeddings, attended)
        return g_in * torch.tanh(embeddings + attended) + g_forget * embeddings + attended

    def forward(self, embeddings: Tensor) -> Tensor:
        """F (B, N, d) from E (B, N, d): attention over the adjusted basis, then the dual gate."""
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.config.d_model:
            raise ValueError(
                f"CRA expects embeddings (batch, length, {self.config.d_model}), "
                f"got {tuple(embeddings.shape)}"
            )
        return self.fuse(embeddings, self.attend(embeddings))


def masked_mean(features: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of (B, N, d) over the positions where ``mask`` (B, N) is True (all of them when None)."""
    if mask is None:
        return features.mean(dim=1)
    weights = mask.to(features.dtype).unsqueeze(-1)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
