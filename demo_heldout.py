"""The demo's held-out evaluation set: its items, its file, and how an answer is scored.

sample_data.py writes the set (--heldout_out) beside the training corpus; demo.py reads it back with
load_heldout, has the model answer every prompt, and scores the answers with score_answer and
summarize_scores. One JSON object per line, the fields of HeldoutItem.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from common import UserError, atomic_path


@dataclass(frozen=True)
class HeldoutItem:
    id: str
    kind: str  # capital | definition | arithmetic
    split: str  # unseen_phrasing | unseen_fact
    prompt: str
    expected: str  # the key answer, scored by score_answer
    reference: str  # the canonical full answer


def write_heldout(items: Sequence[HeldoutItem], path: Path) -> None:
    """Write items as JSONL (atomically), in the order given."""
    with atomic_path(path) as tmp:
        tmp.write_bytes("".join(json.dumps(asdict(h), ensure_ascii=False) + "\n" for h in items).encode())


def load_heldout(path: str | Path) -> list[HeldoutItem]:
    """Read the --heldout_out JSONL written by sample_data.py."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"held-out file not found: {path} (write it with: python sample_data.py --heldout_out {path})")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(HeldoutItem(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise UserError(f"{path}:{n}: not a held-out item ({e}); regenerate it with sample_data.py") from None
    return items


# ---------------------------------------------------------------------------- scoring

def _fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return " ".join(s.casefold().split())


def score_answer(expected: str, predicted: str) -> bool:
    """True when `expected` occurs in `predicted`, ignoring case, accents and runs of
    whitespace, and not glued to a letter or digit ("12" does not match "112",
    "Tunis" does not match "Tunisia")."""
    exp = _fold(expected)
    if not exp:
        return False
    return re.search(r"(?<!\w)" + re.escape(exp) + r"(?!\w)", _fold(predicted)) is not None


def summarize_scores(items: Sequence[HeldoutItem], predictions: Sequence[str]) -> dict:
    """Accuracy overall and per kind/split, for predictions aligned with items."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} held-out items but {len(predictions)} predictions")
    groups: dict[str, list[int]] = {}
    for item, pred in zip(items, predictions):
        ok = int(score_answer(item.expected, pred))
        for name in ("all", f"{item.kind}/{item.split}"):
            g = groups.setdefault(name, [0, 0])
            g[0] += ok
            g[1] += 1
    return {name: {"correct": c, "total": t, "accuracy": c / t} for name, (c, t) in sorted(groups.items())}
