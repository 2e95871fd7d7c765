"""Experiments: recipes trained over variants and seeds, evaluated on held-out sim scenes, one JSON per run, tables.

* `occupancy_ablation`: the embedded model with and without occupancy supervision (the shipped model card's tables).
* `ablation_scale`: the same question at scale (400 x 225 px sim data, a larger model, label-scarce and lambda_occ
  variants, a hard subset of keyframes).

Run them as `occvla-hf experiment NAME ...` or `python -m occvla_hf.experiments.NAME ...`.
"""
