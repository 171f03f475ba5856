"""Transfer learning's three principles, measured offline on Fashion-MNIST and scikit-learn digits.

A workshop CNN (3 stride-2 convs + dense, :mod:`cnnlab.models`) is pretrained on Fashion-MNIST
classes 0-4 (T-shirt, trouser, pullover, dress, coat). It is then transferred, with n = 10, 100
and 1000 training images per class, to

* a near task: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), and
* a distant task: scikit-learn's 8x8 digits upsampled to 28x28 (n = 10 and 100; the data set
  has no more),

each against the same network trained from scratch on the same images. Transfer variants, all
through :mod:`cnnlab.transfer`: the head alone on cached features ("head"), then the last conv
block + head ("last block") or everything ("all") fine-tuned with discriminative learning rates;
scratch trains as many steps as the longest transfer variant. No flip augmentation: every
Fashion-MNIST shoe faces left, and random flips cost the fine-tuned variants accuracy (measured:
0.950 -> 0.923 at 1000 per class). Accuracy is on the full test split
of the target (5,000 / 360 images), mean and spread over ``--seeds`` draws of the n images.

The lecture's claims, checked on the numbers (the script says "shown" or "not shown"):

1. transfer wins most when data is small: the gain of the best transfer variant over scratch
   shrinks as n grows;
2. with more data, deeper fine-tuning pays: the best depth moves from "head" towards "all";
3. a distant source domain helps less: at the same n the gain on digits is smaller than on
   Fashion-MNIST 5-9.

    python benchmarks/transfer_principles.py                 # table + results/transfer_principles/
    python benchmarks/transfer_principles.py --seeds 1 --quick   # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab import data, models, train, transfer, xla_cpu
from cnnlab.train import TrainConfig

MODEL = "workshop_cnn"
SOURCE, TARGET = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
METHODS = ("scratch", "head", "last block", "all")


def subset(split, classes):
    """Images of ``classes``, relabelled 0..len(classes)-1."""
    keep = np.isin(split.labels, classes)
    remap = np.full(10, -1, np.int32)
    remap[list(classes)] = np.arange(len(classes))
    return split.images[keep], remap[split.labels[keep]]


def sample(labels, n_per_class, seed):
    """Indices of n images per class, drawn with ``seed`` (sorted)."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(labels == c), n_per_class, replace=False)
           for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def pretrain(images, labels, test, *, epochs, seed=0):
    """The workshop CNN on the source classes with cnnlab.train's jitted step; returns params."""
    config = TrainConfig(model=MODEL, epochs=epochs, batch_size=128, learning_rate=2e-3,
                         schedule="one_cycle", seed=seed)
    steps = len(labels) // config.batch_size
    model = models.get(MODEL, num_classes=len(SOURCE))
    state = train.create_train_state(model, train.optimizer_from_config(config, steps)[0],
                                     jax.random.key(seed), images.shape[1:])
    key = jax.random.key(seed + 1)
    for epoch in range(epochs):
        for idx in data.batch_indices(len(labels), config.batch_size, seed=seed, epoch=epoch):
            state, _ = train.train_step(state, images[idx], labels[idx], key)
    acc = accuracy(model, {"params": state.params}, *test)
    return jax.tree.map(np.asarray, state.params), acc


def accuracy(model, variables, images, labels) -> float:
    logits = transfer.predict(model, variables, images, batch_size=500)
    return float(np.mean(logits.argmax(-1) == labels))


def budget(n_images):
    """(batch size, head epochs, fine-tune epochs): about the same number of steps per phase
    for every n (100-300), more for more data."""
    batch = max(10, min(100, n_images // 4))
    steps_per_epoch = n_images // batch
    target = 100 if n_images <= 100 else (200 if n_images <= 1000 else 300)
    epochs = max(1, round(target / steps_per_epoch))
    return batch, epochs, epochs


def run_target(name, source_params, train_split, test_split, ns, seeds, *, flip, quick):
    """Accuracy of every method for every n and seed on one target task."""
    images, labels = train_split
    num_classes = int(labels.max()) + 1
    model = models.get(MODEL, num_classes=num_classes)
    shape = (1, *images.shape[1:])
    groups = None
    results = {m: {n: [] for n in ns} for m in METHODS}
    for n in ns:
        for seed in seeds:
            t0 = time.time()
            idx = sample(labels, n, seed)
            x, y = images[idx], labels[idx]
            batch, head_epochs, ft_epochs = budget(len(idx))
            if quick:
                head_epochs, ft_epochs = max(1, head_epochs // 4), max(1, ft_epochs // 4)
            key = jax.random.key(100 + seed)
            # Transfer: fresh head on the pretrained body, trained on cached features ...
            params = transfer.replace_head(source_params, num_classes, key)
            groups = groups or transfer.blocks(transfer.layer_order(model, shape), params)
            head = transfer.head_name(params)
            feats = transfer.head_inputs(model, {"params": params}, x, head=head, batch_size=500)
            new_head, _ = transfer.train_head(params[head], feats, y, epochs=head_epochs,
                                              batch_size=batch, lr=1e-2, seed=seed)
            params = {**params, head: new_head}
            results["head"][n].append(accuracy(model, {"params": params}, *test_split))
            # ... then the last block + head, or everything, with discriminative rates.
            for method, unfreeze in (("last block", 1), ("all", -1)):
                tuned, _ = transfer.train_blocks(
                    model, {"params": params}, groups, x, y, unfreeze=unfreeze,
                    epochs=ft_epochs, batch_size=batch, lr=1e-3, lr_ratio=10, seed=seed,
                    flip=flip)
                results[method][n].append(accuracy(model, {"params": tuned}, *test_split))
            # Scratch: the same network from random init, all layers, as many steps in all.
            init = jax.jit(lambda k: model.init(k, jnp.zeros(shape), train=False))(key)
            scratch, _ = transfer.train_blocks(
                model, init, groups, x, y, unfreeze=-1, epochs=head_epochs + ft_epochs,
                batch_size=batch, lr=3e-3, lr_ratio=1, seed=seed, flip=flip)
            results["scratch"][n].append(accuracy(model, {"params": scratch}, *test_split))
            print(f"  {name:<16} n={n:<5} seed {seed}: " + "  ".join(
                f"{m} {results[m][n][-1]:.3f}" for m in METHODS)
                + f"  ({time.time() - t0:.1f} s)", flush=True)
    return results


def summarize(results, ns):
    """{method: {n: (mean, std)}}"""
    return {m: {n: (float(np.mean(v[n])), float(np.std(v[n]))) for n in ns}
            for m, v in results.items()}


def table(rows) -> str:
    head = ("| target | n/class | scratch | head | last block | all | best transfer - scratch |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for target, n, s in rows:
        cells = [f"{s[m][n][0]:.3f} ± {s[m][n][1]:.3f}" for m in METHODS]
        best = max(s[m][n][0] for m in METHODS[1:])
        lines.append(f"| {target} | {n} | " + " | ".join(cells)
                     + f" | {best - s['scratch'][n][0]:+.3f} |")
    return head + "\n".join(lines)


def _verdict(diff: np.ndarray | float, se: float) -> str:
    """"shown" when the predicted difference is positive by more than 2 standard errors."""
    if diff > 2 * se:
        return "shown"
    return "direction agrees, within noise" if diff > 0 else "NOT shown"


def _gain(results, n):
    """Per-seed gain of the best (by mean) transfer variant over scratch; same images per seed."""
    best = max(METHODS[1:], key=lambda m: np.mean(results[m][n]))
    return np.asarray(results[best][n]) - np.asarray(results["scratch"][n])


def _diff_se(a, b) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error (unpaired; ddof=1)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    se = np.sqrt((a.var(ddof=1) / len(a) if len(a) > 1 else 0.0)
                 + (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0))
    return float(a.mean() - b.mean()), float(se)


def principles(near, far, ns_near, ns_far) -> list[str]:
    """The three claims checked on per-seed results: "shown" needs the predicted difference to
    exceed twice its standard error (over the seeds)."""
    out = []
    gains = [_gain(near, n) for n in ns_near]
    diff, se = _diff_se(gains[0], gains[-1])
    out.append(f"1. transfer wins most when data is small: gain of the best transfer variant over "
               f"scratch at n = {', '.join(map(str, ns_near))}: "
               f"{', '.join(f'{g.mean():+.3f}' for g in gains)}; n={ns_near[0]} minus "
               f"n={ns_near[-1]}: {diff:+.3f} ± {se:.3f} -> {_verdict(diff, se)}")
    deeper = [np.asarray(near["all"][n]) - np.asarray(near["head"][n]) for n in ns_near]
    diff, se = _diff_se(deeper[-1], deeper[0])
    out.append(f"2. with more data deeper fine-tuning pays: 'all' - 'head' at n = "
               f"{', '.join(map(str, ns_near))}: {', '.join(f'{d.mean():+.3f}' for d in deeper)}; "
               f"n={ns_near[-1]} minus n={ns_near[0]}: {diff:+.3f} ± {se:.3f} -> "
               f"{_verdict(diff, se)}")
    parts = []
    for n in [n for n in ns_far if n in ns_near]:
        diff, se = _diff_se(_gain(near, n), _gain(far, n))
        parts.append(f"n={n}: Fashion-MNIST 5-9 {_gain(near, n).mean():+.3f} vs digits "
                     f"{_gain(far, n).mean():+.3f}, difference {diff:+.3f} ± {se:.3f} -> "
                     f"{_verdict(diff, se)}")
    out.append("3. a distant source domain helps less (gain over scratch): " + "; ".join(parts))
    return out


def plot(near, far, ns_near, ns_far, path) -> str:
    from cnnlab import plots
    fig = plots.figure(11, 4)
    styles = {"scratch": "k--o", "head": "C0-s", "last block": "C1-^", "all": "C2-D"}
    for ax, (title, s, ns) in zip(fig.subplots(1, 2), (
            ("near: Fashion-MNIST 5-9 (source: classes 0-4)", near, ns_near),
            ("distant: digits 28x28 (source: Fashion-MNIST 0-4)", far, ns_far))):
        for m in METHODS:
            mean = [s[m][n][0] for n in ns]
            std = [s[m][n][1] for n in ns]
            ax.errorbar(ns, mean, yerr=std, fmt=styles[m], capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("training images per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    return plots.save(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="draws of the n images per setting")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a quarter of the steps (smoke run)")
    p.add_argument("--out", default=os.path.join("results", "transfer_principles"))
    p.add_argument("--report", metavar="JSON",
                   help="only print the table, the verdicts and the plot of a saved run")
    args = p.parse_args(argv)
    if args.report:
        return report(args.report, args.out)
    xla_cpu.use_multithreaded_convolutions()  # as cnnlab train does
    # train_head/train_blocks build their steps per call: the persistent cache compiles each
    # distinct program once across the many draws.
    train.enable_compilation_cache()
    t_start = time.time()
    seeds = list(range(args.seeds))

    fm = data.load("fashion_mnist")
    print(f"data: {fm.source}", flush=True)
    src_train, src_test = subset(fm.train, SOURCE), subset(fm.test, SOURCE)
    t0 = time.time()
    source_params, src_acc = pretrain(*src_train, src_test,
                                      epochs=1 if args.quick else args.pretrain_epochs)
    print(f"pretrained {MODEL} on Fashion-MNIST classes 0-4 ({len(src_train[1]):,} images): "
          f"test accuracy {src_acc:.3f} ({time.time() - t0:.0f} s)", flush=True)

    ns_near = (10, 100, 1000)
    near = run_target("Fashion-MNIST 5-9", source_params, subset(fm.train, TARGET),
                      subset(fm.test, TARGET), ns_near, seeds, flip=False, quick=args.quick)

    digits = data.load("digits")
    d_train = (data.resize(digits.train.images, 28, 28), digits.train.labels)
    d_test = (data.resize(digits.test.images, 28, 28), digits.test.labels)
    ns_far = (10, 100)
    far = run_target("digits 28x28", source_params, d_train, d_test, ns_far, seeds,
                     flip=False, quick=args.quick)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "transfer_principles.json")
    with open(path, "w") as f:
        json.dump({"source_test_accuracy": src_acc, "seeds": seeds, "quick": args.quick,
                   "near": {m: {str(n): v for n, v in r.items()} for m, r in near.items()},
                   "far": {m: {str(n): v for n, v in r.items()} for m, r in far.items()},
                   "seconds": time.time() - t_start, "data": fm.source,
                   "devices": str(jax.devices())}, f, indent=1)
    return report(path, args.out)


def report(path: str, out: str) -> int:
    """Table, verdicts and plot of the results saved in ``path`` (JSON written by a run)."""
    with open(path) as f:
        saved = json.load(f)
    near = {m: {int(n): v for n, v in r.items()} for m, r in saved["near"].items()}
    far = {m: {int(n): v for n, v in r.items()} for m, r in saved["far"].items()}
    ns_near, ns_far = sorted(near["scratch"]), sorted(far["scratch"])
    s_near, s_far = summarize(near, ns_near), summarize(far, ns_far)
    text = table([("Fashion-MNIST 5-9", n, s_near) for n in ns_near]
                 + [("digits (28x28)", n, s_far) for n in ns_far])
    lines = principles(near, far, ns_near, ns_far)
    os.makedirs(out, exist_ok=True)
    png = plot(s_near, s_far, ns_near, ns_far, os.path.join(out, "transfer_principles.png"))
    print()
    print(f"source: {MODEL} pretrained on Fashion-MNIST 0-4, test accuracy "
          f"{saved['source_test_accuracy']:.3f}; accuracy on the target's test split, "
          f"mean ± std over {len(saved['seeds'])} draw(s){' (--quick)' if saved['quick'] else ''}")
    print(text)
    print()
    print("\n".join(lines))
    print(f"\nplot: {png}   (run: {saved['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
