"""Cached occupancy latents: the frozen VAE's encoding of every occupancy target of a split, computed once.

In stage 2 the occupancy VAE is frozen and `encode` is deterministic (eval mode: the posterior mean for a KL latent,
the quantised codes for VQ), so a keyframe's latent regression target never changes; encoding every grid at every
step only costs time. `build_occupancy_latent_cache` encodes the `semantics` of every row of an `occupancy` dataset
split in float32 without autocast and writes one safetensors file; `OccupancyLatentCache` reads it back row by row
(memory-mapped, so a cache larger than memory works) and gives `OccVLAForPlanning` its `occupancy_latents` input.

File layout: tensor `latents` (N, C, H, W) in the chosen dtype; metadata `sample_tokens` (a JSON list in row order),
`vae_fingerprint` (sha256 of the VAE's state dict, so a cache never silently serves another VAE's latents) and
`format`. float32 stores the encoding exactly; float16 halves the file at a relative rounding error of at most 2^-11
per latent value.

Command line (before training, e.g. once for runs sharing the cache):
`python -m occvla_hf.training.latent_cache OCCUPANCY_DIR VAE_DIR OUT_DIR [--split train ...] [--device cuda]` writes
`OUT_DIR/<split>.safetensors`, the layout the joint recipe's `occupancy_latent_cache: OUT_DIR` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from occvla_hf.data.occ3d import decode_semantics

LATENTS_KEY = "latents"
CACHE_FORMAT = "occvla-occupancy-latents/1"
CACHE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


def vae_fingerprint(vae: nn.Module) -> str:
    """sha256 over the VAE's state dict (names, dtypes, shapes, bytes): equal exactly for the same frozen weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class OccupancyLatentCache:
    """Read side of a cache file: `cache[sample_token]` -> latent (C, H, W) tensor, in the stored dtype.

    The file is opened lazily in each process (DataLoader workers included; the open handle is not pickled).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"occupancy_latent_cache: no cache file at {self.path}")
        with safe_open(self.path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != CACHE_FORMAT or LATENTS_KEY not in handle.keys():
                raise ValueError(
                    f"occupancy_latent_cache: {self.path} is not an occupancy latent cache ({CACHE_FORMAT})"
                )
            self.latent_shape = tuple(handle.get_slice(LATENTS_KEY).get_shape()[1:])
        self.sample_tokens: list[str] = json.loads(metadata["sample_tokens"])
        self.vae_fingerprint: str = metadata["vae_fingerprint"]
        self._rows = {token: row for row, token in enumerate(self.sample_tokens)}
        self._handle: Any = None

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def __contains__(self, sample_token: object) -> bool:
        return sample_token in self._rows

    def __getitem__(self, sample_token: str) -> torch.Tensor:
        if self._handle is None:
            self._handle = safe_open(self.path, framework="pt")
        return self._handle.get_slice(LATENTS_KEY)[self._rows[sample_token]]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}

    def check(self, vae: nn.Module, sample_tokens: Sequence[str]) -> None:
        """ValueError unless the cache was built with this VAE and holds every one of `sample_tokens`."""
        if vae_fingerprint(vae) != self.vae_fingerprint:
            raise ValueError(
                f"occupancy_latent_cache: {self.path} was built with another occupancy VAE; delete it to rebuild it"
            )
        missing = [token for token in sample_tokens if token not in self._rows]
        if missing:
            raise ValueError(
                f"occupancy_latent_cache: {self.path} lacks {len(missing)} of the split's {len(sample_tokens)} sample "
                f"tokens (first: {missing[0]}); delete it to rebuild it"
            )


@torch.no_grad()
def build_occupancy_latent_cache(
    occupancy: Dataset,
    vae: nn.Module,
    path: str | os.PathLike,
    *,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    dtype: str = "float32",
) -> OccupancyLatentCache:
    """Encodes the `semantics` of every row of an `occupancy` dataset split with the frozen `vae` and writes the
    cache file `path` (atomically: a partial file never appears under that name). The split's latents are held in
    memory until written (N x C x H x W values of `dtype`).

    Args:
        occupancy: rows of the `occupancy` dataset config (`sample_token`, compressed `semantics`).
        vae: the frozen occupancy VAE (`encode(voxels (B, X, Y, Z)) -> (B, C, H, W)`); run in eval mode, float32,
            autocast off, on `device` (default: where it is), then moved back.
        batch_size: grids encoded per call.
        dtype: `"float32"` (exact) or `"float16"` storage.
    """
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(CACHE_DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if len(occupancy) == 0:
        raise ValueError("occupancy: the split has no rows to encode")
    parameter = next(vae.parameters(), None)
    home = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else home
    was_training = vae.training
    vae.eval().to(device)
    rows = occupancy.select_columns(["sample_token", "semantics"])
    chunks: list[torch.Tensor] = []
    try:
        with torch.autocast(device.type, enabled=False):
            for start in range(0, len(rows), batch_size):
                stored = rows[start : start + batch_size]["semantics"]
                grids = torch.from_numpy(np.stack([decode_semantics(data) for data in stored])).to(device)
                chunks.append(vae.encode(grids).float().to("cpu", CACHE_DTYPES[dtype]))
    finally:
        vae.to(home).train(was_training)
    latents = torch.cat(chunks)
    if not torch.isfinite(latents).all():
        raise ValueError("vae: encoded a NaN or infinite latent (in float16 storage: a value beyond 65504)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": CACHE_FORMAT,
        "sample_tokens": json.dumps(list(rows["sample_token"])),
        "vae_fingerprint": vae_fingerprint(vae),
    }
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    save_file({LATENTS_KEY: latents.contiguous()}, partial, metadata=metadata)
    os.replace(partial, path)
    return OccupancyLatentCache(path)


def open_occupancy_latent_cache(
    occupancy: Dataset, vae: nn.Module, path: str | os.PathLike, **build_kwargs: Any
) -> OccupancyLatentCache:
    """The cache at `path` after checking it against `vae` and the split's sample tokens, or, when there is no file
    yet, a new one built by `build_occupancy_latent_cache(occupancy, vae, path, **build_kwargs)`."""
    if not Path(path).exists():
        return build_occupancy_latent_cache(occupancy, vae, path, **build_kwargs)
    cache = OccupancyLatentCache(path)
    cache.check(vae, occupancy["sample_token"])
    return cache


def main(argv: Sequence[str] | None = None) -> None:
    """Builds (or checks) `<out>/<split>.safetensors` for each `--split` of an `occupancy` config (`data.load`)."""
    import argparse

    from occvla_hf.data.load import load_configs
    from occvla_hf.modeling import OccupancyVAE, load_pretrained

    parser = argparse.ArgumentParser(prog="python -m occvla_hf.training.latent_cache", description=main.__doc__)
    parser.add_argument("occupancy", help="the occupancy config: a `data build` folder, its arrow/occupancy, a Hub id")
    parser.add_argument("vae", help="the frozen stage-1 VAE folder")
    parser.add_argument("out", help="cache folder: <out>/<split>.safetensors")
    parser.add_argument("--split", nargs="+", default=["train"], help="splits to cache")
    parser.add_argument("--device", default=None, help="torch device of the encoding (default: cpu)")
    parser.add_argument("--dtype", choices=sorted(CACHE_DTYPES), default="float32")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    splits = load_configs(args.occupancy, ["occupancy"])["occupancy"]
    missing = [split for split in args.split if split not in splits]
    if missing:
        raise SystemExit(f"--split: {missing} not in {args.occupancy} (splits: {sorted(splits)})")
    vae = load_pretrained(OccupancyVAE, args.vae).requires_grad_(False).eval()
    for split in args.split:
        path = Path(args.out) / f"{split}.safetensors"
        cache = open_occupancy_latent_cache(
            splits[split], vae, path, batch_size=args.batch_size, device=args.device, dtype=args.dtype
        )
        print(f"{path}: {len(cache)} latents")


__all__ = [
    "OccupancyLatentCache",
    "build_occupancy_latent_cache",
    "open_occupancy_latent_cache",
    "vae_fingerprint",
]


if __name__ == "__main__":
    main()
