"""sample_data.py and demo_heldout.py: the demo's embedded corpus and held-out set (deterministic, disjoint,
messy on purpose), and how answers are scored."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import demo_heldout
import sample_data as sd
from common import UserError

REPO = Path(__file__).resolve().parent.parent
SIZE_MB = 0.4


@pytest.fixture(scope="module")
def corpus() -> sd.Corpus:
    return sd.build_corpus(seed=0, size_mb=SIZE_MB)


@pytest.fixture(scope="module")
def records(corpus):
    """(valid records, number of lines that are not JSON)."""
    good, bad = [], 0
    for line in corpus.lines:
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    return good, bad


def turns(record: dict) -> list[tuple[str, str]]:
    return sd._Builder.rendered(record)


def qa_pairs(records) -> list[tuple[str, str]]:
    pairs = []
    for r in records:
        t = turns(r)
        pairs += [(t[i][1], t[i + 1][1]) for i in range(len(t) - 1) if t[i][0] == "user" and t[i + 1][0] == "assistant"]
    return pairs


def run_cli(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    out, held = tmp_path / f"{name}.jsonl", tmp_path / f"{name}_heldout.jsonl"
    proc = subprocess.run([sys.executable, "sample_data.py", "--out", str(out), "--heldout_out", str(held), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    return proc, out, held


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_is_deterministic_and_seed_changes_the_bytes(tmp_path):
    runs = [run_cli(tmp_path, name, "--seed", seed, "--size_mb", "0.3")
            for name, seed in (("a", "0"), ("b", "0"), ("c", "1"))]
    for proc, _, _ in runs:
        assert proc.returncode == 0, proc.stderr
    (_, a, ha), (_, b, hb), (_, c, hc) = runs
    assert sha(a) == sha(b) and sha(ha) == sha(hb)
    assert sha(a) != sha(c) and sha(ha) != sha(hc)
    summary = runs[0][0].stderr
    assert "bad_json" in summary and "held-out" in summary and runs[0][0].stdout == ""
    # The file on disk is exactly what build_corpus returns.
    assert a.read_text(encoding="utf-8") == "".join(s + "\n" for s in sd.build_corpus(0, 0.3).lines)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes left no temporaries


def test_size_is_as_requested(corpus):
    size = sum(len(s.encode("utf-8")) + 1 for s in corpus.lines)
    assert size == corpus.stats["bytes"]
    assert SIZE_MB * sd.MB <= size < SIZE_MB * sd.MB + 10_000


def test_facts_shipped_in_repo():
    capitals, definitions = sd.load_facts()
    assert len(capitals) >= 150 and len(definitions) >= 100
    caps = {c.country: c.capital for c in capitals}
    assert caps["France"] == "Paris" and caps["Japan"] == "Tokyo" and caps["Australia"] == "Canberra"
    defs = {d.term: d.definition for d in definitions}
    assert defs["machine learning"] == sd.SEED_PROMPTS[1][1]
    assert all(d.key in d.definition and d.definition.endswith(".") for d in definitions)


def test_seed_prompts_and_every_fact_are_in_training(corpus, records):
    pairs = set(qa_pairs(records[0]))
    for prompt, answer in sd.SEED_PROMPTS:
        assert (prompt, answer) in pairs
    capitals, definitions = sd.load_facts()
    answers = {a for _, a in pairs}
    assert all(sd.canonical_answer(f) in answers for f in capitals + definitions)


def test_capital_answers_are_mostly_canonical(records):
    asked = [(m.group(1), a) for q, a in qa_pairs(records[0])
             if (m := re.fullmatch(r"What is the capital of (.+)\?", q))]
    canonical = sum(a.startswith(f"The capital of {c} is ") for c, a in asked)
    assert len(asked) > 200 and canonical / len(asked) >= 0.8


def test_heldout_questions_never_appear_in_training(corpus):
    raw = "\n".join(corpus.lines)
    items = corpus.heldout
    assert items and all(item.prompt not in raw for item in items)
    # Stronger: no held-out template's fixed text occurs in training at all.
    for template in sd.CAPITAL_HELDOUT + sd.DEFINITION_HELDOUT + sd.ARITH_HELDOUT:
        fixed = max(re.split(r"\{\w+\}", template), key=len)
        assert len(fixed) >= 10 and fixed not in raw, template


def test_heldout_facts_seen_and_unseen_as_declared(corpus, records):
    items = corpus.heldout
    groups = {(i.kind, i.split) for i in items}
    assert groups == {("capital", "unseen_phrasing"), ("definition", "unseen_phrasing"),
                      ("arithmetic", "unseen_phrasing"), ("arithmetic", "unseen_fact")}
    answers = {a for _, a in qa_pairs(records[0])}
    user_text = "\n".join(q for q, _ in qa_pairs(records[0]))
    for item in items:
        assert demo_heldout.score_answer(item.expected, item.reference) and not demo_heldout.score_answer(item.expected, item.prompt)
        operands = re.match(r"(\d+) (plus|minus|times|divided by) (\d+) is", item.reference)
        if item.split == "unseen_phrasing":
            assert item.reference in answers  # the fact itself is taught
        else:  # the pair is absent from training in any phrasing
            a, op, b = operands.groups()
            sym = sd.OPS[op].symbol
            assert not re.search(rf"(?<!\d){a} (?:{op}|{re.escape(sym)}) {b}(?!\d)", user_text), item.prompt
    assert sum(i.split == "unseen_fact" for i in items) >= 50
    assert len({i.id for i in items}) == len(items)


def test_records_have_the_shapes_the_cleaner_reads(records):
    good, _ = records
    shapes = {"messages": 0, "conversations": 0, "instruction": 0}
    for r in good:
        shape = next(k for k in shapes if k in r)
        shapes[shape] += 1
        t = turns(r)
        roles = [role for role, _ in t if role != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles, r
        assert all(isinstance(c, str) and c for _, c in t)
    assert all(n > 0 for n in shapes.values())
    assert any(turns(r)[0][0] == "system" for r in good)


def test_messy_records_are_present_and_counted(corpus, records):
    good, bad = records
    messy = corpus.stats["messy"]
    assert bad == messy["bad_json"] >= 3
    valid_lines = [s for s in corpus.lines if _is_json(s)]
    assert len(valid_lines) - len(set(valid_lines)) == messy["duplicates"] > 0
    contents = [[c for _, c in turns(r)] for r in good]
    html_records = [cs for cs in contents if any(re.search(r"<(p|div|span)[ >]", c) for c in cs)]
    assert len(html_records) == messy["html"] > 0
    assert any(re.search(r"&(nbsp|amp|#x27|quot);", c) for cs in html_records for c in cs)
    strays = set(sd.ZERO_WIDTH + sd.CONTROL)
    assert sum(any(ch in strays for c in cs for ch in c) for cs in contents) == messy["control_chars"] > 0
    # Apart from the injected duplicates, every record is a distinct conversation (the cleaner's
    # exact dedup removes exactly the duplicates).
    keys = {json.dumps(turns(r)) for r in good}
    assert len(keys) == len(good) - messy["duplicates"] == corpus.stats["distinct_conversations"]


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def test_score_answer():
    assert demo_heldout.score_answer("Paris", "The capital of France is Paris.")
    assert demo_heldout.score_answer("paris", "THE CAPITAL OF FRANCE IS PARIS")
    assert demo_heldout.score_answer("Bogota", "The capital of Colombia is Bogotá.")
    assert demo_heldout.score_answer("learn from data", "It lets computers learn  from\ndata.")
    assert not demo_heldout.score_answer("12", "7 plus 5 is 112.")
    assert not demo_heldout.score_answer("Tunis", "The capital of Tunisia is Tripoli.")
    assert not demo_heldout.score_answer("Paris", "The capital of France is Lyon.")
    assert not demo_heldout.score_answer("", "anything")


def test_load_heldout_and_summarize(tmp_path, corpus):
    proc, _, held = run_cli(tmp_path, "h", "--size_mb", str(SIZE_MB))
    assert proc.returncode == 0, proc.stderr
    items = demo_heldout.load_heldout(held)
    assert items == corpus.heldout
    perfect = demo_heldout.summarize_scores(items, [i.reference for i in items])
    assert perfect["all"] == {"correct": len(items), "total": len(items), "accuracy": 1.0}
    assert perfect["capital/unseen_phrasing"]["total"] >= 150
    half = demo_heldout.summarize_scores(items, [i.reference if n % 2 else "I don't know." for n, i in enumerate(items)])
    assert half["all"]["correct"] == len(items) // 2
    with pytest.raises(ValueError):
        demo_heldout.summarize_scores(items, [])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.jsonl:1"):
        demo_heldout.load_heldout(broken)
    with pytest.raises(UserError, match="not found"):
        demo_heldout.load_heldout(tmp_path / "missing.jsonl")


def test_bad_arguments_give_one_line_errors(tmp_path):
    proc, out, _ = run_cli(tmp_path, "z", "--size_mb", "0")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "--size_mb" in proc.stderr and not out.exists()
    with pytest.raises(UserError, match="--heldout_out"):
        sd.main(["--out", str(tmp_path / "x.jsonl"), "--heldout_out", str(tmp_path / "x.jsonl")])
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "capitals.tsv").write_text("country\tcapital\nFrance\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"capitals\.tsv:2"):
        sd.load_facts(facts)
    (facts / "smalltalk.json").write_text('{"greet": {"user": ["Hi!"], "assistant": []}}', encoding="utf-8")
    with pytest.raises(UserError, match=r"smalltalk\.json: topic"):
        sd.load_smalltalk(facts)
