"""Train one or more cross-validation folds with TrainConfig overrides and score the held-out stories.

The folds, the fold training and the scoring are `enhancer eval --compare`'s own
(training.evaluation.compare / runner); this only lets a recipe be tried on a few folds first:

    python bench/cv_fold.py --base-model data/models/smollm2-135m-instruct --folds-to-run 0 \
        --overrides '{"epochs": 10}'

Prints one JSON line per fold (entities / key_topics precision, recall, F1 fuzzy, relevance within
+-1, schema-valid rate, training seconds) and one for the folds pooled.

Reproducing the shipped adapter's recipe (its manifest's TrainConfig, every fold, the pooled scores
beside the manifest's cross-validated ones and their difference):

    python bench/cv_fold.py --base-model data/models/smollm2-135m-instruct --folds-to-run 0,1,2,3 \
        --from-manifest training/adapters/smollm2-135m-newsletter/manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.core.hashing import file_sha256  # noqa: E402
from training.evaluation.compare import DEFAULT_FOLDS, assign_folds, train_fold  # noqa: E402
from training.evaluation.items import load_eval_items  # noqa: E402
from training.evaluation.runner import evaluate, load_eval_runtime, score  # noqa: E402
from training.seed_data import SeedDataMissing, seed_file  # noqa: E402

# TrainConfig fields a fold sets itself (train_fold, --seed) or that say where a run ran, not how it trained.
NOT_RECIPE = {"data", "output_dir", "version_id", "base_model", "activate", "resume", "device", "cpu_threads",
              "validation_fraction", "seed", "precision"}  # fmt: skip
KEYS = (
    "entities_precision_fuzzy", "entities_recall_fuzzy", "entities_f1_fuzzy",
    "key_topics_precision_fuzzy", "key_topics_recall_fuzzy", "key_topics_f1_fuzzy",
    "relevance_within_1", "schema_valid_rate",
)  # fmt: skip


UNLABELLED_FIELDS = ("summary", "categories", "sentiment", "urgency_level", "action_items")


def write_predictions(path: Path, items: list, predictions: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for item, prediction in zip(items, predictions, strict=True):
            metadata = prediction.metadata or {}
            row = {
                "key": item.key,
                "headline": item.prompt.headline,
                "gold_key_topics": item.gold.key_topics,
                "key_topics": metadata.get("key_topics"),
                "gold_entities": item.gold.entities,
                "entities": metadata.get("entities"),
                "gold_relevance": item.gold.relevance_score,
                "relevance_score": metadata.get("relevance_score"),
                # Fields without gold labels: their distribution shows a constant or copied field.
                **{name: metadata.get(name) for name in UNLABELLED_FIELDS},
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="labelled JSONL (default: annotated_train.jsonl of the seed data)"
    )
    parser.add_argument("--base-model", required=True, help="what TrainConfig.base_model takes")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    parser.add_argument("--folds-to-run", default="0", help="comma-separated fold indices (default 0)")
    parser.add_argument("--overrides", default="{}", help="JSON object of TrainConfig fields")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="reuse fold versions already trained under --out (e.g. an `eval --compare` run's cv/ "
        "directory) and only score them: measures a pipeline change on the same adapters",
    )
    parser.add_argument(
        "--scores", type=Path, help="write the pooled scores (every metric) to this JSON file"
    )
    parser.add_argument(
        "--from-manifest",
        type=Path,
        help="a shipped adapter's manifest.json: train with its config, compare with its CV scores",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/cv-fold"), help="scratch directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--predictions", type=Path, help="write one JSON line per held-out item: gold and predicted fields"
    )
    args = parser.parse_args(argv)
    if args.data is None:
        try:
            args.data = seed_file()
        except SeedDataMissing as error:
            parser.error(str(error))
    overrides = json.loads(args.overrides)
    shipped: dict = {}
    if args.from_manifest:
        shipped = json.loads(args.from_manifest.read_text(encoding="utf-8"))
        data_sha = shipped["data"]["sha256"]
        if file_sha256(args.data) != data_sha:
            parser.error(f"{args.data} is not the data the adapter was trained on (sha256 {data_sha})")
        recipe = shipped["training"]["config"]
        overrides = {k: v for k, v in recipe.items() if k not in NOT_RECIPE} | overrides
    items = load_eval_items(args.data)
    folds = assign_folds(items, args.folds, args.seed)
    pooled_items, pooled_predictions = [], []
    for index in (int(part) for part in args.folds_to_run.split(",")):
        held = folds[index]
        started = time.perf_counter()
        version_dir = args.out / f"fold-{index}" / "data" / "models" / f"cv-fold-{index}"
        if not (args.rescore and (version_dir / "manifest.json").is_file()):
            _config, trained, _training_items = train_fold(
                args.data,
                folds,
                index,
                args.out / f"fold-{index}",
                base_model=args.base_model,
                seed=args.seed,
                overrides=overrides,
            )
            version_dir = trained.version_dir
        train_seconds = round(time.perf_counter() - started)
        version = str(version_dir)
        report = evaluate(version, held, repeats=1, runtime=load_eval_runtime(version))
        print(json.dumps({"fold": index, "train_s": train_seconds, **{k: report.metrics[k] for k in KEYS}}))
        pooled_items += held
        pooled_predictions += report.predictions
    if args.predictions:
        write_predictions(args.predictions, pooled_items, pooled_predictions)
    pooled = score(pooled_items, [pooled_predictions])
    print(json.dumps({"pooled": len(pooled_items), **{k: pooled[k] for k in KEYS}}))
    if args.scores:
        args.scores.write_text(json.dumps(pooled, indent=2), encoding="utf-8")
    if shipped:
        recorded = shipped["evaluation"]["cross_validated"]["local-lora-cv"]
        difference = {k: round(pooled[k] - recorded[k], 4) for k in KEYS if k in recorded}
        print(json.dumps({"shipped": {k: recorded.get(k) for k in KEYS}, "difference": difference}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
