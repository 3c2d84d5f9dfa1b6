"""Package a trained LoRA adapter for the repository: fp16 weights, its config, and a manifest.

    enhancer train --data ../shared/data/seed/annotated_train.jsonl --validation-fraction 0 \\
        --version-id smollm2-135m-newsletter --output-dir /tmp/run ...
    python -m training.package_adapter --version-dir data/models/smollm2-135m-newsletter \\
        --base-dir data/models/smollm2-135m-instruct --metrics /tmp/run/metrics.jsonl \\
        --out training/adapters/smollm2-135m-newsletter --command "enhancer train ..." \\
        [--cv-results reports/results.json]

The manifest says what the adapter is (rank, alpha, target modules, sha256), what it was trained
from (base model and its GGUF's sha256, the data file's sha256 and row count), how (the whole
TrainConfig, the command, the loss curve) and how well that recipe scores held out
(`enhancer eval --compare`'s cross-validated results). `enhancer model pull` merges it into the
base; tests/test_shipped_adapter.py checks the files against the manifest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from app.core.hashing import file_sha256
from app.registry import MANIFEST_FILE, read_manifest
from training.metrics import read_metrics
from worker.presets import packaged_base

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# The silver labels a recipe trained on (`enhancer train --field-labels`) ship beside the adapter.
FIELD_LABELS_FILE = "field_labels.jsonl"
# The held-out scores kept from a --compare run (per model row).
CV_KEYS = (
    "n_items",
    "schema_valid_rate",
    "raw_schema_valid_rate",
    "entities_f1_fuzzy",
    "entities_precision_fuzzy",
    "entities_recall_fuzzy",
    "key_topics_f1_fuzzy",
    "key_topics_precision_fuzzy",
    "key_topics_recall_fuzzy",
    "relevance_within_1",
    "relevance_mae",
    "relevance_within_1_best_constant",
    "summary_sentence_rate",
    "flagged_summary_or_topic_rate",
    "flagged_summary_or_topic_rate_unguarded",
    "flagged_action_items_rate",
    "flagged_action_items_rate_unguarded",
    "entities_f1_fuzzy_unguarded",
    "key_topics_f1_fuzzy_unguarded",
    "rejections",
    "dropped",
    "p50_s",
    "p95_s",
)


def fp16_weights(source: Path, target: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {name: tensor.to(torch.float16).contiguous() for name, tensor in load_file(source).items()}
    save_file(tensors, target, metadata={"format": "pt"})
    return {
        "tensors": len(tensors),
        "parameters": sum(t.numel() for t in tensors.values()),
        "dtype": "float16",
    }


def _loss_curve(metrics_path: Path) -> dict[str, list[Any]]:
    return {
        "steps": [[r["step"], r["loss"]] for r in read_metrics(metrics_path, "step")],
        "epochs": [
            {k: v for k, v in r.items() if k not in ("event", "time")}
            for r in read_metrics(metrics_path, "epoch")
        ],
    }


def cv_scores(results_path: Path) -> dict[str, Any]:
    """The tuned and base rows of an `enhancer eval --compare` results.json."""
    results = json.loads(results_path.read_text(encoding="utf-8"))
    picked: dict[str, Any] = {"source": "enhancer eval --compare", "options": results["options"]}
    for row in results["models"]:  # kinds: base, local-lora-cv (the shipped recipe, held out)
        picked[row["kind"]] = {
            "name": row["name"],
            **{k: row["scores"][k] for k in CV_KEYS if k in row["scores"]},
        }
    if "label_agreement" in results:
        picked["label_agreement"] = results["label_agreement"]
    return picked


def package(
    *,
    version_dir: Path,
    base_dir: Path,
    metrics_path: Path,
    out: Path,
    command: str,
    cv_results: Path | None,
    labels_command: str | None = None,
) -> dict[str, Any]:
    trained = read_manifest(version_dir)
    base = read_manifest(base_dir)
    training = trained["training"]
    config = dict(training["config"])
    data = trained["data"]
    # Paths of the machine that trained it say nothing to a user: keep the file names.
    config["data"] = Path(config["data"]).name
    config["output_dir"] = None
    config["base_model"] = base["version_id"]
    gguf = next(base_dir.glob("*.gguf"))
    # A base pulled before manifests recorded the upstream name: the presets know it.
    base_name = base.get("name") or packaged_base(base["version_id"]).name

    out.mkdir(parents=True, exist_ok=True)
    weights = fp16_weights(version_dir / "adapter" / ADAPTER_WEIGHTS, out / ADAPTER_WEIGHTS)
    adapter_config = json.loads((version_dir / "adapter" / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base_name
    (out / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")

    manifest: dict[str, Any] = {
        "version_id": out.name,
        "schema_version": trained.get("schema_version"),
        "base_model": {
            "version_id": base["version_id"],
            "name": base_name,
            "licence": base.get("licence"),
            "source_package": base.get("source_package"),
            "gguf": gguf.name,
            "gguf_sha256": file_sha256(gguf),
        },
        "adapter": {
            "file": ADAPTER_WEIGHTS,
            "sha256": file_sha256(out / ADAPTER_WEIGHTS),
            "rank": adapter_config["r"],
            "alpha": adapter_config["lora_alpha"],
            "target_modules": sorted(adapter_config["target_modules"]),
            **weights,
        },
        "data": {
            "file": Path(data["path"]).name,
            "sha256": trained["data_sha256"],
            "rows": data["lines"],
            "examples": data["examples"],
            "duplicates_removed": data["duplicates_removed"],
            "train_examples": data["train_examples"],
        },
        "training": {
            "command": command,
            "backend": training["backend"],
            "device": training.get("device"),
            "seconds": training.get("seconds"),
            "config": config,
            "loss_curve": _loss_curve(metrics_path),
        },
        "evaluation": {},
    }
    if cv_results is not None:
        manifest["evaluation"]["cross_validated"] = cv_scores(cv_results)
    if trained.get("field_labels"):
        labels = _ship_field_labels(training["config"], trained["field_labels"], out)
        if labels_command:
            labels["command"] = labels_command
        manifest["data"]["field_labels"] = labels
        config["field_labels"] = FIELD_LABELS_FILE
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _ship_field_labels(config: dict[str, Any], recorded: dict[str, Any], out: Path) -> dict[str, Any]:
    """Copy the labels file the run trained on (the one whose sha256 its manifest recorded)."""
    source = Path(config["field_labels"])
    if not source.is_file() or file_sha256(source) != recorded["sha256"]:
        raise SystemExit(f"{source}: not the field-labels file the run trained on ({recorded['sha256']})")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out / FIELD_LABELS_FILE)
    return {**recorded, "file": FIELD_LABELS_FILE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--version-dir", type=Path, required=True, help="the registered version `enhancer train` made"
    )
    parser.add_argument("--base-dir", type=Path, required=True, help="the base model's registry directory")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.jsonl of the training run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", required=True, help="the command that trained it, for the manifest")
    parser.add_argument("--cv-results", type=Path, help="results.json of `enhancer eval --compare`")
    parser.add_argument("--labels-command", help="the `enhancer label-fields` command of --field-labels")
    args = parser.parse_args(argv)
    manifest = package(
        version_dir=args.version_dir,
        base_dir=args.base_dir,
        metrics_path=args.metrics,
        out=args.out,
        command=args.command,
        cv_results=args.cv_results,
        labels_command=args.labels_command,
    )
    print(json.dumps({k: manifest[k] for k in ("version_id", "adapter", "data")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
