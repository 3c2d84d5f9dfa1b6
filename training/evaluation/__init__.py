"""Evaluation against human labels, through the production path (load_runtime + enhance_items).

See docs/evaluation.md. `evaluate(model_source, items)` (training.evaluation.runner) is the Python
API, `load_eval_items(path)` (training.evaluation.items) reads a data file, `enhancer eval` is the CLI.
"""
