"""Experiments: one setting over several seeds, sweeps over a grid, and the comparison of run folders.

    from woollylib import experiments as ex
    ex.run_seeds({"dataset": "digits", "model": "compact", "epochs": 4}, seeds=[0, 1, 2], out="runs/base")
    ex.sweep({"dataset": "digits", "model": "compact", "epochs": 4, "model_opt.downsample": "stride"},
             {"augment": ["cifar", "none"], "ricap_beta": [0, 0.3]}, seeds=[0, 1], out="runs/ablation")
    ex.compare(["runs/ablation"])                 # runs/ablation/compare.md + PNGs beside it

    woollylib train --dataset digits --model compact --epochs 4 --seeds 0,1,2 --out runs/base
    woollylib sweep --dataset digits --model compact --axis augment=cifar,none --seeds 0,1 --out runs/abl
    woollylib sweep --spec sweep.json --out runs/abl --shard 1/2      # this machine: runs 0, 2, 4, ...
    woollylib sweep --spec sweep.json --out runs/abl --devices cuda:0,cuda:1
    woollylib compare runs/abl [--baseline NAME]

A sweep is a base configuration (flat settings as ``Settings.from_flat`` takes them, plus ``model``
and ``model_opt.KEY``), axes ``{option: [values]}`` crossed as a grid, and seeds. It expands to
ordinary run folders ``OUT/<config>/seed-N`` (``OUT/seed-N`` without axes), each trained exactly as
``woollylib train`` would (same defaults, same seeding), and writes ``OUT/sweep.json`` (the spec and
the expanded runs) before the first run. Rerunning the same command skips finished runs (metrics.json
holds all epochs) and resumes an interrupted one from its last.pt; a folder whose saved spec differs
is refused. ``shard=(I, N)``: only runs with ``index % N == I - 1``. ``devices``: one run per device
at a time, each in its own process (log in ``OUT/logs/``).

Comparison reads run folders only: headline figures come from metrics.json when it has them
(``final_test_acc``, ``val_chosen_test_acc``, ``train_time_s``), else from history.json.

Modules: ``spec`` (options, seeds, shards, the grid, sweep.json), ``sweeps`` (training the runs, one
process per device), ``aggregation`` (reading run folders, statistics over seeds), ``comparison``
(compare.md and its figures), ``optimizers`` (``compare_optimizers``: one model, several optimizers).
"""

# besides __all__, reachable here as before the split: _child (the entry point of a parallel sweep's
# child processes) and the helpers _groups, _launch, _run_parallel
from .aggregation import (
    FEW_SEEDS,
    HEADLINE,
    MIN_SEEDS,
    _groups,  # noqa: F401
    aggregate,
    binomial_halfwidth,
    collect,
    holm,
    identity,
    paired_difference,
    read_run,
    t_quantile,
    verdict,
)
from .comparison import COMPARE_FILE, CURVES_PNG, PER_CLASS_PNG, compare
from .spec import (
    CONTROLLED,
    MODEL,
    MODEL_OPT,
    NOT_IDENTITY,
    SWEEP_FILE,
    SWEEP_FORMAT,
    SWEEP_VERSION,
    SweepError,
    SweepSpec,
    SweepTypeError,
    config_name,
    expand,
    make_spec,
    option_names,
    parse_seeds,
    parse_shard,
    parse_value,
    read_sweep,
    select_shard,
)
from .sweeps import (
    LOGS,
    _child,  # noqa: F401
    _launch,  # noqa: F401
    _run_parallel,  # noqa: F401
    run_seeds,
    run_status,
    sweep,
    train_run,
)

__all__ = [
    "COMPARE_FILE",
    "CONTROLLED",
    "CURVES_PNG",
    "FEW_SEEDS",
    "HEADLINE",
    "LOGS",
    "MIN_SEEDS",
    "MODEL",
    "MODEL_OPT",
    "NOT_IDENTITY",
    "PER_CLASS_PNG",
    "SWEEP_FILE",
    "SWEEP_FORMAT",
    "SWEEP_VERSION",
    "SweepError",
    "SweepSpec",
    "SweepTypeError",
    "aggregate",
    "binomial_halfwidth",
    "collect",
    "compare",
    "config_name",
    "expand",
    "holm",
    "identity",
    "make_spec",
    "option_names",
    "paired_difference",
    "parse_seeds",
    "parse_shard",
    "parse_value",
    "read_run",
    "read_sweep",
    "run_seeds",
    "run_status",
    "select_shard",
    "sweep",
    "t_quantile",
    "train_run",
    "verdict",
]


def __getattr__(name: str):
    """``compare_optimizers`` on first use (its module imports torch; the rest of the package does not)."""
    if name == "compare_optimizers":
        from .optimizers import compare_optimizers

        return compare_optimizers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
