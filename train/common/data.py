"""Data helpers shared by the models' training: the in-memory uint8 image cache and id padding.

Every study's views are decoded and resized once and kept as uint8 in memory (IU-Phantom at 224 px:
2,069 x 2 x 224^2 bytes, about 0.2 GB), so epochs never re-decode PNGs; each model turns a drawn
batch into its own normalised input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from rrg_core.data.images import load_image
from rrg_core.progress import progress_bar


class _Decode(Dataset[torch.Tensor]):
    """Decode and resize one study's views to uint8 (V, S, S); a single view is repeated to V."""

    def __init__(self, paths: list[list[Path]], size: int, views: int) -> None:
        self.paths, self.size, self.views = paths, size, views

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        images = []
        for path in self.paths[index][: self.views]:
            image = load_image(path).tensor()
            image = tvf.resize(image, [self.size, self.size], InterpolationMode.BILINEAR, antialias=True)
            images.append((image.clamp(0, 1) * 255).round().to(torch.uint8)[0])
        while len(images) < self.views:  # dcclip: a single-view study repeats its view
            images.append(images[0])
        return torch.stack(images)


def cache_images(paths: list[list[Path]], size: int, views: int, workers: int, show: bool) -> torch.Tensor:
    """All studies' views as one uint8 tensor (N, V, S, S), decoded by ``workers`` processes."""
    loader = DataLoader(_Decode(paths, size, views), batch_size=None, num_workers=workers)
    out = torch.empty((len(paths), views, size, size), dtype=torch.uint8)
    for index, images in enumerate(progress_bar(loader, total=len(paths), desc="image cache", show=show)):
        out[index] = images
    return out


def pad_ids(sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad id lists to one (B, T) tensor."""
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return out
