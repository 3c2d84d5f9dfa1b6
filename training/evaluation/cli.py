"""`enhancer eval`: score one model (or, with --compare, several) against the human labels."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register_eval(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    description = (
        "Run a model through the worker's pipeline on labelled items and score what it would store "
        "(docs/evaluation.md). --compare cross-validates a local LoRA against the base model and any "
        "Tinker version, and writes a Markdown report with charts."
    )
    cmd = sub.add_parser("eval", help="Evaluate a model against human labels.", description=description)
    cmd.set_defaults(handler=cmd_eval)
    cmd.add_argument(
        "--model",
        help="registry version id, version/HF directory, .gguf or HF id owner/name (default: what the "
        "service serves, ENHANCER_MODEL or the active version); with --compare: the base model "
        "(default smollm2-135m-instruct)",
    )
    cmd.add_argument("--data", type=Path, required=True, help="JSONL: annotated seed rows or record rows")
    cmd.add_argument("--limit", type=int, help="only the first N items")
    cmd.add_argument("--json", action="store_true", help="print one JSON object (the scores)")
    cmd.add_argument("--repeats", type=int, default=2, help="passes over the items (consistency; default 2)")
    cmd.add_argument(
        "--consistency-items",
        type=int,
        default=20,
        help="passes after the first cover only the first N items (default 20; 0: all items)",
    )
    cmd.add_argument("--batch-size", type=int, help="items per generate call (default: ENHANCER_MAX_BATCH)")
    cmd.add_argument(
        "--backend",
        choices=["openvino-genai", "openvino", "torch"],
        help="default: ENHANCER_BACKEND (openvino-genai)",
    )
    cmd.add_argument(
        "--precision", choices=["fp32", "fp16", "int8", "int4"], help="default: ENHANCER_PRECISION"
    )
    cmd.add_argument("--trained-on", type=Path, help="the model's training file, if its manifest's is gone")
    cmd.add_argument("--predictions", type=Path, help="also write every prediction to this JSON file")
    cmd.add_argument("--data-dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)")
    cmd.add_argument(
        "--agreement",
        action="store_true",
        help="no model: score each labelling of a story labelled twice against the other (the ceiling)",
    )
    compare = cmd.add_argument_group("compare")
    compare.add_argument("--compare", action="store_true", help="base vs cross-validated LoRA vs Tinker")
    compare.add_argument(
        "--reports", type=Path, default=Path("reports"), help="reports directory (./reports)"
    )
    compare.add_argument("--folds", type=int, default=4, help="cross-validation folds (default 4)")
    compare.add_argument("--epochs", type=int, help="LoRA epochs per fold (default: TrainConfig's)")
    compare.add_argument(
        "--test-data", type=Path, help="composite test set (default: unannotated_test.jsonl beside --data)"
    )
    compare.add_argument("--composite-limit", type=int, help="only the first N composite test items")
    compare.add_argument("--no-composite", action="store_true", help="skip the upstream composite score")
    compare.add_argument("--skip-base", action="store_true", help="only the cross-validated LoRA")
    compare.add_argument("--base-limit", type=int, help="score the base model on the first N items only")
    compare.add_argument(
        "--fresh", action="store_true", help="re-score the base model even if its manifest has scores"
    )


def resolve_model(model: str | None, *, base: bool = False) -> str:
    """The model to score: `--model`, else what the service serves (or, for `--compare`, the base)."""
    from app.core.config import get_settings
    from app.registry import resolve_model as resolve
    from worker.presets import BASE_MODEL

    return resolve(get_settings(), model if model is not None or not base else BASE_MODEL.version_id)


def print_table(scores: dict[str, Any]) -> None:
    from training.evaluation.report import _fmt

    width = max(len(k) for k in scores)
    for key, value in scores.items():
        print(f"{key:<{width}}  {_fmt(value)}")


def cmd_eval(args: argparse.Namespace) -> int:
    from app.core.db import use_data_dir
    from app.core.migrate import migrate_data_dir
    from training.errors import TrainingError

    use_data_dir(getattr(args, "data_dir", None))
    migrate_data_dir()  # the registry answers which model is active
    try:
        if args.agreement:
            from training.evaluation.agreement import label_agreement
            from training.evaluation.runner import _finite

            agreement = label_agreement(args.data)
            if args.json:
                print(json.dumps(_finite(agreement)))
            else:
                print_table(agreement)
            return 0
        if args.compare:
            from training.evaluation.compare import CompareOptions, run_compare

            options = CompareOptions(
                data=args.data,
                base_model=resolve_model(args.model, base=True),
                reports_dir=args.reports,
                folds=args.folds,
                epochs=args.epochs,
                limit=args.limit,
                repeats=args.repeats,
                consistency_items=args.consistency_items or None,
                batch_size=args.batch_size,
                test_data=args.test_data,
                composite_limit=args.composite_limit,
                composite=not args.no_composite,
                fresh=args.fresh,
                base_limit=args.base_limit,
                skip_base=args.skip_base,
            )
            result = run_compare(options)
            if args.json:
                print(json.dumps(result.to_json(), indent=2))
            else:
                print(f"report: {result.report_path}")
            return 0
        return _single(args)
    except (TrainingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _single(args: argparse.Namespace) -> int:
    from app.core.hashing import file_sha256
    from training.evaluation.items import load_eval_items
    from training.evaluation.registry_scores import store_scores
    from training.evaluation.runner import evaluate

    items = load_eval_items(args.data)  # a bad data file is the first thing to say
    model = resolve_model(args.model)
    report = evaluate(
        model,
        items,
        limit=args.limit,
        repeats=args.repeats,
        batch_size=args.batch_size,
        backend=args.backend,
        precision=args.precision,
        trained_on=args.trained_on,
        consistency_items=args.consistency_items or None,
    )
    scores = report.to_json()
    if args.limit is None:
        store_scores(model, args.data.stem, {**scores, "data_sha256": file_sha256(args.data)})
    if args.predictions:
        args.predictions.parent.mkdir(parents=True, exist_ok=True)
        args.predictions.write_text(
            json.dumps(report.to_json(with_predictions=True), indent=2, ensure_ascii=False), encoding="utf-8"
        )
    if args.json:
        print(json.dumps(scores))
    else:
        print(f"model: {report.model} ({report.runtime['backend']}, {report.runtime['precision']})")
        print_table({k: v for k, v in scores.items() if k not in ("model", "runtime", "notes")})
    return 0
