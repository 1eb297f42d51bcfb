"""Everything that exists for what earlier releases wrote or accepted, in one place, each with the release
it can go in. Nothing else in the package reads an old format; plain dicts only (no woollylib import), so
any layer may ask.

| what | for | until |
|---|---|---|
| ``upgrade_format1(config)`` | config.json of woollylib 0.1's first layout ("format 1": flat keys, a "cli" record) | 0.3 |
| ``format1_model_opt(config)`` | the ``--model-opt`` strings a format-1 CLI run recorded (for ``--resume``) | 0.3 |
| ``woollylib.utils.compare`` | the old import path of ``woollylib.experiments.optimizers`` | 0.3 |
| ``woollylib.report.rebuild/write_metrics/headline/protocol_summary`` | names of ``woollylib.recipe`` and ``woollylib.hooks`` | 0.3 |
| ``woollylib.training.atomic_save/atomic_write_json/load_checkpoint/History/CHECKPOINT_VERSION`` | names of ``woollylib.run`` | 0.3 |
| ``woollylib.training.speed_defaults`` | ``woollylib.precision.choose_precision`` + ``resolve_channels_last`` | 0.3 |
| ``woollylib.bp.vanilla/autocast/ricap`` | the course's entry points to ``bp.engine`` (kept: the design card names them) | - |
"""

from __future__ import annotations

import ast

__all__ = ["FORMAT1_CLI_DATA", "FORMAT1_SETTINGS", "format1_model_opt", "upgrade_format1"]

FORMAT1_SETTINGS = {  # format 1 key -> (group, field)
    "optimizer": ("optim", "name"), "lr": ("optim", "lr"), "momentum": ("optim", "momentum"),
    "weight_decay": ("optim", "weight_decay"), "nesterov": ("optim", "nesterov"),
    "no_decay_bn_bias": ("optim", "no_decay_bn_bias"), "scheduler": ("schedule", "name"),
    "epochs": ("schedule", "epochs"), "scheduler_kwargs": ("schedule", "options"),
    "amp": ("engine", "amp"), "channels_last": ("engine", "channels_last"),
    "ricap_beta": ("engine", "ricap_beta"), "label_smoothing": ("engine", "label_smoothing"),
    "l1": ("engine", "l1"), "grad_clip": ("engine", "grad_clip"), "tta_flip": ("engine", "tta_flip"),
}
FORMAT1_CLI_DATA = ("dataset", "data_dir", "batch_size", "loader", "augment", "workers")


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word such as norm=gn


def upgrade_format1(config: dict, name: str = "config.json") -> dict:
    """A format-1 config as the parts of today's layout: ``{"settings": groups, "model": spec fields,
    "resolved", "data", "extra"}`` (the caller validates the groups and builds the spec)."""
    if "optimizer" not in config and "cli" not in config:
        raise ValueError(f"{name} is not a woollylib run configuration (no settings in it)")
    cli = config.get("cli") or {}
    if not isinstance(cli, dict) or not isinstance(config.get("data") or {}, dict):
        raise ValueError(f"{name} has a 'cli' or 'data' entry that is not a JSON object")  # noqa: TRY004
    groups: dict[str, dict] = {"optim": {}, "schedule": {}, "engine": {}, "data": {}, "run": {}}
    for key, (group, field) in FORMAT1_SETTINGS.items():
        if key in config:
            groups[group][field] = config[key]
    options = dict(groups["schedule"].get("options") or {})
    if "pct_start" in options:
        groups["schedule"]["pct_start"] = options.pop("pct_start")
    groups["schedule"]["options"] = options
    for key in FORMAT1_CLI_DATA:
        if key in cli:
            groups["data"][key] = cli[key]
    if cli:  # format 1 recorded the resolved engine switches; the CLI's arguments say what was asked
        groups["engine"]["amp"] = cli.get("amp", groups["engine"].get("amp"))
        groups["engine"]["channels_last"] = cli.get("channels_last", groups["engine"].get("channels_last"))
    groups["run"]["seed"] = config.get("seed")
    data = config.get("data") or {}
    if cli.get("model"):
        model, options = cli["model"], {k: _literal(v) for k, _, v in (str(p).partition("=") for p in
                                                                      cli.get("model_opt") or [])}
    else:
        model, options = config.get("model_name"), dict(config.get("model_options") or {})
    return {
        "settings": groups,
        "model": {"name": model, "options": options, "num_classes": len(data.get("classes") or []) or None,
                  "cls": config.get("model"), "parameters": config.get("parameters")},
        "resolved": {k: config.get(k) for k in ("device", "steps_per_epoch", "batch_size", "amp", "channels_last")},
        "data": data,
        "extra": {k: v for k, v in config.items() if k == "cli"},
    }


def format1_model_opt(config: dict) -> list[str] | None:
    """The ``--model-opt`` strings of an upgraded format-1 CLI run (its "extra" keeps the CLI's record)."""
    old_cli = (config.get("extra") or {}).get("cli") or {}
    return old_cli.get("model_opt")
