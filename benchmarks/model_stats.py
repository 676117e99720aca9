"""Parameters, receptive field and FLOPs of every architecture and preset, from the built models.

python benchmarks/model_stats.py        # the table in docs/architectures.md
"""

from __future__ import annotations

import keras_sep
from keras_sep.analysis import model_stats

# The Fig. 3 ablation settings besides the presets (training/configs/fig3*.yaml).
VARIANTS = [
    ("wave_u_net", "paper", {}),
    ("wave_u_net", "original", {}),
    ("wave_u_net", "tiny", {}),
    ("dilated", "paper", {}),
    ("dilated", "tiny", {}),
    ("dilated_dense", "paper", {}),
    ("dilated_dense", "tiny", {}),
    ("dilated", "paper", {"dilation": "none"}),
    ("dilated", "paper", {"dilation": "constant:512"}),
    ("dilated", "paper", {"num_blocks": 1, "dilation": "constant:512"}),
    ("dilated_dense", "paper", {"num_blocks": 1, "dilation": "constant:512"}),
    ("dilated", "paper", {"num_blocks": 3, "dilation": "constant:512"}),
    ("dilated_dense", "paper", {"num_blocks": 3, "dilation": "constant:512"}),
]


def main() -> None:
    print(
        "| model | preset | overrides | parameters | receptive field | GFLOP / 16384-sample "
        "segment | GFLOP / audio second |"
    )
    print("|---|---|---|---|---|---|---|")
    for arch, preset, overrides in VARIANTS:
        model = keras_sep.build(arch, preset=preset, **overrides)
        stats = model_stats(model)
        rate = model.sample_rate
        text = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "-"
        print(
            f"| {arch} | {preset} | {text} | {stats.params:,} | "
            f"{stats.receptive_field:,} samples ({stats.receptive_field / rate:.2f} s) | "
            f"{stats.gflop(16384):.1f} | {stats.flops_per_sample * rate / 1e9:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
