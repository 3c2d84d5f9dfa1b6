"""Training: LoRA fine-tuning (local PEFT or Tinker), evaluation, export to OpenVINO.

The service never imports this package at runtime.
"""
