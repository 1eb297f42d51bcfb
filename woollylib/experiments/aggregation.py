"""Reading run folders back and the statistics over seeds: t quantiles, mean/std/interval, records
per run, configurations grouped by name, paired differences by seed and their verdict in words."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .spec import MODEL_OPT, NOT_IDENTITY, SWEEP_FILE, SweepError, read_sweep

# ==============================================================================================
# statistics

# two-sided 95% Student t quantiles t_{0.975, df}, used when scipy is missing
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
         19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(q: float, df: int) -> float:
    """Student t quantile (scipy when installed; else the 0.975 table, interpolated in 1/df)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(q, df))
    except ImportError:
        pass
    if abs(q - 0.975) > 1e-12:
        raise ValueError("without scipy only the 0.975 quantile (95% intervals) is available")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        lo, hi, t_lo, t_hi = keys[-1], math.inf, _T975[keys[-1]], 1.959964
    else:
        lo = max(k for k in keys if k < df)
        hi = min(k for k in keys if k > df)
        t_lo, t_hi = _T975[lo], _T975[hi]
    x, x_lo, x_hi = 1 / df, 1 / lo, (0.0 if hi == math.inf else 1 / hi)
    return t_hi + (t_lo - t_hi) * (x - x_hi) / (x_lo - x_hi)


def aggregate(values) -> dict:
    """mean, std (sample, ddof=1), min, max, n and the 95% Student t interval of the mean
    (``ci95`` = [low, high]; None with fewer than two values). None values are left out."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if not n:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "ci95": None}
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    ci = None
    if n > 1:
        half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "min": min(xs), "max": max(xs), "ci95": ci}


# ==============================================================================================
# reading run folders

HEADLINE = {  # figure -> (label, unit)
    "final_test_acc": ("final test accuracy", "%"),
    "val_chosen_test_acc": ("test accuracy at the epoch chosen on validation", "%"),
    "final_train_loss": ("final train loss", ""),
    "train_time_s": ("training time", "s"),
}


def read_run(path, name: str | None = None) -> dict:
    """One run folder as a record: its configuration, seed, dataset, curves, metrics and headline
    figures (metrics.json's when present, else from history.json)."""
    from ..config import Settings
    from ..run import HISTORY, RunDir

    run = RunDir(path)
    config = run.read_config()
    curves = run.read_json(HISTORY, required=True)
    metrics = run.read_metrics() or {}
    settings = Settings.from_dict(config["settings"])
    model = config.get("model") or {}
    view = {k: v for k, v in settings.flat().items() if k not in NOT_IDENTITY}
    view["model"] = model.get("name") or model.get("cls")
    for k, v in (model.get("options") or {}).items():
        view[MODEL_OPT + k] = v
    data = config.get("data") or {}
    dataset = data.get("name") or settings.data.dataset
    if settings.data.dataset == "folder":  # a folder data set is its folder: two folders are two data sets
        dataset = f"folder {os.path.normpath(str(settings.data.data_dir))}"
    view["dataset"] = dataset
    view["classes"] = tuple(data.get("classes") or ())
    test_acc, train_loss = curves.get("test_acc") or [], curves.get("train_loss") or []
    final = metrics.get("final_test_acc", test_acc[-1] if test_acc else None)
    seconds = metrics.get("train_time_s", sum(curves.get("epoch_time") or []) or None)
    return {
        "path": str(run.path), "name": name if name is not None else run.path.name, "seed": settings.run.seed,
        "dataset": dataset, "view": view, "curves": curves, "metrics": metrics,
        "protocol": metrics.get("protocol"),
        "final_test_acc": final,
        "val_chosen_test_acc": metrics.get("val_chosen_test_acc"),
        "final_train_loss": train_loss[-1] if train_loss else None,
        "train_time_s": seconds,
        "epochs": len(test_acc),
        "per_class_accuracy": metrics.get("per_class_accuracy"),
        "test_images": int(sum(map(sum, metrics["confusion_matrix"]))) if metrics.get("confusion_matrix") else None,
    }


def _is_seed_dir(p: Path) -> bool:
    return re.fullmatch(r"seed-\d+", p.name) is not None


def collect(paths) -> tuple[list[dict], list[str]]:
    """Run records from run folders, sweep folders (their sweep.json) and folders of run folders;
    and notes on what was listed but not found."""
    from ..run import HISTORY, RunDir

    records, notes = [], []
    for p in [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; pass run folders or sweep folders (woollylib sweep --out)")
        saved = read_sweep(p)
        found = []
        if saved is not None:
            for r in saved["runs"]:
                d = p / r["dir"]
                if RunDir(d).has(HISTORY):
                    found.append((d, r["name"] or p.name))
                else:
                    notes.append(f"{d} (run {r['index']} of the sweep) has not finished an epoch yet; left out")
        elif RunDir(p).is_run():
            found.append((p, p.parent.name if _is_seed_dir(p) else p.name))
        elif p.is_dir():
            for d in sorted(x for x in p.rglob(HISTORY)):
                d = d.parent
                if RunDir(d).is_run():
                    rel = d.relative_to(p)
                    label = str(rel.parent if _is_seed_dir(d) else rel)
                    found.append((d, p.name if label == "." else label))
        if not found:
            raise SweepError(f"{p} holds no run folder (history.json + config.json) and no {SWEEP_FILE}")
        for d, name in found:
            if any(Path(r["path"]).resolve() == d.resolve() for r in records):
                notes.append(f"{d} was listed twice; counted once")
                continue
            records.append(read_run(d, name))
    return records, notes


# ==============================================================================================
# configurations and their differences


def identity(record: dict) -> str:
    """What makes runs one configuration: every setting that defines the run (model spec, data set with its
    folder and classes, split, options), never the folder's name."""
    import json

    return json.dumps(record["view"], sort_keys=True, default=str)


def _groups(records) -> dict[str, list[dict]]:
    """Runs pooled by configuration (``identity``), named by their folders; two configurations that
    share a folder name get the parent folder added; a seed twice in one configuration is refused."""
    by_id: dict[str, list[dict]] = {}
    for r in records:
        by_id.setdefault(identity(r), []).append(r)
    names: dict[str, list[str]] = {}
    for key, runs in by_id.items():
        names.setdefault(runs[0]["name"], []).append(key)
    out: dict[str, list[dict]] = {}
    for key, runs in by_id.items():
        name = runs[0]["name"]
        if len(names[name]) > 1:  # the same folder name for different settings
            parent = Path(runs[0]["path"]).parent
            parent = parent.parent if _is_seed_dir(Path(runs[0]["path"])) else parent
            name = f"{name} ({parent.name or parent})"
            if name in out:
                name = f"{name} #{names[runs[0]['name']].index(key) + 1}"
        seen: dict = {}
        for r in runs:
            if r["seed"] in seen:
                raise SweepError(f"seed {r['seed']} appears twice in configuration {name!r}: {seen[r['seed']]} and "
                                 f"{r['path']} (same settings); compare one of them, or give the runs different seeds")
            seen[r["seed"]] = r["path"]
        out[name] = runs
    return out


MIN_SEEDS, FEW_SEEDS = 3, 5  # no interval nor verdict below MIN_SEEDS runs; "few seeds" below FEW_SEEDS


def paired_difference(base: list[dict], other: list[dict], key: str) -> dict:
    """``other - base`` over the seeds both have: aggregate of the differences, the paired t test's
    two-sided ``p`` (None when it is undefined: n < 2 or no spread), the paired seeds, and the seeds of each
    side that have no partner."""
    a = {r["seed"]: r[key] for r in base if r.get(key) is not None}
    b = {r["seed"]: r[key] for r in other if r.get(key) is not None}
    common = sorted(set(a) & set(b), key=lambda s: (s is None, s))
    stats = aggregate([b[s] - a[s] for s in common])
    p = None
    if stats["n"] >= 2 and stats["std"]:  # scipy: a dependency of scikit-learn, which woollylib requires
        from scipy import stats as sp

        t = stats["mean"] / (stats["std"] / math.sqrt(stats["n"]))
        p = float(2 * sp.t.sf(abs(t), stats["n"] - 1))
    return {**stats, "p": p, "seeds": common, "only_baseline": sorted(set(a) - set(b), key=str),
            "only_other": sorted(set(b) - set(a), key=str)}


def holm(pvalues: dict) -> dict:
    """Holm-Bonferroni adjusted p-values (``{name: p}``, None left out) for several comparisons with one
    baseline: the k-th smallest p times (m - k + 1), made monotone, capped at 1."""
    named = sorted(((p, k) for k, p in pvalues.items() if p is not None))
    m, out, running = len(named), {}, 0.0
    for i, (p, k) in enumerate(named):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return {k: out.get(k) for k in pvalues}


def verdict(name: str, baseline: str, diff: dict, unit: str = "points", p_adjusted: float | None = None) -> str:
    """Plain words for a paired difference: better/worse only with ``MIN_SEEDS`` or more paired seeds, a
    95% interval that excludes 0 and (when several configurations face one baseline) a Holm-adjusted
    p below 0.05; no verdict when every seed differs by the same amount (a zero-width interval)."""
    n = diff["n"]
    if n < MIN_SEEDS:
        return f"cannot tell: {n} paired seed{'s' if n != 1 else ''} (needs {MIN_SEEDS} or more)"
    few = " (few seeds)" if n < FEW_SEEDS else ""
    if not diff["std"] or diff["std"] <= 1e-9 * max(1.0, abs(diff["mean"])):
        return (f"no verdict: every paired seed differs by exactly {diff['mean']:+.2f} {unit} (a zero-width "
                f"interval says nothing: the seeds did not vary the outcome; add seeds or compare per image)")
    lo, hi = diff["ci95"]
    holm_text = f", Holm p={p_adjusted:.3g}" if p_adjusted is not None else ""
    if (lo > 0 or hi < 0) and (p_adjusted is None or p_adjusted < 0.05):
        word = "better" if diff["mean"] > 0 else "worse"
        return (f"{name} is {word} than {baseline} by {abs(diff['mean']):.2f} {unit} "
                f"(95% CI {lo:+.2f} to {hi:+.2f}, n={n}{holm_text}){few}")
    return f"no detectable difference at n={n} (95% CI {lo:+.2f} to {hi:+.2f}{holm_text}){few}"


def binomial_halfwidth(acc_percent: float, n_images: int) -> float:
    """Half-width (points) of the 95% Wilson interval of one run's accuracy on ``n_images`` test images:
    the test set's own sampling noise, which seeds do not show."""
    z, p, n = 1.959964, acc_percent / 100.0, n_images
    return 100.0 * z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
