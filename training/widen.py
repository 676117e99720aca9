"""Widen a trained Wave-U-Net (more filters per level) so that it separates exactly as before.

    python training/widen.py MODEL OUT --filters F [--noise 0] [--seed 0]

Net2WiderNet (Chen, Goodfellow and Shlens, 2016, "Net2Net: Accelerating Learning via
Knowledge Transfer"): each new channel of a layer copies one of the layer's old channels
(its kernel and bias), and every layer that reads a copied channel shares its weights for
it among the copies, so each sum is unchanged. LeakyReLU, decimation and linear
upsampling act on each channel alone and concatenation only places channels side by side,
so the wider network computes the same function (to float32 rounding). Training can then
continue from everything the narrow one learnt with the capacity of the wide one
(``train.py --init-from OUT --set model.filters=F``). Copies of a channel with equal shares
would get the same gradients for ever; the shares are drawn at random (summing to 1), which
tells the copies apart without changing the function. ``--noise`` adds Gaussian noise to
the kernels as well (times each kernel's standard deviation), which does change it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: import the package, not this folder
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import keras_sep  # noqa: E402
from keras_sep.cli import add_overwrite_argument  # noqa: E402
from keras_sep.errors import UsageError, command  # noqa: E402
from keras_sep.folder import check_folder_free, read_info  # noqa: E402


def _channel_map(old: int, new: int, rng) -> np.ndarray:
    """The old channel each of ``new`` channels copies: the first ``old`` themselves."""
    return np.concatenate([np.arange(old), rng.integers(0, old, new - old)])


def _reads(parts: list[tuple[np.ndarray, int]], rng) -> tuple[np.ndarray, np.ndarray]:
    """For a concatenation of widened inputs ``(map, old width)``: the old input channel
    each new input channel holds, and the fraction of that channel's weights it gets.

    The fractions of one old channel's copies are random and sum to 1, so the sum is kept
    and the copies get different gradients (equal fractions would keep them equal).
    """
    index, fraction, offset = [], [], 0
    for mapping, old in parts:
        split = rng.uniform(0.5, 1.5, len(mapping))
        total = np.bincount(mapping, weights=split, minlength=old)
        index.append(mapping + offset)
        fraction.append(split / total[mapping])
        offset += old
    return np.concatenate(index), np.concatenate(fraction)


def widen(model, filters: int, noise: float = 0.0, seed: int = 0):
    """A copy of Wave-U-Net ``model`` with ``filters`` per level (at least its own)."""
    if model.architecture != "wave_u_net":
        raise UsageError(f"widen works on wave_u_net models, not {model.architecture}")
    cfg = model.arch_config
    if filters < cfg.filters:
        raise UsageError(f"--filters {filters} is narrower than the model's {cfg.filters}")
    rng = np.random.default_rng(seed)
    wide = keras_sep.models.SeparationModel(
        model.architecture, type(cfg)(**{**cfg.to_dict(), "filters": filters})
    )
    levels = cfg.levels
    identity = (np.arange(cfg.channels), cfg.channels)  # the mixture is not widened
    maps = {}  # layer name -> (new channel -> old channel, old width)

    def copy(name: str, reads: list[tuple[np.ndarray, int]], out: int | None) -> None:
        kernel, bias = model.get_layer(name).get_weights()
        index, fraction = _reads(reads, rng)
        kernel = kernel[:, index, :] * fraction[None, :, None]
        mapping = np.arange(kernel.shape[2])  # a source head's outputs are audio channels
        if out is not None:
            mapping = _channel_map(kernel.shape[2], out, rng)
            maps[name] = (mapping, kernel.shape[2])
        kernel, bias = kernel[:, :, mapping], bias[mapping]
        if noise:
            kernel = kernel + rng.normal(0, noise * kernel.std(), kernel.shape)
        wide.get_layer(name).set_weights([kernel.astype(np.float32), bias.astype(np.float32)])

    previous = identity
    for i in range(1, levels + 1):
        copy(f"down{i}_conv", [previous], filters * i)
        previous = maps[f"down{i}_conv"]
    copy("bottleneck_conv", [previous], filters * (levels + 1))
    previous = maps["bottleneck_conv"]
    for i in range(levels, 0, -1):
        copy(f"up{i}_conv", [previous, maps[f"down{i}_conv"]], filters * i)
        previous = maps[f"up{i}_conv"]
    for source in cfg.estimated_sources:
        copy(source, [previous, identity], None)
    return wide


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="Wave-U-Net model folder to widen")
    p.add_argument("out", help="model folder to write")
    p.add_argument("--filters", type=int, required=True, help="filters per level of the copy")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="noise on the copied kernels, times each kernel's standard deviation",
    )
    p.add_argument("--seed", type=int, default=0)
    add_overwrite_argument(p, "model files")
    args = p.parse_args(argv)
    check_folder_free(args.out, args.overwrite)
    wide = widen(keras_sep.load(args.model), args.filters, args.noise, args.seed)
    record = {
        "widened_from": {"folder": args.model, "noise": args.noise, "seed": args.seed},
        "training": read_info(args.model).get("training"),
    }
    out = keras_sep.save(wide, args.out, metadata=record, overwrite=args.overwrite)
    print(f"widened {args.model} to {args.filters} filters per level: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
