"""The recipe of a run: its settings and its model spec, built into model, data and trainer, trained
under one lock, and rebuilt from any run folder.

    from woollylib.recipe import Recipe
    recipe = Recipe.from_flat(model="compact", dataset="digits", epochs=7, batch_size=32, lr=0.2,
                              loader="device", out_dir="runs/digits", seed=0)
    result = recipe.train()             # seed -> data -> model -> Trainer.fit -> metrics.json, under the lock
    result.history, result.metrics, result.model, result.data

    again = Recipe.from_run("runs/digits")             # the same recipe back from config.json (any format)
    model, data, label = again.load(weights="best")   # those weights in eval mode + the test data, no download

``Recipe.from_flat`` starts from ``woollylib train``'s defaults, so a recipe written in Python and the
same command line make the same run. The CLI, sweeps, the notebook API, the report and predict/export
start from a recipe; none of them strings data, model and trainer together by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL, Settings, cli_defaults
from .hooks import RunResults, headline, protocol_summary, write_metrics
from .run import ModelSpec, RunDir, upgrade_config

__all__ = ["Recipe", "RunResult", "folder_sources", "headline", "load_data", "protocol_summary", "save_lr_finder",
           "write_metrics"]


# ---------------------------------------------------------------------------- data from settings ---

def folder_sources(data_dir):
    """(train, test) ImageSources of ``DIR/train`` and ``DIR/test`` (or ``DIR/val``), ImageFolder layout."""
    from pathlib import Path

    from .preloading import load_folder

    if not data_dir:
        raise ValueError("--dataset folder needs --data-dir DIR with DIR/train/<class>/* and DIR/test/<class>/*")
    root = Path(data_dir)
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise FileNotFoundError(
            f"--data-dir {root} needs the sub-folders train/ and test/ (or val/), each with one folder per class"
        )
    train, test = load_folder(root / "train"), load_folder(test_dir)
    if train.classes != test.classes:
        raise ValueError(f"{root}/train has classes {train.classes} but {test_dir} has {test.classes}")
    return train, test


def _folder_val(data_dir):
    """``DIR/val`` as the validation set when ``DIR`` has both test/ and val/ (else None)."""
    from pathlib import Path

    from .preloading import load_folder

    root = Path(data_dir)
    if (root / "test").is_dir() and (root / "val").is_dir():
        return load_folder(root / "val")
    return None


def load_data(data, device=None, seed: int | None = 0, *, augment: bool = True,
              download: bool = True, data_root=None, verbose: bool = True, batch_size: int | None = None):
    """The DataBundle these settings describe (``augment=False``: no train augmentation, no workers,
    as a report needs; ``data_root`` overrides ``data.data_dir``)."""
    from .preloading import get_data

    kw = {"batch_size": batch_size or data.batch_size, "loader": data.loader, "seed": seed, "device": device,
          "verbose": verbose}
    if data.workers is not None and augment:
        kw["num_workers"] = data.workers
    root = data_root or data.data_dir
    source = data.dataset
    if source == "folder":
        source = folder_sources(root)
    elif root:
        kw["root"] = root
    if source == "cifar10":
        kw["download"] = download
    if data.val_split is not None:
        own_val = _folder_val(root) if data.dataset == "folder" else None
        kw["val_split"] = own_val if own_val is not None else data.val_split
        kw["val_seed"] = data.val_seed if own_val is None else None
    kw["augment"] = data.augment if augment else "none"  # a preset of woollylib.preloading.augment
    if not augment and data.loader == "albumentations":
        kw["num_workers"] = 0
    return get_data(source, **kw)


# ------------------------------------------------------------------------------------ results ---

def save_lr_finder(result, out, *, in_run: bool = False) -> None:
    """``OUT/lr_finder.json`` (the curve and suggestion, read by the report) and ``OUT/lr_finder.png``:
    ``in_run``, as a file of the run in OUT (``train --find-lr``); else (``find-lr --out``) never into a run
    folder and never over a file woollylib did not write there."""
    from .run import (
        LR_FINDER,
        LR_FINDER_PNG,
        check_outputs,
        figure_bytes,
        lr_finder_bytes,
        write_outputs,
    )
    from .utils.visualize import plot_lr_finder, release

    run = RunDir(out)
    if in_run:
        run.write_lr_finder(result)
        png = run.save_figure(plot_lr_finder(result), "lr_finder")
    else:
        check_outputs(run.path, (LR_FINDER, LR_FINDER_PNG), "find-lr")
        png = write_outputs(run.path, {LR_FINDER: lr_finder_bytes(result),
                                       LR_FINDER_PNG: figure_bytes(release(plot_lr_finder(result)))})[1]
    print(f"wrote {run / LR_FINDER} and {png}")


class _RecipeResults(RunResults):
    """metrics.json, and with an LR range test its curve (lr_finder.json + .png), under the lock of fit()."""

    def __init__(self, data, found=None, **extra):
        super().__init__(data, **extra, found_lr=float(found.suggestion) if found is not None else None)
        self.found = found

    def on_fit_end(self, trainer):
        super().on_fit_end(trainer)
        if self.found is not None and self.summary is not None:
            save_lr_finder(self.found, trainer.run_dir.path, in_run=True)


@dataclass
class RunResult:
    """What ``Recipe.train`` returns."""

    recipe: Recipe
    trainer: Any
    model: Any            # the plain trained module (trainer.model)
    data: Any             # the DataBundle it trained on
    device: Any
    history: Any
    metrics: dict | None  # metrics.json's content (None without a run folder, and on ranks > 0)
    found_lr: float | None = None
    seconds: float = 0.0  # of this session's fit()


# ------------------------------------------------------------------------------------- recipe ---

@dataclass
class Recipe:
    """Settings + model spec: everything a run is made from (``extra`` goes to config.json's "extra")."""

    settings: Settings = field(default_factory=lambda: Settings.from_flat(**cli_defaults()))
    model: ModelSpec = field(default_factory=lambda: ModelSpec(DEFAULT_MODEL))
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_flat(cls, model: str | None = None, model_opt: dict | None = None, *, num_classes: int | None = None,
                  extra: dict | None = None, **flat) -> Recipe:
        """A recipe from flat setting names over ``woollylib train``'s defaults (``lr=``, ``epochs=``...)."""
        settings = Settings.from_flat(Settings.from_flat(**cli_defaults()), **flat)
        spec = ModelSpec(name=model or DEFAULT_MODEL, options=dict(model_opt or {}), num_classes=num_classes)
        return cls(settings, spec, dict(extra or {}))

    @classmethod
    def from_config(cls, config: dict) -> Recipe:
        """The recipe a ``config.json`` content records (format 1 is upgraded)."""
        from .preloading import list_sources

        config = upgrade_config(config)
        settings = Settings.from_dict(config["settings"])
        spec = ModelSpec.from_dict(config["model"])
        name = (config.get("data") or {}).get("name")
        if settings.data.dataset != "folder" and name in list_sources() and settings.data.dataset != name:
            settings.data.dataset = name  # a notebook run: the data bundle's own source
        settings.run.resume = settings.run.overwrite = False
        return cls(settings, spec, dict(config.get("extra") or {}))

    @classmethod
    def from_run(cls, run_dir) -> Recipe:
        """The recipe of the run in ``run_dir`` (its config.json), with ``out_dir`` pointing there."""
        run = RunDir(run_dir)
        config = run.read_config(required=False)
        if config is None:
            from .run import CONFIG

            raise FileNotFoundError(f"{run / CONFIG} is missing: {run.path} holds no woollylib run configuration")
        recipe = cls.from_config(config)
        recipe.settings.run.out_dir = str(run.path)
        return recipe

    @property
    def out_dir(self) -> Path | None:
        out = self.settings.run.out_dir
        return Path(out) if out else None

    # ---- building

    def data(self, device=None, *, augment: bool = True, download: bool = True, data_root=None,
             verbose: bool = True, batch_size: int | None = None):
        """The DataBundle of these settings (``augment=False``: as a report or a prediction needs it)."""
        return load_data(self.settings.data, device, self.settings.run.seed, augment=augment, download=download,
                         data_root=data_root, verbose=verbose, batch_size=batch_size)

    def build_model(self, num_classes: int | None = None):
        """A fresh model of the spec (``num_classes`` where the spec has none: the data's)."""
        return self.model.build(num_classes)

    def build(self, device=None, *, verbose: bool = True):
        """(data, model) of a fresh run: the RNGs seeded first (``settings.run.seed``), then the data, then
        the model's initial weights, in the order ``woollylib train`` has always used."""
        from .device import seed_everything

        seed_everything(self.settings.run.seed)
        data = self.data(device, verbose=verbose)
        return data, self.build_model(len(data.classes))

    def optimizer(self, model, lr: float):
        """The settings' optimizer over ``model`` at ``lr`` (for an LR range test)."""
        from .bp.optimizer import get_optimizer

        o = self.settings.optim
        return get_optimizer(o.name, model, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
                             nesterov=bool(o.nesterov))

    def trainer(self, model, data, device=None, **kw):
        from .training import Trainer

        return Trainer(model, data, device, settings=self.settings, config=self.extra or None, **kw)

    # ---- training

    def train(self, device=None, *, find_lr: bool = False, dist=None, verbose: bool = True) -> RunResult:
        """Build and fit the run (after an LR range test with ``find_lr``); metrics.json (and lr_finder.json)
        are written by a hook at the end of ``fit()``, under the run folder's lock that ``fit()`` holds.
        ``dist``: the process group's ``Dist`` when the caller set one up (``woollylib.distributed.session``)."""
        from .device import resolve_device

        device = resolve_device(device)
        data, model = self.build(device, verbose=verbose)
        found = self._find_lr(model, data, device, dist) if find_lr else None
        if found is not None:
            self.extra["find_lr"] = True
        results = _RecipeResults(data, found, lr=self.settings.optim.lr)
        trainer = self.trainer(model, data, device, hooks=[results])
        history = trainer.fit()
        return RunResult(self, trainer, trainer.model, data, trainer.device, history, results.summary,
                         float(found.suggestion) if found else None, results.seconds)

    def _find_lr(self, model, data, device, dist):
        """The LR range test from the model's initial weights; its suggestion becomes the run's lr (rank 0's
        under torchrun)."""
        from .scheduler import find_lr as range_test

        found = range_test(model, data.train_loader, optimizer=self.optimizer(model, 1e-7), device=device)
        lr = float(found.suggestion)
        self.settings.optim.lr = dist.broadcast_float(lr) if dist is not None else lr
        return found

    # ---- a finished run

    def load(self, weights: str = "last", device=None, *, data: bool = True, data_root=None):
        """(model with the run's ``weights`` ("last" | "best") in eval mode, test DataBundle or None, label
        of the weights such as "best.pt (epoch 3)") of the run this recipe was read from."""
        from .device import resolve_device

        if self.out_dir is None:
            raise ValueError("this recipe has no run folder (settings.run.out_dir); use Recipe.from_run(DIR)")
        if weights not in ("last", "best"):
            raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
        device = resolve_device(device)
        run = RunDir(self.out_dir)
        ckpt = run.load(weights, map_location="cpu")
        state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
        # the last 2-D weight is the classifier: (num_classes, features)
        num_classes = self.model.num_classes or [v for v in state.values() if getattr(v, "ndim", 0) == 2][-1].shape[0]
        model = self.build_model(num_classes)
        from .resume import state_dict_mismatch

        mismatch = state_dict_mismatch(model.state_dict(), state)
        if mismatch:
            raise ValueError(f"{run / (weights + '.pt')} holds another model than the run's config.json "
                             f"({self.model.name} {self.model.options}): {mismatch}; put the run's own checkpoint back")
        model.load_state_dict(state)
        model.to(device).eval()
        epoch = ckpt.get("epoch")
        label = f"{weights}.pt" + (f" (epoch {epoch})" if epoch is not None else "")
        return model, (self.test_data(device, data_root) if data else None), label

    def test_data(self, device=None, data_root=None):
        """The run's data as a report needs it: no augmentation, no workers, nothing downloaded, normalised
        with the run's own statistics (checked against config.json)."""
        from .preloading import list_sources

        config = RunDir(self.out_dir).read_config(required=False) if self.out_dir is not None else None
        info = (config or {}).get("data") or {}
        if self.settings.data.dataset != "folder" and info and info.get("name") not in list_sources():
            raise ValueError(f"config.json names no known dataset ({info.get('name')!r}); pass data= to write_report")
        batch = ((config or {}).get("resolved") or {}).get("batch_size") or 128
        seed = self.settings.run.seed
        data = load_data(self.settings.data, device, 0 if seed is None else seed, augment=False, download=False,
                         data_root=data_root, verbose=False, batch_size=int(batch))
        saved = info.get("mean")
        if saved and max(abs(a - b) for a, b in zip(saved, data.mean)) > 1e-3:
            raise ValueError(
                f"the rebuilt {self.settings.data.dataset} data is normalised with mean {data.mean}, the run used "
                f"{tuple(saved)}; pass the run's data= to write_report")
        return data
