"""Numeric precisions by name, one table: a run's precision (fp32 / bf16 / fp16) and a dtype's own name."""

from __future__ import annotations

import torch

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# what autocast runs in for each precision; None: fp32, no autocast
AMP_DTYPES = {name: None if dtype is torch.float32 else dtype for name, dtype in PRECISION_DTYPES.items()}
# the same dtypes by torch's names (profile --dtype float32 | bfloat16 | float16)
DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in PRECISION_DTYPES.values()}
