"""Occupancy Transformer: the cross-attention occupancy module (`occupancy_module="cross_attention"`).

Learnable occupancy queries, laid out on the BEV grid of `num_occupancy_queries_hw`, self-attend and cross-attend to
the image tokens' hidden states (the output of one LM layer, or the projector output) in a few pre-norm transformer
blocks; `OccVLAOccupancyHead` then maps their states into the VAE latent. The module only reads the image states and
writes nothing back into the LM, so text logits and the trajectory are the same bits with and without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_occvla import OccVLAConfig

MLP_RATIO = 4  # feed-forward width / model width, as in ViT and the original Transformer


class OccupancyAttention(nn.Module):
    """Multi-head attention of `queries` (batch, Q, D) over `context` (batch, N, D), no mask (every image token is
    real: each sample has the same number)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        """(batch, length, D) -> (batch, heads, length, D / heads)."""
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(queries))
        k, v = self._heads(self.k_proj(context)), self._heads(self.v_proj(context))
        attended = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, Q, D / heads)
        return self.o_proj(attended.transpose(1, 2).flatten(2))


class OccupancyTransformerBlock(nn.Module):
    """Pre-norm block: query self-attention, cross-attention to the image states, GELU MLP; each residual."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(hidden_size)
        self.self_attn = OccupancyAttention(hidden_size, num_heads)
        self.cross_attn_norm = nn.LayerNorm(hidden_size)
        self.cross_attn = OccupancyAttention(hidden_size, num_heads)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, MLP_RATIO * hidden_size), nn.GELU(), nn.Linear(MLP_RATIO * hidden_size, hidden_size)
        )

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(batch, Q, D) queries, (batch, N, D) normalised image context -> (batch, Q, D)."""
        normed = self.self_attn_norm(queries)
        queries = queries + self.self_attn(normed, normed)
        queries = queries + self.cross_attn(self.cross_attn_norm(queries), context)
        return queries + self.mlp(self.mlp_norm(queries))


class OccupancyTransformer(nn.Module):
    """Occupancy queries (one per BEV patch of the latent) refined by cross-attention to the image tokens.

    The image states get a learned position embedding per image token (view and patch), since hidden states carry
    no explicit position; the output goes to the occupancy head, which normalises it first.
    """

    def __init__(self, config: OccVLAConfig) -> None:
        super().__init__()
        hidden_size = config.text_config.hidden_size
        self.num_image_tokens = config.num_views * config.image_seq_length
        self.queries = nn.Embedding(config.num_occupancy_queries, hidden_size)
        self.image_positions = nn.Embedding(self.num_image_tokens, hidden_size)
        self.context_norm = nn.LayerNorm(hidden_size)
        self.blocks = nn.ModuleList(
            OccupancyTransformerBlock(hidden_size, config.occupancy_transformer_heads)
            for _ in range(config.occupancy_transformer_layers)
        )

    def forward(self, hidden_states: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
        """Sequence states at the source layer (batch, L, D) and the image-token positions (batch, L) bool -> query
        states (batch, num_queries, D). Every sample must have `num_views * image_seq_length` image tokens
        (`OccVLAModel` checks this for inputs with `pixel_values`)."""
        batch, _, hidden_size = hidden_states.shape
        # Positions of each sample's image tokens in sequence order, by a stable sort (a gather, no host sync).
        positions = torch.argsort(is_image.int(), dim=1, descending=True, stable=True)[:, : self.num_image_tokens]
        image_states = hidden_states.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden_size))
        context = self.context_norm(image_states) + self.image_positions.weight
        queries = self.queries.weight.to(context.dtype).unsqueeze(0).expand(batch, -1, -1)
        for block in self.blocks:
            queries = block(queries, context)
        return queries


def hidden_states_request(requested: bool | int | list[int] | None, source_layer: int) -> bool | list[int]:
    """`output_hidden_states` for the LM so that it also returns hidden state `source_layer`: everything when the
    caller asked for everything, else the caller's selection (indices, or none) plus that index."""
    if requested is True:
        return True
    if requested is None or requested is False:
        return [source_layer]
    return [*([requested] if isinstance(requested, int) else requested), source_layer]


__all__ = ["OccupancyTransformer", "hidden_states_request"]
