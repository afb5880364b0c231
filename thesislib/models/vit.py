"""A small Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Pre-norm encoder blocks ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` with timm-style module
names, so pruning and resampling code can address every tensor by name:

* ``patch_embed`` -- ``Conv2d(in_channels, dim, patch_size, stride=patch_size)``;
* ``cls_token`` ``[1, 1, dim]`` and ``pos_embed`` ``[1, 1 + num_patches, dim]`` parameters;
* ``blocks[i].norm1 / attn / norm2 / mlp`` with ``attn.qkv``, ``attn.proj`` and ``mlp.fc1``, ``mlp.fc2``;
* ``norm`` (final LayerNorm) and ``head`` (Linear on the cls token).

:class:`Attention` keeps ``num_heads`` and ``head_dim`` as plain attributes and its forward
reshapes with them (not with sizes frozen at construction), so code that shrinks the number of
heads or the per-head dimension only has to replace ``qkv``/``proj`` and update the attributes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._width import check_positive_ints, scaled


class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017), timm layout.

    ``qkv: Linear(dim, 3 * num_heads * head_dim)`` holds the q, k, v projections in this order
    (each ``num_heads * head_dim`` rows, head-major); ``proj: Linear(num_heads * head_dim, dim)``.
    ``scale`` is the logit scale passed to :func:`torch.nn.functional.scaled_dot_product_attention`;
    ``None`` means the standard ``1 / sqrt(head_dim)`` of the current ``head_dim``.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, scale: float | None = None) -> None:
        super().__init__()
        check_positive_ints(dim=dim, num_heads=num_heads, head_dim=head_dim)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = scale
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim)
        self.proj = nn.Linear(num_heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [b, heads, n, head_dim]
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class Mlp(nn.Module):
    """Transformer feed-forward block ``fc2(GELU(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer encoder block (Dosovitskiy et al. 2021, Eq. 2-3)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier on the cls token (Dosovitskiy et al. 2021), sized for small images."""

    def __init__(
        self,
        image_size: int = 28,
        patch_size: int = 4,
        in_channels: int = 1,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        head_dim: int = 16,
        mlp_hidden: int = 128,
    ) -> None:
        super().__init__()
        check_positive_ints(image_size=image_size, patch_size=patch_size, in_channels=in_channels,
                            num_classes=num_classes, depth=depth, mlp_hidden=mlp_hidden)
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        self.image_size = image_size
        self.patch_size = patch_size
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, head_dim, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [b, patches, dim]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def vit(
    image_size: int = 28,
    patch_size: int = 4,
    in_channels: int = 1,
    num_classes: int = 10,
    dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    head_dim: int = 16,
    mlp_ratio: float = 2.0,
    width: float = 1.0,
) -> VisionTransformer:
    """A small ViT (Dosovitskiy et al. 2021); defaults fit 28x28 Fashion-MNIST (7x7 = 49 patches).

    ``width`` multiplies the embedding ``dim`` and the per-head ``head_dim`` (the number of heads
    and the depth stay); the MLP hidden size is ``round(mlp_ratio * dim)`` of the scaled ``dim``.
    """
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
    dim = scaled(dim, width)
    head_dim = scaled(head_dim, width)
    return VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        in_channels=in_channels,
        num_classes=num_classes,
        dim=dim,
        depth=depth,
        num_heads=num_heads,
        head_dim=head_dim,
        mlp_hidden=max(1, int(round(mlp_ratio * dim))),
    )
