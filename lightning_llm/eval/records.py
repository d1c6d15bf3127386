"""Writing evaluation records for people: CSV and JSON lines files, and a W&B table when a W&B run is active."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def write_records(records: list[Row], stem: Path) -> list[Path]:
    """Write rows as `<stem>.csv` and `<stem>.jsonl`; list values are JSON-encoded in the CSV."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, jsonl_path = stem.with_suffix(".csv"), stem.with_suffix(".jsonl")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in records)
    with jsonl_path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return [csv_path, jsonl_path]


def log_wandb_table(key: str, records: list[Row]) -> bool:
    """Log rows as a W&B table when a W&B run is active (wandb already imported); whether it was logged."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return False
    columns = list(records[0])
    run.log(
        {
            key: wandb.Table(
                columns=columns,
                data=[[json.dumps(r[c]) if isinstance(r[c], list) else r[c] for c in columns] for r in records],
            )
        }
    )
    return True
