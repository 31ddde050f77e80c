"""A learnable choice among candidate precisions, per layer or per output channel.

Logits ``α`` start at ``p_i / max(p)``; ``θ = softmax(α / T)`` in training (optionally with
Gumbel noise, or the straight-through one-hot of the argmax in hard mode), the argmax in eval
mode. A choice can be frozen at an assignment: then it has no logits and θ is that one-hot.
See docs/algorithm.md#precision-choices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("softmax", "gumbel", "hard")


class PrecisionChoice(nn.Module):
    """Candidate precisions ``bits`` (ascending) and the logits that choose among them."""

    def __init__(
        self,
        bits: Sequence[int],
        channels: int | None = None,
        min_keep: int = 1,
    ) -> None:
        super().__init__()
        bits = tuple(int(b) for b in bits)
        if list(bits) != sorted(set(bits)):
            raise ValueError(f"precisions must be distinct and ascending, got {bits}")
        if 0 in bits and channels is None:
            raise ValueError("0-bit (pruning) needs a per-channel choice")
        self.bits = bits
        self.channels = channels
        self.min_keep = min_keep
        self.temperature = 1.0
        self.mode = "softmax"
        init = torch.tensor(bits, dtype=torch.float32) / max(max(bits), 1)
        if channels is not None:
            init = init.unsqueeze(1).repeat(1, channels)
        self.alpha: nn.Parameter | None = nn.Parameter(init)
        self.register_buffer("fixed_index", None)
        self._theta: Tensor | None = None

    @property
    def per_channel(self) -> bool:
        return self.channels is not None

    @property
    def is_fixed(self) -> bool:
        return self.fixed_index is not None

    @property
    def can_prune(self) -> bool:
        return 0 in self.bits

    def soft_theta(self) -> Tensor:
        """``softmax(α / T)`` over the precision axis, without noise."""
        return F.softmax(self.alpha / self.temperature, dim=0)

    def assignment(self) -> Tensor:
        """Index into ``bits`` of the chosen precision: shape ``()`` or ``(channels,)``.

        Per channel with 0 among the candidates, a layer keeps at least ``min_keep`` channels:
        those with the largest non-zero mass are given their best non-zero precision.
        """
        if self.fixed_index is not None:
            return self.fixed_index
        with torch.no_grad():
            index = self.alpha.argmax(dim=0)
            if not (self.per_channel and self.can_prune):
                return index
            keep = min(self.min_keep, self.channels)
            alive = index != 0
            missing = keep - int(alive.sum())
            if missing > 0:
                revive = self._most_alive(alive)[:missing]
                index[revive] = self.alpha[1:, revive].argmax(dim=0) + 1
            return index

    def _most_alive(self, alive: Tensor) -> Tensor:
        """Pruned channels by decreasing non-zero mass ``Σ_{p≠0} θ_p``, ties to the lower index.

        The mass is ranked by its logarithm in float64: when the 0-bit logit dominates,
        ``softmax`` underflows to exact zeros in float32 and every channel ties, so a float32
        and a float64 copy of one model (the export check) would revive different channels.
        """
        logits = self.alpha.detach().double() / self.temperature
        log_mass = torch.logsumexp(logits[1:], 0) - torch.logsumexp(logits, 0)
        log_mass = log_mass.masked_fill(alive, float("-inf"))
        return torch.sort(log_mass, descending=True, stable=True).indices

    def one_hot(self, index: Tensor | None = None) -> Tensor:
        """θ of an assignment, precision axis first: ``(n,)`` or ``(n, channels)``."""
        index = self.assignment() if index is None else index
        return F.one_hot(index, len(self.bits)).movedim(-1, 0).float()

    def sample(self) -> Tensor:
        """Compute θ for this step and cache it, so every user of a shared choice sees one θ."""
        if self.is_fixed or not self.training:
            theta = self.one_hot().to(self._device())
        elif self.mode == "gumbel":
            gumbel = -torch.empty_like(self.alpha).exponential_().log()
            theta = F.softmax((self.alpha + gumbel) / self.temperature, dim=0)
        elif self.mode == "hard":
            soft = self.soft_theta()
            theta = self.one_hot().to(soft.device) - soft.detach() + soft
        else:
            theta = self.soft_theta()
        self._theta = theta
        return theta

    def theta(self) -> Tensor:
        """θ of the current step (sampled on first use after :meth:`sample` was last called)."""
        return self._theta if self._theta is not None else self.sample()

    def channel_mass(self) -> Tensor:
        """Channels per candidate ``(n,)``: ``Σ_c θ_{j,c}`` per channel, ``θ_j · 1`` per layer."""
        theta = self.theta()
        return theta.sum(1) if self.per_channel else theta

    def freeze(self, index: Tensor | None = None) -> None:
        """Fix the choice at ``index`` (default: the current assignment) and drop the logits."""
        index = self.assignment() if index is None else index
        self.fixed_index = index.detach().clone().to(torch.long)
        self.alpha = None
        self._theta = None

    def keep_channels(self, keep: Tensor) -> None:
        """Restrict a frozen per-channel choice to the kept channels (export)."""
        if not self.is_fixed or not self.per_channel:
            raise RuntimeError("only a frozen per-channel choice can drop channels")
        self.fixed_index = self.fixed_index[keep].clone()
        self.channels = int(keep.numel())
        self._theta = None

    def __getstate__(self) -> dict:
        # The cached θ belongs to one step's autograd graph (a non-leaf tensor): copying or
        # pickling it fails, so a copy (e.g. harden() after a training step) re-samples.
        state = super().__getstate__()
        state["_theta"] = None
        return state

    def _device(self) -> torch.device:
        if self.alpha is not None:
            return self.alpha.device
        return self.fixed_index.device

    def extra_repr(self) -> str:
        scope = f"channels={self.channels}" if self.per_channel else "per_layer"
        return f"bits={self.bits}, {scope}, fixed={self.is_fixed}"
