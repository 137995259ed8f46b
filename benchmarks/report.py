"""Where benchmark scripts leave their results: a markdown table printed and written, and a JSON file."""
import json
from pathlib import Path


def write_report(out, table: str, payload: dict) -> Path:
    print("\n" + table)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    return out
