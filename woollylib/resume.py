"""What a checkpoint holds and how a run resumes from it: the trainer's state dict, RNG states per rank,
the checks that a checkpoint comes from the same model and run, and putting it all back.

    from woollylib.resume import checkpoint, restore
    ckpt = checkpoint(trainer, epoch)       # {model, optimizer, scheduler, scaler, epoch, history, rng, config}
    restore(trainer, ckpt)                  # the inverse, after check_same_run and the model's keys
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .run import (
    CHECKPOINT_VERSION,
    CONFIG,
    LAST,
    History,
    check_config,
    new_run_id,
    upgrade_config,
)

__all__ = ["check_run_dir", "check_same_run", "checkpoint", "prepare_run_dir", "restore", "rng_for_rank", "rng_state", "seed_or_restore_rng",
           "set_rng_state", "state_dict_mismatch"]


def rng_state() -> dict:
    """Global RNG states as weights_only-loadable objects (tensors, ints, lists)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def state_dict_mismatch(expected: dict, got: dict) -> str:
    """Human summary of key/shape differences between two state dicts ('' when compatible)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} model keys missing from the checkpoint (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint keys the model does not have (e.g. {unexpected[:3]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
    return "; ".join(parts)


def checkpoint(trainer, epoch: int, rng_ranks: list | None = None) -> dict:
    """The checkpoint dict after ``epoch`` completed epochs (torch.load(weights_only=True)-safe).
    Under torchrun ``rng_ranks`` holds every rank's RNG states (``rng`` stays rank 0's)."""
    extra = {"rng_ranks": rng_ranks} if rng_ranks is not None and len(rng_ranks) > 1 else {}
    return {
        "version": CHECKPOINT_VERSION,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "epoch": epoch,
        "history": trainer.history.to_dict(),
        "rng": rng_state(),
        "config": trainer.config,
        "run_id": trainer.run_id,
        **extra,
    }


def restore(trainer, ckpt: dict) -> None:
    """Load ``ckpt`` (last.pt) into the trainer: weights, optimizer, scheduler, scaler, history, epoch and
    this rank's RNG states, after checking that it comes from the same model and run."""
    from .compile import plain_state_dict

    path = trainer.run_dir / LAST
    saved = upgrade_config(ckpt.get("config") or {})
    ckpt["model"] = plain_state_dict(ckpt["model"])  # also a checkpoint saved from a compiled model
    mismatch = state_dict_mismatch(trainer.model.state_dict(), ckpt["model"])
    if mismatch:
        raise ValueError(
            f"checkpoint {path} was saved from a different model (saved model: "
            f"{saved['model'].get('cls')!r}, this model: {type(trainer.model).__name__!r}): {mismatch}; build "
            "the same model as the run, or start a new run in another out_dir"
        )
    check_same_run(trainer.config, saved, path, trainer.scheduler_name == "onecycle")
    trainer.model.load_state_dict(ckpt["model"])
    try:
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        if trainer.scheduler is not None and ckpt.get("scheduler") is not None:
            trainer.scheduler.load_state_dict(ckpt["scheduler"])
        if trainer.scaler is not None and ckpt.get("scaler") is not None:
            trainer.scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(
            f"checkpoint {path} does not match this optimizer/scheduler ({exc}); use the run's settings "
            "(see its config.json) or start a new run in another out_dir"
        ) from exc
    trainer.history = History.from_dict(ckpt["history"])
    trainer.start_epoch = trainer._saved_epoch = int(ckpt["epoch"])
    trainer._rng_to_restore = rng_for_rank(ckpt, trainer.dist.rank, trainer.dist.world_size, trainer.verbose)
    trainer._reseed_rank = trainer._rng_to_restore is None and trainer.dist.rank > 0  # resumed on more processes
    if trainer.verbose:
        print(f"Resuming {path} after epoch {trainer.start_epoch}/{trainer.epochs}")


def check_same_run(now: dict, then: dict, path, onecycle: bool) -> None:
    """Refuse to resume with settings that define another run (a one-cycle schedule is also fixed
    by its length)."""
    keys = [("optimizer", ("settings", "optim", "name")), ("scheduler", ("settings", "schedule", "name")),
            ("lr", ("settings", "optim", "lr")), ("steps_per_epoch", ("resolved", "steps_per_epoch"))]
    if onecycle:
        keys.append(("epochs", ("settings", "schedule", "epochs")))

    def get(d, where):
        for k in where:
            d = (d or {}).get(k)
        return d

    diffs = [f"{name}: run has {get(then, where)!r}, now {get(now, where)!r}" for name, where in keys
             if get(then, where) is not None and get(then, where) != get(now, where)]
    split_then, split_now = get(then, ("data", "val")), get(now, ("data", "val"))
    if (split_then is None) != (split_now is None) or (
            split_then and split_now and split_then.get("sha256") != split_now.get("sha256")):
        def text(v):
            return "none" if v is None else f"{v.get('count')} images, seed {v.get('seed')}"
        diffs.append(f"validation split: run has {text(split_then)}, now {text(split_now)} (pass the run's "
                     "val_split and seed)")
    if diffs:
        raise ValueError(
            f"cannot resume {path} with different settings ({'; '.join(diffs)}); use the run's settings "
            "(see its config.json) or start a new run in another out_dir"
        )


def rng_for_rank(ckpt: dict, rank: int, world: int, verbose: bool = True) -> dict | None:
    """This rank's saved RNG states; None (reseed) for a rank the saving job did not have."""
    ranks = ckpt.get("rng_ranks") or [ckpt.get("rng")]
    if len(ranks) != world and verbose:
        print(f"note: the checkpoint holds the RNG states of {len(ranks)} process(es) and this job has {world}, so "
              "random draws after the resume (RICAP, dropout) differ from an uninterrupted run")
    return ranks[rank] if rank < len(ranks) else None


def seed_or_restore_rng(trainer) -> None:
    """At the start of fit(): the resumed RNG states, a new stream for a rank the saving job did not have, or
    the run's seed (per rank) for a fresh run."""
    if trainer._rng_to_restore is not None:
        set_rng_state(trainer._rng_to_restore)
        trainer._rng_to_restore = None
    elif trainer._reseed_rank:  # a rank the saving job did not have: its own stream from here on
        from .device import seed_everything

        trainer._reseed_rank = False
        seed_everything((trainer.settings.run.seed or 0) + trainer.dist.rank + 1000 * trainer.start_epoch)
    elif trainer.settings.run.seed is not None and trainer.start_epoch == 0:
        from .device import seed_everything

        seed_everything(trainer.settings.run.seed + trainer.dist.rank)  # ranks draw their own RICAP patches


def check_run_dir(trainer) -> dict | None:
    """Validate resume/overwrite against ``out_dir`` (the files a resume reads are checked against the run's
    manifest); the checkpoint to resume from, if any. Sets ``trainer.run_id``."""
    s = trainer.settings
    if s.run.resume == "auto":  # continue the run in out_dir if there is one, else start it
        if trainer.run_dir is None:
            raise ValueError("resume='auto' needs out_dir=<the run directory>")
        s.run.resume = trainer.run_dir.is_run()
    trainer.run_id = new_run_id()
    if s.run.resume and trainer.run_dir is None:
        raise ValueError(f"resume=True needs out_dir=<the run directory that holds {LAST}>")
    if s.run.resume and s.run.overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other; pass only one")
    if not s.run.resume:
        if trainer.run_dir is not None:
            trainer.run_dir.check_fresh(s.run.overwrite)
        return None
    run = trainer.run_dir
    manifest = run.manifest()  # a damaged manifest is named here
    run.check_links()
    if not run.has(LAST) and manifest is not None and (manifest.get("epoch") or 0) > 0:
        raise FileNotFoundError(
            f"{run / LAST} is missing, and {run / 'manifest.json'} records epoch {manifest['epoch']}: the run cannot "
            "continue without it; put it back, or start a fresh run (overwrite=True / --overwrite)")
    if not run.has(LAST) and run.is_run():
        # the run started but completed no epoch: it begins again with its saved settings
        _fill_from_saved(trainer, run.resume_config()["settings"])
        trainer.run_id = run.run_id_of(None) or trainer.run_id
        return None
    ckpt = run.load("last", map_location=trainer.device)
    if manifest is None and trainer.verbose:
        print(f"note: {run.path} is a run of an earlier woollylib (no manifest.json): its files are not checked "
              "against checksums; from its next epoch on they are")
    saved = check_config(upgrade_config(ckpt.get("config") or {}), f"the config in {run / LAST}")
    _fill_from_saved(trainer, saved["settings"])
    trainer.run_id = run.run_id_of(ckpt) or trainer.run_id
    return ckpt


def _fill_from_saved(trainer, saved: dict) -> None:
    s = trainer.settings
    if s.schedule.epochs is None:
        s.schedule.epochs = saved["schedule"].get("epochs")
    if s.optim.lr is None:
        s.optim.lr = saved["optim"].get("lr")


def prepare_run_dir(trainer) -> None:
    """Under the lock, before the first epoch: refuse what changed since construction, clean up,
    check room, write the marker of a fresh run (or announce the run replacing an old one) or repair a
    resumed one."""
    run = trainer.run_dir
    fresh = trainer.start_epoch == 0 and not trainer._saved
    if fresh and not trainer.resume:
        run.check_fresh(trainer.overwrite)  # another writer may have started since __init__
    else:
        run.check_links()
    run.clean_temp()
    size = sum(t.numel() * t.element_size() for t in trainer.model.state_dict().values() if torch.is_tensor(t))
    run.preflight(2 * size + 2**20)  # weights + optimizer state (momentum) + the rest
    if trainer._resume_ckpt is not None:
        fixed = run.repair(trainer._resume_ckpt)
        if fixed and trainer.verbose:
            print(f"repaired {', '.join(fixed)} from {run / LAST} (epoch {trainer._resume_ckpt['epoch']})")
        trainer._resume_ckpt = None
    elif fresh and trainer.overwrite:
        if run.is_run():
            run.announce(trainer.run_id)
    elif fresh and not run.has(LAST) and (not trainer.resume or not run.has(CONFIG) or run.manifest() is None):
        run.start(trainer.run_id, trainer.config)  # the marker: this folder is a woollylib run from now on
        trainer._marker_written = not trainer.resume
