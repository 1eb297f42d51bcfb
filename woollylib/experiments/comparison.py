"""The comparison report: ``compare(paths)`` writes compare.md with its curves and per-class figures
beside it, from run folders only (see ``aggregation`` for the numbers)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .aggregation import (
    MIN_SEEDS,
    _groups,
    aggregate,
    binomial_halfwidth,
    collect,
    holm,
    paired_difference,
    verdict,
)
from .spec import SweepError

# files of a comparison folder
COMPARE_FILE = "compare.md"
CURVES_PNG = "compare_curves{}.png"
PER_CLASS_PNG = "compare_per_class{}.png"


def _pm(stats: dict, digits: int = 2) -> str:
    if not stats["n"]:
        return "-"
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}f} (n=1)"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} (n={stats['n']})"


def _noise(runs: list[dict], acc: dict) -> str:
    sizes = {r.get("test_images") for r in runs}
    if acc["mean"] is None or len(sizes) != 1 or None in sizes:
        return "-"
    n = sizes.pop()
    return f"{binomial_halfwidth(acc['mean'], n):.2f} ({n} images)"


def _fmt_setting(v) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "on", False: "off", None: "none"}[v]
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt_setting(x)}" for k, x in v.items()) or "-"
    return str(v)


def _differing(groups: dict[str, list[dict]]) -> list[str]:
    views = [g[0]["view"] for g in groups.values()]
    keys = sorted({k for v in views for k in v})
    return [k for k in keys if len({json.dumps(v.get(k), sort_keys=True, default=str) for v in views}) > 1
            and (k != "classes" or "dataset" not in keys)]


def _band_plot(groups: dict[str, list[dict]], title: str):
    """Loss and accuracy per epoch: the mean over seeds as a line, min..max over seeds as a band;
    colour = configuration, line style = split (train dashed, validation dotted, test solid)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(10)]
    styles = {"train": "--", "val": ":", "test": "-"}
    for i, (name, runs) in enumerate(groups.items()):
        colour = colours[i % len(colours)]
        for ax, kind in ((ax_loss, "loss"), (ax_acc, "acc")):
            for split, style in styles.items():
                ys = [r["curves"].get(f"{split}_{kind}") or [] for r in runs]
                ys = [y for y in ys if y]
                if not ys:
                    continue
                length = min(len(y) for y in ys)
                arr = np.array([y[:length] for y in ys], dtype=float)
                xs = np.arange(1, length + 1)
                ax.plot(xs, arr.mean(0), style, color=colour, lw=1.8, marker="o" if length < 15 else None, ms=3)
                if len(arr) > 1:
                    ax.fill_between(xs, arr.min(0), arr.max(0), color=colour, alpha=0.15, lw=0)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    handles = [Line2D([], [], color=colours[i % 10], lw=3, label=f"{name} (n={len(runs)})")
               for i, (name, runs) in enumerate(groups.items())]
    present = {s for runs in groups.values() for r in runs for s in styles if r["curves"].get(f"{s}_acc")}
    handles += [Line2D([], [], color="0.3", ls=styles[s], label=s) for s in styles if s in present]
    for ax, label in ((ax_loss, "loss (per sample)"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_yscale("log")  # early test losses can be 100x the final ones
    ax_loss.set_title("Loss (log scale)")
    ax_acc.set_title("Accuracy")
    fig.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    fig.suptitle(f"{title}: mean over seeds, band = min..max", fontsize=11)
    return fig


def _per_class_plot(groups: dict[str, list[dict]], classes: list[str], title: str):
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(7, 0.8 * len(classes) * max(1, len(groups)) / 2 + 3), 4), dpi=110,
                 layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(groups)
    xs = np.arange(len(classes))
    for i, (name, runs) in enumerate(groups.items()):
        arr = np.array([[r["per_class_accuracy"].get(c) if r["per_class_accuracy"].get(c) is not None else np.nan
                         for c in classes] for r in runs], dtype=float)
        mean = np.nanmean(arr, axis=0)
        err = np.vstack([mean - np.nanmin(arr, 0), np.nanmax(arr, 0) - mean]) if len(arr) > 1 else None
        ax.bar(xs - 0.4 + width * (i + 0.5), mean, width, yerr=err, capsize=2, color=f"C{i % 10}",
               label=f"{name} (n={len(runs)})")
    ax.set_xticks(xs, classes, rotation=0 if len(classes) <= 12 else 60)
    ax.set_ylabel("test accuracy (%)")
    low = min(0.0, ax.get_ylim()[0])
    ax.set_ylim(low, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title(f"{title}: per-class test accuracy (last epoch; mean over seeds, bars = min..max)", fontsize=11)
    return fig


def _save_png(fig, name: str, files: dict) -> None:
    """Keep the figure's PNG bytes under ``name`` in ``files`` (written together, after the checks)."""
    from ..run import figure_bytes
    from ..utils.visualize import release

    files[name] = figure_bytes(release(fig), dpi="figure")


def _section(groups, baseline, tag: str, files: dict, lines: list[str], verbose_name: str) -> None:
    groups = {baseline: groups[baseline], **{k: v for k, v in groups.items() if k != baseline}}  # baseline first
    names = list(groups)
    differ = [k for k in _differing(groups) if k != "dataset"]
    if len(names) > 1:
        lines += ["### What differs", ""]
        if differ:
            lines += ["| configuration | " + " | ".join(differ) + " |", "|---" * (len(differ) + 1) + "|"]
            for name, runs in groups.items():
                lines.append(f"| {name} | " + " | ".join(_fmt_setting(runs[0]["view"].get(k)) for k in differ) + " |")
        else:
            lines.append("The configurations have the same settings (they differ only in their folders).")
        lines.append("")
    same = {k: v for k, v in groups[names[0]][0]["view"].items() if k not in differ and k != "classes"}
    lines += ["Common settings: " + ", ".join(f"{k}={_fmt_setting(v)}" for k, v in sorted(same.items())), ""]
    has_val = any(r["val_chosen_test_acc"] is not None for runs in groups.values() for r in runs)
    key = "val_chosen_test_acc" if has_val and all(r["val_chosen_test_acc"] is not None
                                                   for runs in groups.values() for r in runs) else "final_test_acc"
    head = ["configuration", "final test acc (%)"] + (["val-chosen test acc (%)"] if has_val else [])
    head += ["95% CI of the mean", "min-max", "test-set noise (±)", f"Δ vs {baseline} (points)", "verdict",
             "final train loss", "training time (s)"]
    lines += ["### Results", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    notes = []
    diffs = {name: paired_difference(groups[baseline], runs, key) for name, runs in groups.items() if name != baseline}
    adjusted = holm({n: d["p"] for n, d in diffs.items()}) if len(diffs) > 1 else {}
    for name, runs in groups.items():
        acc = aggregate(r["final_test_acc"] for r in runs)
        row = [name + (" (baseline)" if name == baseline else ""), _pm(acc)]
        if has_val:
            row.append(_pm(aggregate(r["val_chosen_test_acc"] for r in runs)))
        row += [f"[{acc['ci95'][0]:.2f}, {acc['ci95'][1]:.2f}]" if acc["n"] >= MIN_SEEDS else f"- (n < {MIN_SEEDS})",
                f"{acc['min']:.2f}-{acc['max']:.2f}" if acc["n"] else "-", _noise(runs, acc)]
        if name == baseline:
            row += ["-", "-"]
        else:
            diff = diffs[name]
            ci = f" [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]" if diff["n"] >= MIN_SEEDS and diff["std"] else ""
            row += [f"{diff['mean']:+.2f}{ci}" if diff["n"] else "-", verdict(name, baseline, diff,
                                                                            p_adjusted=adjusted.get(name))]
            if diff["only_baseline"] or diff["only_other"]:
                notes.append(f"- {name}: paired seeds ({', '.join(map(str, diff['seeds']))}); "
                             + "; ".join(x for x in (
                                 f"seeds {', '.join(map(str, diff['only_baseline']))} of {baseline} have no run in "
                                 f"{name}" if diff["only_baseline"] else "",
                                 f"seeds {', '.join(map(str, diff['only_other']))} of {name} have no run in "
                                 f"{baseline}" if diff["only_other"] else "") if x))
        row += [_pm(aggregate(r["final_train_loss"] for r in runs), 4), _pm(aggregate(r["train_time_s"] for r in runs), 1)]
        lines.append("| " + " | ".join(row) + " |")
    what = "test accuracy at the validation-chosen epoch" if key == "val_chosen_test_acc" else "final test accuracy"
    lines += ["", (f"Mean ± sample std (n runs), the 95% Student t interval of the mean (from {MIN_SEEDS} runs) and "
                   "the range. Test-set noise: the half-width of one run's 95% Wilson interval on this many test images "
                   f"(seeds do not show it). Δ: {what} minus the baseline's, paired by seed, with its 95% Student t "
                   f"interval; a verdict names a winner only with {MIN_SEEDS}+ paired seeds, when that interval excludes 0"
                   + (" and the Holm-adjusted p (several configurations against one baseline) is below 0.05"
                      if len(diffs) > 1 else "") + "; 'few seeds' below 5."), ""]
    if any(r["view"].get("label_smoothing") for runs in groups.values() for r in runs) and \
            any(not r["view"].get("label_smoothing") for runs in groups.values() for r in runs):
        lines += [("The final train loss is label-smoothed cross-entropy for some configurations and plain "
                   "cross-entropy for others: those losses are not comparable."), ""]
    if notes:
        lines += ["Unmatched seeds:", ""] + notes + [""]
    curves = CURVES_PNG.format(tag)
    _save_png(_band_plot(groups, verbose_name), curves, files)
    lines += ["### Curves", "", f"![training curves]({curves})", ""]
    all_runs = [r for runs in groups.values() for r in runs]
    if all(r["per_class_accuracy"] for r in all_runs):
        classes = list(all_runs[0]["per_class_accuracy"])
        if all(list(r["per_class_accuracy"]) == classes for r in all_runs):
            png = PER_CLASS_PNG.format(tag)
            _save_png(_per_class_plot(groups, classes, verbose_name), png, files)
            lines += ["### Per class", "", f"![per-class accuracy]({png})", ""]


def compare(paths, out=None, baseline: str | None = None, *, verbose: bool = True) -> Path:
    """Write ``compare.md`` (and its PNGs beside it) comparing the configurations found in ``paths``
    (run folders, sweep folders, folders of runs); return its path.

    ``out``: folder for the files (default: the folder given, when one sweep or folder of runs is
    given, else ``./compare``); ``baseline``: the configuration the others are measured against
    (default the first). Runs of different datasets are compared within each dataset.
    """
    from ..run import RunDir, check_outputs, write_outputs

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise SweepError("nothing to compare: pass run folders or sweep folders")
    records, missing = collect(paths)
    if out is None:
        only = Path(paths[0])
        out = only if len(paths) == 1 and not RunDir(only).is_run() else Path("compare")
    out = Path(out)
    if RunDir(out).is_run():
        raise SweepError(f"{out} is a run folder; write the comparison elsewhere (--out DIR)")
    files: dict[str, bytes] = {}
    groups = _groups(records)
    if baseline is not None and baseline not in groups:
        raise SweepError(f"no configuration named {baseline!r}; the configurations are: {', '.join(groups)}")
    by_data: dict[str, dict[str, list[dict]]] = {}
    for name, runs in groups.items():
        datasets = {r["dataset"] for r in runs}
        if len(datasets) > 1:
            for d in sorted(datasets, key=str):
                by_data.setdefault(d, {})[f"{name} ({d})"] = [r for r in runs if r["dataset"] == d]
        else:
            by_data.setdefault(next(iter(datasets)), {})[name] = runs
    lines = ["# Comparison", "",
             f"{len(groups)} configuration(s), {len(records)} run(s), from " + ", ".join(f"`{p}`" for p in paths) + ".", ""]
    if missing:
        lines += ["Not included:", ""] + [f"- {m}" for m in missing] + [""]
    if len(by_data) > 1:
        lines += ["These runs were trained on different datasets (" + "; ".join(
            f"{d}: {', '.join(g)}" for d, g in by_data.items()) + "). Accuracies on different test sets say "
            "nothing about each other, so each dataset is compared on its own below.", ""]
    for d, g in by_data.items():
        base = baseline if baseline in g else next((n for n in g if n.startswith(f"{baseline} (")), None) \
            if baseline else None
        base = base or next(iter(g))
        tag = "" if len(by_data) == 1 else "-" + re.sub(r"[^A-Za-z0-9._-]", "-", str(d))
        lines += [f"## Dataset: {d}", ""] if len(by_data) > 1 else []
        _section(g, base, tag, files, lines, f"{d}" if d else "runs")
    text = "\n".join(lines)
    linked = re.findall(r"\]\(([^)]+)\)", text)
    missing_links = [x for x in linked if x not in files]
    if missing_links:  # every link must point at a file that exists
        raise RuntimeError(f"compare.md would link missing files {missing_links}")
    files[COMPARE_FILE] = text.encode("utf-8")
    check_outputs(out, files, "compare")  # never over a file woollylib did not write there
    path = write_outputs(out, files)[-1]
    if verbose:
        print(f"wrote {path} ({len(groups)} configurations, {len(records)} runs)")
    return path
