"""One docs page per dataset family, generated from the dataset cards in ``datasets_meta/``.

A family is a task (the card id's first word: ``coordination``, ``reacher2``, ``ant``); its page
lists every card of that task with its description, how it is generated, its reference scores
and the statistics a fresh build is checked against. Nothing here is task-specific: a new card
appears on the next build.

Used two ways:

- as an MkDocs hook (``hooks:`` in ``mkdocs.yml``): the pages are generated in memory on every
  build (``datasets/<family>.md``) and added to the nav under "Datasets", so they never go stale;
- as a script, to look at the Markdown: ``python docs/gen_dataset_pages.py --out /tmp/dataset-pages``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FAMILY_TITLES = {"coordination": "Coordination game", "reacher2": "Two-agent reacher", "ant": "Four-agent ant"}
TASK_PAGES = {"coordination": "coordination.md", "reacher2": "reacher.md", "ant": "ant.md"}
NAV_SECTION = "Datasets"


def family_of(card_id: str) -> str:
    return card_id.split("-", 1)[0]


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (dict, list, tuple)):
        return f"`{json.dumps(v, default=str)}`"
    return f"`{v}`" if isinstance(v, str) else str(v)


def card_section(card) -> str:
    lines = [f"## `{card.id}`", ""]
    if card.description:
        lines += [" ".join(card.description.split()), ""]
    lines += ["| dataset id | observations as in |", "| --- | --- |"]
    lines += [f"| `{ds}` | `{env}` |" for ds, env in card.datasets.items()]
    lines += ["", "**Generation**", "", "| field | value |", "| --- | --- |",
              f"| environment | `{card.env}` |"]
    union = tuple(getattr(card, "union", ()) or ())
    segments = tuple(getattr(card, "segments", ()) or ())
    if union:
        lines.append(f"| union of | {', '.join(f'`{u}`' for u in union)} |")
    elif len(segments) > 1:
        for k, seg in enumerate(segments):
            kwargs = f" {_value(dict(seg.behavior_kwargs))}" if seg.behavior_kwargs else ""
            lines.append(f"| segment {k + 1} | `{seg.behavior}`{kwargs}, {seg.transitions:,} transitions |")
    else:
        lines.append(f"| behavior | `{card.behavior}` |")
        if card.behavior_kwargs:
            lines.append(f"| behavior arguments | {_value(dict(card.behavior_kwargs))} |")
    lines += [f"| transitions | {card.transitions:,} |", f"| seed | {card.seed} |"]
    lines += ["", "**Reference scores** (normalized score 0 and 1)", "", "| min (score 0) | max (score 1) |", "| --- | --- |",
              f"| {card.reference_min:.10g} | {card.reference_max:.10g} |", ""]
    if card.expected:
        lines += ["**Expected statistics** (a fresh build must match them, or nothing is cached)", "",
                  "| statistic | value |", "| --- | --- |"]
        lines += [f"| {k} | {_value(v)} |" for k, v in card.expected.items()]
        lines.append("")
    lines += [f"Build it: `offcoord generate {card.id}`; card file `datasets_meta/{Path(card.path).name}` "
              f"(sha256 `{card.sha256[:12]}…`, recorded in every results file).", ""]
    return "\n".join(lines)


def family_pages() -> dict[str, str]:
    """``{"datasets/<family>.md": markdown}`` for every family that has a card."""
    from offcoord.data.cards import load_cards

    families: dict[str, list] = {}
    for card in sorted(load_cards().values(), key=lambda c: c.id):
        families.setdefault(family_of(card.id), []).append(card)
    pages = {}
    for family, cards in sorted(families.items()):
        title = FAMILY_TITLES.get(family, family)
        task = f" The task: [{title}](../tasks/{TASK_PAGES[family]})." if family in TASK_PAGES else ""
        head = [f"# {title} datasets", "",
                f"Generated from the dataset cards in `datasets_meta/` ({len(cards)} card{'s' * (len(cards) > 1)}). "
                f"Each card builds one stored copy; its dataset ids are views of it.{task}", ""]
        pages[f"datasets/{family}.md"] = "\n".join(head) + "\n" + "\n".join(card_section(c) for c in cards)
    return pages


def _title(path: str) -> str:
    family = Path(path).stem
    return FAMILY_TITLES.get(family, family)


# --- MkDocs hook ---------------------------------------------------------------------------------

_PAGES: dict[str, str] = {}


def on_config(config, **kwargs):
    _PAGES.clear()
    _PAGES.update(family_pages())
    nav = config.get("nav") or []
    for entry in nav:
        if isinstance(entry, dict) and NAV_SECTION in entry:
            section = entry[NAV_SECTION]
            present = {next(iter(e.values())) if isinstance(e, dict) else e for e in section}
            section += [{_title(p): p} for p in _PAGES if p not in present]
    return config


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    for path, content in _PAGES.items():
        if files.get_file_from_path(path) is None:
            files.append(File.generated(config, path, content=content))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write datasets/<family>.md into")
    args = parser.parse_args()
    for path, content in family_pages().items():
        target = Path(args.out) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        print(target)


if __name__ == "__main__":
    main()
