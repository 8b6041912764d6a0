"""Write the demo's embedded conversational corpus and its held-out evaluation set.

    python sample_data.py --out data/demo_chat.jsonl --heldout_out data/demo_heldout.jsonl --seed 0 --size_mb 6

The corpus is chat JSONL built only from what ships in data_facts/ (capitals of ~170 countries in
common English spellings, one-sentence definitions of ~110 computing and ML terms, small talk) and
small-number arithmetic. Each fact is asked in many phrasings and mostly answered in one template
("The capital of France is Paris."), so a ~2M-parameter model learns them in minutes on a CPU. The
seed's two prompts and answers are in it word for word, so the demo's model recalls them; the
held-out file asks what training never asked (new phrasings of trained facts, and arithmetic kept
out of training), which measures what it learned. Records come in the three shapes
dataset_cleaner.py reads, and a few are messy on purpose (HTML, control characters, duplicates,
broken JSON) to give the cleaner work.

Same arguments, same bytes: everything comes from `random.Random` seeded from --seed.
"""
from __future__ import annotations

import hashlib
import html
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from common import ArgParser, UserError, atomic_path, cli_main, read_json
from demo_heldout import HeldoutItem, score_answer, write_heldout

FACTS_DIR = Path(__file__).resolve().parent / "data_facts"
MB = 1_000_000
MAX_SIZE_MB = 200.0

SEED_PROMPTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Explain machine learning in simple terms.",
     "Machine learning is a way for computers to learn from data without being explicitly programmed."),
)


class Featured(NamedTuple):
    """A seed prompt's fact, drawn more often than the others."""
    name: str  # the country or term
    probability: float  # of drawing it whenever a fact of its kind is drawn


FEATURED = {"capital": Featured("France", 0.03), "definition": Featured("machine learning", 0.04)}

# ---------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class Capital:
    country: str  # as used mid-sentence, article included: "the Netherlands"
    capital: str


@dataclass(frozen=True)
class Definition:
    term: str
    article: str  # "a", "an", "the" or "" (how the term reads in "What is ...?")
    key: str  # a phrase of the definition that a correct answer must contain
    definition: str

    @property
    def a_term(self) -> str:
        return f"{self.article} {self.term}" if self.article else self.term


@dataclass(frozen=True)
class Arithmetic:
    a: int
    op: str  # a key of OPS
    b: int

    @property
    def result(self) -> int:
        return OPS[self.op].apply(self.a, self.b)


class Operator(NamedTuple):
    symbol: str
    apply: Callable[[int, int], int]


OPS: dict[str, Operator] = {
    "plus": Operator("+", lambda a, b: a + b),
    "minus": Operator("-", lambda a, b: a - b),
    "times": Operator("*", lambda a, b: a * b),
    "divided by": Operator("/", lambda a, b: a // b),  # only exact divisions are drawn
}


def _read_tsv(path: Path, columns: list[str]) -> list[list[str]]:
    if not path.is_file():
        raise UserError(f"facts file not found: {path} (restore it from the repo or pass --facts_dir)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t") != columns:
        raise UserError(f"{path}: the header must be {'<TAB>'.join(columns)}; fix the first line")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(columns) or not all(c == c.strip() for c in cells):
            raise UserError(f"{path}:{n}: expected {len(columns)} tab-separated trimmed columns, got {line!r}")
        rows.append(cells)
    return rows


def load_facts(facts_dir: str | Path = FACTS_DIR) -> tuple[list[Capital], list[Definition]]:
    """Read data_facts/capitals.tsv and data_facts/definitions.tsv (validated)."""
    facts_dir = Path(facts_dir)
    capitals = [Capital(*r) for r in _read_tsv(facts_dir / "capitals.tsv", ["country", "capital"])]
    definitions = [Definition(*r) for r in
                   _read_tsv(facts_dir / "definitions.tsv", ["term", "article", "key", "definition"])]
    for d in definitions:
        if d.key not in d.definition or d.article not in ("", "a", "an", "the"):
            raise UserError(f"{facts_dir / 'definitions.tsv'}: term {d.term!r}: the key must be a phrase of "
                            f"the definition and the article one of a/an/the/empty")
    for kind, names in (("country", [c.country for c in capitals]), ("term", [d.term for d in definitions])):
        if not names:
            raise UserError(f"{facts_dir}: no {kind} listed; restore data_facts/ from the repo")
        if len(set(names)) != len(names):
            raise UserError(f"{facts_dir}: a {kind} is listed twice; keep one line per {kind}")
    return capitals, definitions


class SmallTalk(NamedTuple):
    user: list[str]  # what the user may say
    assistant: list[str]  # what the assistant may answer


def load_smalltalk(facts_dir: str | Path = FACTS_DIR) -> dict[str, SmallTalk]:
    """data_facts/smalltalk.json: {topic: {"user": [phrasings], "assistant": [answers]}}."""
    path = Path(facts_dir) / "smalltalk.json"
    data = read_json(path, "facts file")
    talk = {}
    for topic in TALK_TOPICS:
        entry = data.get(topic) if isinstance(data, dict) else None
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), list) and entry[k]
                                                and all(isinstance(x, str) and x for x in entry[k])
                                                for k in ("user", "assistant"))):
            raise UserError(f"{path}: topic {topic!r} needs non-empty string lists 'user' and 'assistant'")
        talk[topic] = SmallTalk(entry["user"], entry["assistant"])
    return talk


def arithmetic_facts() -> list[Arithmetic]:
    """Every arithmetic fact the corpus draws from: sums and products of small numbers,
    differences that are not negative, exact divisions."""
    facts = [Arithmetic(a, "plus", b) for a in range(21) for b in range(21)]
    facts += [Arithmetic(a, "minus", b) for a in range(21) for b in range(a + 1)]
    facts += [Arithmetic(a, "times", b) for a in range(13) for b in range(13)]
    facts += [Arithmetic(b * q, "divided by", b) for b in range(1, 13) for q in range(13)]
    return facts


# ---------------------------------------------------------------------------- phrasings
# Fields: {c} country, {C} country capitalised, {cp} possessive; {t} term, {at} term with its
# article; {a} {b} numbers, {w} operator word, {s} operator symbol.
# The held-out templates share no question string with the training ones (the tests check it).

CAPITAL_Q = [("What is the capital of {c}?", 4), ("What's the capital of {c}?", 1),
             ("Which city is the capital of {c}?", 1), ("Tell me {cp} capital.", 1),
             ("What city is the capital of {c}?", 1), ("Capital of {c}?", 1),
             ("Do you know the capital of {c}?", 1), ("What is {cp} capital city?", 1),
             ("Can you tell me the capital of {c}?", 1), ("I'd like to know the capital of {c}.", 1),
             ("Which city serves as the capital of {c}?", 1), ("what is the capital of {c}", 1),
             ("Quick question: what is the capital of {c}?", 1), ("What is the capital city of {c}?", 1)]
CAPITAL_FOLLOW = ["What about {c}?", "And {c}?", "How about {c}?", "And what is the capital of {c}?"]
CAPITAL_HELDOUT = ["Name the capital of {c}.", "Could you name the capital city of {c}?",
                   "{C} has its capital in which city?", "Please state the capital of {c}.",
                   "In {c}, which city is the capital?", "Which city do people in {c} call their capital?"]

DEFINITION_Q = [("What is {at}?", 3), ("Explain {at} in simple terms.", 3), ("Define {at}.", 1),
                ("What does {t} mean?", 1), ("Can you explain {at}?", 1), ("Tell me what {at} is.", 1),
                ("Give me a one-sentence definition of {at}.", 1), ("What is meant by {at}?", 1),
                ("Explain {at} to a beginner.", 1), ("what is {at}", 1), ("In one sentence, what is {at}?", 1),
                ("I keep hearing about {t}. What is it?", 1)]
DEFINITION_FOLLOW = ["And what is {at}?", "What about {at}?", "How about {at}?"]
DEFINITION_HELDOUT = ["Briefly describe {at}.", "Could you give me a short explanation of {at}?",
                      "How would you describe {at} in one sentence?", "Help me understand {at}.",
                      "I am new to computing. What exactly does {t} refer to?"]

ARITH_Q = [("What is {a} {w} {b}?", 4), ("What's {a} {w} {b}?", 1), ("What is {a} {s} {b}?", 2),
           ("How much is {a} {w} {b}?", 1), ("Calculate {a} {w} {b}.", 1), ("Compute {a} {s} {b}.", 1),
           ("{a} {s} {b} = ?", 1), ("Can you work out {a} {w} {b}?", 1)]
ARITH_FOLLOW = ["And {a} {w} {b}?", "What about {a} {s} {b}?", "And what is {a} {w} {b}?"]
ARITH_HELDOUT = ["Please evaluate {a} {w} {b}.", "Tell me the result of {a} {w} {b}.",
                 "What number do you get from {a} {w} {b}?", "Solve this for me: {a} {s} {b}."]

SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a friendly assistant that answers in one short sentence.",
                  "You are a concise and accurate assistant.", "Answer the user's questions clearly and briefly."]

MIDDLE_TALK = ["how_are_you", "identity", "capability", "joke", "robot", "weather"]  # small talk between questions
TALK_TOPICS = MIDDLE_TALK + ["greet", "help", "compliment", "thanks", "bye"]  # topics of data_facts/smalltalk.json

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
CONTROL = ["\x00", "\x07", "\x08", "\x1b", "\x7f"]


def _capitalize(s: str) -> str:
    return s[:1].upper() + s[1:]


def _possessive(s: str) -> str:
    return s + ("'" if s.endswith("s") else "'s")


def _sentence(s: str) -> str:
    return s if s.endswith(".") else s + "."


def capital_fields(f: Capital) -> dict[str, str]:
    return {"c": f.country, "C": _capitalize(f.country), "cp": _possessive(f.country)}


def definition_fields(f: Definition) -> dict[str, str]:
    return {"t": f.term, "at": f.a_term}


def arith_fields(f: Arithmetic) -> dict[str, str]:
    return {"a": str(f.a), "b": str(f.b), "w": f.op, "s": OPS[f.op].symbol}


def canonical_answer(fact: Capital | Definition | Arithmetic) -> str:
    if isinstance(fact, Capital):
        return _sentence(f"The capital of {fact.country} is {fact.capital}")
    if isinstance(fact, Definition):
        return fact.definition
    return f"{fact.a} {fact.op} {fact.b} is {fact.result}."


def key_answer(fact: Capital | Definition | Arithmetic) -> str:
    """The substring a correct answer must contain."""
    if isinstance(fact, Capital):
        return fact.capital
    if isinstance(fact, Definition):
        return fact.key
    return str(fact.result)


# ---------------------------------------------------------------------------- the corpus


@dataclass
class Corpus:
    lines: list[str]  # JSONL lines without the newline, in file order
    heldout: list[HeldoutItem]
    stats: dict


class FactTurn(NamedTuple):
    question: str
    answer: str
    fact: Capital | Definition | Arithmetic


class _Builder:
    """Draws conversations. Every clean record renders to a conversation not drawn before, so the
    cleaner's exact dedup removes exactly the duplicates injected on purpose."""

    def __init__(self, seed: int, capitals: list[Capital], definitions: list[Definition],
                 smalltalk: dict[str, SmallTalk]):
        self.rng = random.Random(seed)
        self.capitals, self.definitions, self.smalltalk = capitals, definitions, smalltalk
        arith = arithmetic_facts()
        heldout_rng = random.Random(f"heldout-facts-{seed}")  # independent of --size_mb
        self.heldout_arith = sorted(heldout_rng.sample(range(len(arith)), len(arith) // 12))
        held = set(self.heldout_arith)
        self.arith_all = arith
        self.arith = [f for i, f in enumerate(arith) if i not in held]
        self.arith_probe = heldout_rng.sample(self.arith, 80)  # asked in held-out phrasings; in training via coverage
        names = {"capital": {f.country: f for f in capitals}, "definition": {f.term: f for f in definitions}}
        self.featured = {k: names[k][name] for k, (name, _) in FEATURED.items() if name in names[k]}
        self.drawn: set[bytes] = set()  # sha256 of each conversation drawn
        self.turn_counts = {"capital": 0, "definition": 0, "arithmetic": 0, "smalltalk": 0}

    # -- facts and turns

    def _pick(self, kind: str) -> Capital | Definition | Arithmetic:
        pool = {"capital": self.capitals, "definition": self.definitions, "arithmetic": self.arith}[kind]
        if kind in self.featured and self.rng.random() < FEATURED[kind].probability:
            return self.featured[kind]
        return self.rng.choice(pool)

    def _template(self, weighted: list[tuple[str, int]]) -> str:
        return self.rng.choices([t for t, _ in weighted], weights=[w for _, w in weighted])[0]

    def _answer(self, fact: Capital | Definition | Arithmetic) -> str:
        if self.rng.random() < 0.85:
            return canonical_answer(fact)
        if isinstance(fact, Capital):
            c, cap = fact.country, fact.capital
            return _sentence(self.rng.choice([f"{cap} is the capital of {c}",
                                              f"{_capitalize(_possessive(c))} capital is {cap}",
                                              f"The capital city of {c} is {cap}"]))
        if isinstance(fact, Definition):
            return self.rng.choice(["Sure! ", "In simple terms: ", "Good question. "]) + fact.definition
        return self.rng.choice([f"{fact.a} {fact.op} {fact.b} equals {fact.result}.", f"The answer is {fact.result}."])

    def _fact_turn(self, kind: str, follow: bool = False) -> FactTurn:
        fact = self._pick(kind)
        fields, weighted, follows = {
            "capital": (capital_fields, CAPITAL_Q, CAPITAL_FOLLOW),
            "definition": (definition_fields, DEFINITION_Q, DEFINITION_FOLLOW),
            "arithmetic": (arith_fields, ARITH_Q, ARITH_FOLLOW)}[kind]
        template = self.rng.choice(follows) if follow else self._template(weighted)
        self.turn_counts[kind] += 1
        return FactTurn(template.format(**fields(fact)), self._answer(fact), fact)

    def _talk(self, topic: str) -> tuple[str, str]:
        """(user, assistant) lines on a small-talk topic."""
        talk = self.smalltalk[topic]
        self.turn_counts["smalltalk"] += 1
        return self.rng.choice(talk.user), self.rng.choice(talk.assistant)

    def _question_kind(self) -> str:
        return self.rng.choices(["capital", "definition", "arithmetic", "smalltalk"], weights=[45, 30, 17, 8])[0]

    def _conversation(self) -> list[tuple[str, str]]:
        """[(role, content)], without a system message."""
        turns: list[tuple[str, str]] = []
        multi = self.rng.random() < 0.7
        if multi and self.rng.random() < 0.35:
            turns.append(self._talk(self.rng.choice(["greet", "greet", "help"])))
        prev = None
        for _ in range(self.rng.randint(1, 4) if multi else 1):
            if prev in ("capital", "definition", "arithmetic") and self.rng.random() < 0.4:
                turn = self._fact_turn(prev, follow=True)
                turns.append((turn.question, turn.answer))
                continue
            kind = self._question_kind()
            if kind == "smalltalk":
                turns.append(self._talk(self.rng.choice(MIDDLE_TALK + (["compliment"] if prev else []))))
            else:
                turn = self._fact_turn(kind)
                turns.append((turn.question, turn.answer))
            prev = kind
        if multi and self.rng.random() < 0.35:
            turns.append(self._talk("thanks"))
            if self.rng.random() < 0.4:
                turns.append(self._talk("bye"))
        return [m for u, a in turns for m in (("user", u), ("assistant", a))]

    def _instruction(self) -> dict:
        kind = self._question_kind()
        if kind == "smalltalk":
            user, answer = self._talk(self.rng.choice(MIDDLE_TALK))
            return {"instruction": user, "input": "", "output": answer}
        question, answer, fact = self._fact_turn(kind)
        style = self.rng.random()
        if style < 0.4:
            return {"instruction": question, "input": "", "output": answer}
        if style < 0.7:
            return {"instruction": "Answer the following question.", "input": question, "output": answer}
        instruction, inp = {
            Capital: lambda f: ("Give the capital city of the country below.", f.country),
            Definition: lambda f: ("Define the following term in one sentence.", f.term),
            Arithmetic: lambda f: ("Solve the arithmetic problem.", f"{f.a} {OPS[f.op].symbol} {f.b}"),
        }[type(fact)](fact)
        return {"instruction": instruction, "input": inp, "output": answer}

    # -- records

    @staticmethod
    def rendered(record: dict) -> list[tuple[str, str]]:
        """The (role, content) turns a record stands for, as the cleaner reads them: an instruction
        record is the user turn `instruction` + "\\n\\n" + `input` and the assistant turn `output`."""
        if "instruction" in record:
            user = record["instruction"] + ("\n\n" + record["input"] if record["input"] else "")
            return [("user", user), ("assistant", record["output"])]
        if "conversations" in record:
            roles = {"human": "user", "gpt": "assistant", "system": "system"}
            return [(roles[m["from"]], m["value"]) for m in record["conversations"]]
        return [(m["role"], m["content"]) for m in record["messages"]]

    def _claim(self, record: dict) -> bool:
        """True, and the conversation marked as drawn, when the record's conversation is new."""
        key = hashlib.sha256(json.dumps(self.rendered(record)).encode()).digest()
        if key in self.drawn:
            return False
        self.drawn.add(key)
        return True

    def random_record(self) -> tuple[str, dict]:
        shape = self.rng.choices(["messages", "conversations", "instruction"], weights=[86, 8, 6])[0]
        if shape == "instruction":
            return shape, self._instruction()
        msgs = self._conversation()
        if shape == "conversations":
            return shape, {"conversations": [{"from": "human" if r == "user" else "gpt", "value": c} for r, c in msgs]}
        if self.rng.random() < 0.12:
            msgs = [("system", self.rng.choice(SYSTEM_PROMPTS))] + msgs
        return shape, {"messages": [{"role": r, "content": c} for r, c in msgs]}

    def unique_record(self) -> tuple[str, dict]:
        for _ in range(200):
            shape, record = self.random_record()
            if self._claim(record):
                return shape, record
        raise RuntimeError("could not draw a new distinct conversation in 200 tries")

    def coverage_records(self) -> list[dict]:
        """Plain records that ask every capital and definition, and the arithmetic facts probed
        by held-out phrasings, in the seed's phrasings: so the seed's two prompts and every fact
        a held-out question asks about are in training whatever --size_mb is."""
        asks = [(CAPITAL_Q[0][0], capital_fields, f) for f in self.capitals]
        asks += [(t, definition_fields, f) for f in self.definitions for t in ("What is {at}?", DEFINITION_Q[1][0])]
        asks += [(ARITH_Q[0][0], arith_fields, f) for f in self.arith_probe]
        records = [{"messages": [{"role": "user", "content": t.format(**fields(f))},
                                 {"role": "assistant", "content": canonical_answer(f)}]} for t, fields, f in asks]
        for r in records:
            self._claim(r)
        self.turn_counts["capital"] += len(self.capitals)
        self.turn_counts["definition"] += 2 * len(self.definitions)
        self.turn_counts["arithmetic"] += len(self.arith_probe)
        return records

    # -- messy variants

    def _contents(self, record: dict) -> list[tuple[dict | list, str]]:
        if "instruction" in record:
            return [(record, k) for k in ("instruction", "input", "output") if record[k]]
        field = "value" if "conversations" in record else "content"
        return [(m, field) for m in record.get("conversations") or record["messages"]]

    def html_mess(self, record: dict) -> dict:
        for holder, field in self._contents(record):
            if self.rng.random() < 0.75:
                text = html.escape(holder[field], quote=True)
                if self.rng.random() < 0.4 and " " in text:
                    i = self.rng.choice([m.start() for m in re.finditer(" ", text)])
                    text = text[:i] + "&nbsp;" + text[i + 1:]
                style = self.rng.choice(["<p>{}</p>", '<div class="post"><p>{}</p></div>', "<p>{}<br></p>",
                                         "<span>{}</span>", "<p><b>{}</b></p>"])
                holder[field] = style.format(text)
        return record

    def control_mess(self, record: dict) -> dict:
        contents = self._contents(record)
        for holder, field in self.rng.sample(contents, self.rng.randint(1, min(3, len(contents)))):
            text = holder[field]
            for _ in range(self.rng.randint(1, 3)):
                i = self.rng.randrange(len(text) + 1)
                text = text[:i] + self.rng.choice(ZERO_WIDTH + CONTROL) + text[i:]
            holder[field] = text
        return record

    def bad_line(self, n: int) -> str:
        """A line no JSON parser accepts, of one of five kinds (n picks which)."""
        counts = dict(self.turn_counts)  # bad lines carry no training turns
        line = dump(self.random_record()[1])
        other = dump(self.random_record()[1])
        self.turn_counts = counts
        turns = [c for r, c in self.rendered(json.loads(line)) if r != "system"]
        plain = " ".join(("Q: " + " A: ".join(turns)).split())
        return [line[: self.rng.randrange(10, len(line) - 2)],  # truncated
                line[:-1] + ",}",  # trailing comma
                repr(json.loads(line)),  # a Python dict: single quotes
                plain,  # plain text on one line
                line + other][n % 5]  # two objects on one line


def dump(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def build_corpus(seed: int = 0, size_mb: float = 6.0, facts_dir: str | Path = FACTS_DIR) -> Corpus:
    """Build the training lines (shuffled, messy ones included) and the held-out items."""
    capitals, definitions = load_facts(facts_dir)
    builder = _Builder(seed, capitals, definitions, load_smalltalk(facts_dir))
    lines = [dump(r) for r in builder.coverage_records()]
    clean = list(lines)
    shapes = {"messages": len(lines), "conversations": 0, "instruction": 0}
    messy = {"html": 0, "control_chars": 0, "duplicates": 0, "bad_json": 0}
    target = int(size_mb * MB)
    size = sum(len(s.encode()) + 1 for s in lines)
    while size < target:
        shape, record = builder.unique_record()
        shapes[shape] += 1
        roll = builder.rng.random()
        if roll < 0.02:
            line = dump(builder.html_mess(record))
            messy["html"] += 1
        elif roll < 0.04:
            line = dump(builder.control_mess(record))
            messy["control_chars"] += 1
        else:
            line = dump(record)
            clean.append(line)
        new = [line]
        if builder.rng.random() < 0.02:
            new.append(builder.rng.choice(clean))
            messy["duplicates"] += 1
        if (len(lines) + 1) % 300 == 0:
            new.append(builder.bad_line(messy["bad_json"]))
            messy["bad_json"] += 1
        lines += new
        size += sum(len(s.encode()) + 1 for s in new)
    builder.rng.shuffle(lines)
    heldout = build_heldout(seed, builder)
    stats = {"lines": len(lines), "bytes": size, "valid_records": len(lines) - messy["bad_json"],
             "distinct_conversations": len(builder.drawn), "shapes": shapes, "turns": dict(builder.turn_counts),
             "messy": messy,
             "facts": {"capitals": len(capitals), "definitions": len(definitions),
                       "arithmetic": len(builder.arith_all), "arithmetic_held_out": len(builder.heldout_arith)}}
    return Corpus(lines, heldout, stats)


def build_heldout(seed: int, builder: _Builder) -> list[HeldoutItem]:
    """Held-out phrasings of every capital and definition and of some arithmetic facts in
    training, plus the arithmetic facts kept out of training, asked in training phrasings."""
    rng = random.Random(f"heldout-items-{seed}")
    # Training phrasings that start with a word: "3 + 7 = ?" would be a substring of "13 + 7 = ?".
    worded = [t for t, _ in ARITH_Q if t[0].isalpha()]
    asks = [("capital", "unseen_phrasing", CAPITAL_HELDOUT, capital_fields, f) for f in builder.capitals]
    asks += [("definition", "unseen_phrasing", DEFINITION_HELDOUT, definition_fields, f) for f in builder.definitions]
    asks += [("arithmetic", "unseen_phrasing", ARITH_HELDOUT, arith_fields, f) for f in builder.arith_probe]
    asks += [("arithmetic", "unseen_fact", worded, arith_fields, builder.arith_all[i]) for i in builder.heldout_arith]
    items, counts = [], {}
    for kind, split, templates, fields, fact in asks:
        prompt = rng.choice(templates).format(**fields(fact))
        expected = key_answer(fact)
        if score_answer(expected, prompt):  # the question gives the answer away ("capital of Singapore")
            continue
        counts[kind] = counts.get(kind, 0) + 1
        items.append(HeldoutItem(f"{kind}-{counts[kind]:04d}", kind, split, prompt, expected, canonical_answer(fact)))
    return items


def write_outputs(corpus: Corpus, out: Path, heldout_out: Path) -> None:
    with atomic_path(out) as tmp:
        tmp.write_bytes("".join(s + "\n" for s in corpus.lines).encode("utf-8"))
    write_heldout(corpus.heldout, heldout_out)


def _summary(corpus: Corpus, out: Path, heldout_out: Path) -> str:
    s = corpus.stats
    groups: dict[str, int] = {}
    for h in corpus.heldout:
        groups[f"{h.kind}/{h.split}"] = groups.get(f"{h.kind}/{h.split}", 0) + 1
    listing = lambda d: ", ".join(f"{k} {v:,}" for k, v in d.items())  # noqa: E731
    return "\n".join([
        f"sample_data: wrote {out}: {s['lines']:,} lines, {s['bytes']:,} bytes, "
        f"{s['distinct_conversations']:,} distinct conversations",
        f"  records by shape: {listing(s['shapes'])}",
        f"  turns by kind: {listing(s['turns'])}",
        f"  facts: {listing(s['facts'])}",
        f"  messy records injected: {listing(s['messy'])}",
        f"  held-out: {heldout_out}: {len(corpus.heldout):,} items ({listing(groups)})",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Write the demo's conversational corpus (chat JSONL) and held-out set.")
    p.add_argument("--out", default="data/demo_chat.jsonl", help="training corpus JSONL")
    p.add_argument("--heldout_out", default="data/demo_heldout.jsonl", help="held-out evaluation JSONL")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size_mb", type=float, default=6.0, help="corpus size in MB (10^6 bytes)")
    p.add_argument("--facts_dir", default=str(FACTS_DIR),
                   help="folder with capitals.tsv, definitions.tsv and smalltalk.json")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if not 0 < args.size_mb <= MAX_SIZE_MB:
        raise UserError(f"--size_mb {args.size_mb}: must be above 0 and at most {MAX_SIZE_MB:g}; try --size_mb 6")
    out, heldout_out = Path(args.out), Path(args.heldout_out)
    if out.resolve() == heldout_out.resolve():
        raise UserError(f"--out and --heldout_out are both {out}; give the held-out set its own file")
    corpus = build_corpus(args.seed, args.size_mb, args.facts_dir)
    write_outputs(corpus, out, heldout_out)
    print(_summary(corpus, out, heldout_out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli_main(main)
