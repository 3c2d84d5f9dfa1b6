"""Subcommands of `enhancer` that belong to training (train; eval sits beside it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Training adds `train` (and `eval`) here."""
    register_train(sub)
    register_label_fields(sub)
    from training.evaluation.cli import register_eval

    register_eval(sub)


def register_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    description = (
        "Fine-tune a LoRA adapter on labelled items, merge it, export it to OpenVINO and register it as a "
        "model version. Flags override the values of --config; see docs/training.md."
    )
    # Flags that are not given stay out of the namespace, so they cannot override the config file.
    train = sub.add_parser(
        "train", help="Train, export and register a model version.", description=description,
        argument_default=argparse.SUPPRESS,
    )  # fmt: skip
    train.set_defaults(handler=cmd_train)
    train.add_argument("--data", type=Path, help="JSONL: seed rows or record rows (docs/training.md)")
    train.add_argument(
        "--backend", choices=["local", "tinker"], help="local PEFT (default) or the Tinker API"
    )
    train.add_argument("--base-model", dest="base_model", help="HF id, HF dir, .gguf or registry version dir")
    train.add_argument("--config", type=Path, help="JSON or TOML file with TrainConfig fields")
    train.add_argument(
        "--data-dir", dest="data_dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)"
    )
    lora = train.add_argument_group("LoRA")
    lora.add_argument("--rank", type=int)
    lora.add_argument("--alpha", type=float)
    lora.add_argument("--dropout", type=float)
    lora.add_argument("--target-modules", dest="target_modules", help="comma-separated, or all-linear")
    optim = train.add_argument_group("optimisation")
    optim.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float)
    optim.add_argument("--lr-schedule", dest="lr_schedule", choices=["cosine", "linear", "constant"])
    optim.add_argument("--warmup-ratio", dest="warmup_ratio", type=float)
    optim.add_argument("--weight-decay", dest="weight_decay", type=float)
    optim.add_argument("--epochs", type=int)
    optim.add_argument("--batch-size", dest="batch_size", type=int)
    optim.add_argument(
        "--field-weights", dest="field_weights", help="loss weight per field, e.g. entities=3,key_topics=2"
    )
    optim.add_argument(
        "--silver-summaries",
        dest="silver_summaries",
        action=argparse.BooleanOptionalAction,
        help="items without a gold summary learn their first sentence (default on)",
    )
    optim.add_argument(
        "--field-labels", dest="field_labels", type=Path,
        help="JSONL of labels for unlabelled fields, by story key (from `enhancer label-fields`)",
    )  # fmt: skip
    optim.add_argument("--max-length", dest="max_length", type=int)
    optim.add_argument("--max-steps", dest="max_steps", type=int)
    optim.add_argument("--seed", type=int)
    optim.add_argument("--validation-fraction", dest="validation_fraction", type=float)
    optim.add_argument("--device", choices=["auto", "cpu", "cuda"])
    optim.add_argument(
        "--cpu-threads", dest="cpu_threads", type=int, help="torch CPU threads (default: all cores)"
    )
    out = train.add_argument_group("output")
    out.add_argument("--output-dir", dest="output_dir", type=Path, help="checkpoints, adapter, metrics.jsonl")
    out.add_argument("--version-id", dest="version_id")
    out.add_argument("--precision", choices=["int8", "int4", "fp16", "fp32"], help="OpenVINO weights (int8)")
    out.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --output-dir"
    )
    out.add_argument("--activate", action="store_true", help="serve the new version from the next job on")
    tinker = train.add_argument_group("tinker")
    tinker.add_argument(
        "--tinker-base-model", dest="tinker_base_model", help="Tinker's name for the base model"
    )
    tinker.add_argument("--tinker-base-url", dest="tinker_base_url", help="default: $TINKER_BASE_URL")


def register_label_fields(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from training.field_labels import LABELLED_FIELDS

    label = sub.add_parser(
        "label-fields",
        help="Zero-shot labels for the fields no person labelled.",
        description=(
            f"Label {', '.join(LABELLED_FIELDS)} of every story in a data file with an instruct model "
            "(each option scored, calibrated against a content-free item) and write them by story key "
            "for `enhancer train --field-labels`; see docs/training.md."
        ),
    )
    label.set_defaults(handler=cmd_label_fields)
    label.add_argument("--data", type=Path, required=True, help="JSONL: seed rows or record rows")
    label.add_argument("--model", required=True, help="instruct model: HF dir, .gguf or registry version dir")
    label.add_argument("--output", type=Path, required=True, help="labels JSONL to write")
    label.add_argument("--limit", type=int, help="label only the first N stories")
    label.add_argument("--cpu-threads", dest="cpu_threads", type=int, help="torch CPU threads")
    label.add_argument(
        "--data-dir", dest="data_dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)"
    )


def cmd_label_fields(args: argparse.Namespace) -> int:
    from app.core.db import use_data_dir
    from training.errors import TrainingError
    from training.field_labels import label_data_file

    use_data_dir(args.data_dir)
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        summary = label_data_file(
            args.data, model=args.model, output=args.output, limit=args.limit, cpu_threads=args.cpu_threads
        )
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"labelled {summary['stories']} stories in {summary['seconds']:.0f} s -> {args.output}")
    for field, counts in summary["distribution"].items():
        shown = ", ".join(f"{name} {count}" for name, count in counts.items())
        print(f"  {field}: {shown}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from app.core.db import use_data_dir
    from training.config import TrainConfig, load_config
    from training.errors import TrainingError
    from training.train import train

    use_data_dir(getattr(args, "data_dir", None))
    values = vars(args)
    overrides = {name: values[name] for name in TrainConfig.model_fields if name in values}
    try:
        config = load_config(values.get("config"), **overrides)
        result = train(config)
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"trained {result.version_id} ({result.backend}) in {result.wall_seconds:.0f} s: "
        f"{result.train_examples} train / {result.validation_examples} validation examples"
    )
    if result.initial_validation_loss is not None:
        print(f"  before training: validation loss {result.initial_validation_loss:.4f}")
    for epoch in result.epochs:
        validation = epoch.get("validation_loss")
        print(
            f"  epoch {epoch['epoch']}: train loss {epoch.get('train_loss', float('nan')):.4f}, "
            f"validation loss {'-' if validation is None else f'{validation:.4f}'}"
        )
    print(f"  model version: {result.version_dir}")
    print(f"  metrics: {result.metrics_path}")
    if result.activated:
        print(f"  active: workers serve {result.version_id} from their next job")
    else:
        print(f"  serve it with: enhancer model activate {result.version_id}")
    return 0
