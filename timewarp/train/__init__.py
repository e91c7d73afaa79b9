"""Training recipes (TRL SFT and DPO) on TimeWarp's data, a tiny offline Qwen2-VL, model loading.

Heavy dependencies (torch, transformers, trl, peft) come from requirements-train.txt and are imported
lazily, so the data pipeline never needs them.
"""
