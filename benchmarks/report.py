"""Where benchmark scripts leave their results: a markdown table printed and written, and a JSON file."""
import json
from pathlib import Path


def labelled_path(item: str, option: str, root=None) -> tuple:
    """``LABEL=PATH`` (a command-line item naming an existing file; a relative PATH from ``root`` if given) ->
    (label, Path); a clear exit otherwise."""
    label, sep, path = item.partition("=")
    path = Path(root) / path if root else Path(path)
    if not sep or not label or not path.is_file():
        raise SystemExit(f"{option} takes LABEL=PATH with an existing file, got {item!r}")
    return label, path


def write_report(out, table: str, payload: dict) -> Path:
    """Write OUT.md and OUT.json; return the .md path (``with_suffix`` on it names the siblings). A dot inside
    the name is kept (``e1_k1.5`` gives ``e1_k1.5.md`` where ``with_suffix`` on OUT gave ``e1_k1.md``); only a
    trailing ``.md`` or ``.json`` is dropped."""
    print("\n" + table)
    out = Path(out)
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    md = Path(f"{out}.md")
    md.write_text(table + "\n")
    md.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    return md
