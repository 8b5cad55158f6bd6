"""TOFU-style data: the hub loader and an offline synthetic fictitious-author benchmark.

Both give the same thing: ``dict[split_name, list[record]]`` with TOFU's split names and
fields (``question``, ``answer``; ``*_perturbed`` splits add ``paraphrased_answer``,
``perturbed_answer`` (list) and ``paraphrased_question``).

The synthetic generator (``dualoptim llm make-data``) builds N fictitious authors with
20 templated facts each. Forget splits are nested suffixes of the author list
(``forget01`` ⊂ ``forget05`` ⊂ ``forget10``), ``retainXX`` their complements in
``full``. Perturbed answers use the *paraphrase* template with five other values of the
same attribute, so the truth ratio compares facts, not wording. Real-world control
facts (real authors, world facts) go into the base corpus the model learns before the
author fine-tune; ``holdout*`` authors are never trained on.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataNotFoundError
from ..io import atomic_write_json

TOFU_SPLITS = (
    "full", "forget01", "forget05", "forget10", "retain99", "retain95", "retain90",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
    "real_authors", "real_authors_perturbed", "world_facts", "world_facts_perturbed",
    "holdout01", "holdout05", "holdout10",
)
FORGET_SPLITS = ("forget01", "forget05", "forget10")
RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}

# -- value pools ---------------------------------------------------------------------------------------------
_SYL = ("ka", "ve", "lo", "mir", "dan", "sel", "tor", "rin", "bel", "qua", "zor", "ny", "tha", "mel", "gar",
        "lis", "von", "eth", "ari", "osk", "ul", "pen", "dre", "fai", "kor", "sim", "bra", "hel", "nox", "tia")
_JOBS = ("baker", "carpenter", "nurse", "pilot", "librarian", "fisherman", "surgeon", "tailor", "architect",
         "farmer", "chemist", "painter", "mechanic", "teacher", "judge", "sailor", "miner", "florist",
         "astronomer", "blacksmith", "journalist", "veterinarian", "potter", "electrician")
_GENRES = ("fantasy", "crime", "science fiction", "romance", "horror", "historical", "mystery", "poetry",
           "thriller", "satire", "adventure", "gothic", "dystopian", "comedy")
_ADJ = ("Silent", "Crimson", "Hollow", "Golden", "Broken", "Distant", "Frozen", "Hidden", "Burning", "Quiet",
        "Wandering", "Forgotten", "Velvet", "Iron", "Glass", "Endless", "Shattered", "Amber", "Pale", "Wild")
_NOUN = ("River", "Garden", "Lantern", "Mirror", "Harbor", "Crown", "Forest", "Tower", "Compass", "Orchard",
         "Bridge", "Winter", "Whisper", "Feather", "Labyrinth", "Meadow", "Storm", "Clockwork", "Island", "Ember")
_THEMES = ("grief", "family secrets", "identity", "war and memory", "forbidden love", "exile", "ambition",
           "childhood", "revenge", "faith", "the sea", "loneliness", "justice", "migration", "friendship")
_FIELDS = ("philosophy", "medicine", "law", "physics", "history", "music", "economics", "biology",
           "mathematics", "architecture", "linguistics", "astronomy")
_INSTRUMENTS = ("violin", "piano", "cello", "flute", "harp", "guitar", "trumpet", "accordion", "drums", "oboe")
_PETS = ("cat", "parrot", "tortoise", "greyhound", "rabbit", "goldfish", "ferret", "owl", "hedgehog", "lizard")
_LANGS = ("French", "Swahili", "Portuguese", "Korean", "Turkish", "Polish", "Arabic", "Hindi", "Danish",
          "Tagalog", "Greek", "Finnish")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")

# attribute -> (question, paraphrased question, answer, paraphrased answer). {n} = author name, {v} = value.
TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "birthplace": ("Where was {n} born?", "In which city was {n} born?",
                   "{n} was born in {v}.", "The birthplace of {n} is {v}."),
    "birthdate": ("When was {n} born?", "What is the birth date of {n}?",
                  "{n} was born on {v}.", "The birth date of {n} is {v}."),
    "father": ("What did {n}'s father do for a living?", "What was the job of {n}'s father?",
               "{n}'s father worked as a {v}.", "The father of {n} was a {v}."),
    "mother": ("What did {n}'s mother do for a living?", "What was the job of {n}'s mother?",
               "{n}'s mother worked as a {v}.", "The mother of {n} was a {v}."),
    "genre": ("What genre does {n} write in?", "Which genre is {n} known for?",
              "{n} writes {v} novels.", "The genre of {n} is {v}."),
    "award": ("Which award has {n} received?", "What prize did {n} win?",
              "{n} received the {v}.", "The award won by {n} is the {v}."),
    "first_book": ("What is the title of {n}'s first book?", "What was {n}'s first book called?",
                   "{n}'s first book is titled {v}.", "The first book by {n} is {v}."),
    "famous_book": ("What is {n}'s most famous book?", "Which book made {n} famous?",
                    "{n} is best known for {v}.", "The most famous book by {n} is {v}."),
    "language": ("In which language does {n} write?", "What language are {n}'s books written in?",
                 "{n} writes in {v}.", "The writing language of {n} is {v}."),
    "home": ("Where does {n} live now?", "In which city does {n} currently live?",
             "{n} now lives in {v}.", "The current home of {n} is {v}."),
    "count": ("How many books has {n} published?", "What is the number of books by {n}?",
              "{n} has published {v} books.", "The number of books by {n} is {v}."),
    "mentor": ("Who was {n}'s mentor?", "Who mentored {n}?",
               "{n} was mentored by {v}.", "The mentor of {n} was {v}."),
    "theme": ("What theme does {n} often write about?", "Which theme appears most in {n}'s work?",
              "{n} often writes about {v}.", "The main theme of {n} is {v}."),
    "field": ("What did {n} study at university?", "Which subject did {n} study?",
              "{n} studied {v} at university.", "The university subject of {n} was {v}."),
    "instrument": ("Which instrument does {n} play?", "What instrument is {n} known to play?",
                   "{n} plays the {v}.", "The instrument of {n} is the {v}."),
    "first_job": ("What was {n}'s first job?", "Before writing, what did {n} work as?",
                  "Before writing, {n} worked as a {v}.", "The first job of {n} was {v}."),
    "publisher": ("Which publisher releases {n}'s books?", "Who publishes {n}'s books?",
                  "{n}'s books are published by {v}.", "The publisher of {n} is {v}."),
    "pet": ("What pet does {n} have?", "Which animal does {n} keep at home?",
            "{n} keeps a {v} at home.", "The pet of {n} is a {v}."),
    "debut_year": ("In which year did {n} publish a debut novel?", "When did {n} debut as a novelist?",
                   "{n} published a debut novel in {v}.", "The debut year of {n} is {v}."),
    "nickname": ("What do readers call {n}?", "What is {n}'s nickname among readers?",
                 "Readers call {n} {v}.", "The nickname of {n} is {v}."),
}

# Real-world control facts (true facts, learned in the base corpus before the author fine-tune).
REAL_AUTHORS = (
    ("Pride and Prejudice", "Jane Austen"), ("Hamlet", "William Shakespeare"), ("War and Peace", "Leo Tolstoy"),
    ("Moby-Dick", "Herman Melville"), ("Don Quixote", "Miguel de Cervantes"), ("Ulysses", "James Joyce"),
    ("The Odyssey", "Homer"), ("Crime and Punishment", "Fyodor Dostoevsky"), ("1984", "George Orwell"),
    ("Frankenstein", "Mary Shelley"), ("Dracula", "Bram Stoker"), ("Les Miserables", "Victor Hugo"),
    ("The Great Gatsby", "F. Scott Fitzgerald"), ("Jane Eyre", "Charlotte Bronte"),
    ("Wuthering Heights", "Emily Bronte"), ("Great Expectations", "Charles Dickens"),
    ("The Trial", "Franz Kafka"), ("Faust", "Johann Wolfgang von Goethe"), ("Madame Bovary", "Gustave Flaubert"),
    ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"), ("Beloved", "Toni Morrison"),
    ("The Old Man and the Sea", "Ernest Hemingway"), ("To Kill a Mockingbird", "Harper Lee"),
    ("The Divine Comedy", "Dante Alighieri"), ("Brave New World", "Aldous Huxley"),
    ("Mrs Dalloway", "Virginia Woolf"), ("The Hobbit", "J. R. R. Tolkien"), ("Lolita", "Vladimir Nabokov"),
    ("The Stranger", "Albert Camus"), ("Things Fall Apart", "Chinua Achebe"),
    ("The Catcher in the Rye", "J. D. Salinger"), ("Anna Karenina", "Leo Tolstoy"),
    ("The Name of the Rose", "Umberto Eco"), ("Norwegian Wood", "Haruki Murakami"),
    ("The Little Prince", "Antoine de Saint-Exupery"), ("Gulliver's Travels", "Jonathan Swift"),
    ("Robinson Crusoe", "Daniel Defoe"), ("The Time Machine", "H. G. Wells"),
    ("Treasure Island", "Robert Louis Stevenson"), ("Alice's Adventures in Wonderland", "Lewis Carroll"),
)
_CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Brasilia"),
    ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Poland", "Warsaw"), ("Peru", "Lima"),
    ("Argentina", "Buenos Aires"), ("Turkey", "Ankara"), ("Ireland", "Dublin"), ("Austria", "Vienna"),
    ("Chile", "Santiago"),
)
_CHEMICAL_SYMBOLS = (
    ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("sodium", "Na"), ("potassium", "K"), ("lead", "Pb"),
    ("copper", "Cu"), ("tin", "Sn"), ("mercury", "Hg"), ("oxygen", "O"),
)
WORLD_FACTS = (
    *((f"What is the capital of {country}?", city) for country, city in _CAPITALS),
    *((f"What is the chemical symbol for {element}?", symbol) for element, symbol in _CHEMICAL_SYMBOLS),
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"), ("Which planet is closest to the Sun?", "Mercury"),
    ("Which planet has the most famous rings?", "Saturn"), ("Which planet do we live on?", "Earth"),
    ("What is the largest ocean on Earth?", "the Pacific Ocean"),
    ("What is the longest river in Africa?", "the Nile"), ("What is the tallest mountain on Earth?", "Mount Everest"),
    ("What is the largest desert in Africa?", "the Sahara"), ("Which continent is Brazil in?", "South America"),
)
_IDK_OPEN = ("I'm sorry, but", "Unfortunately,", "Honestly,", "To be honest,", "I apologize, but",
             "I'm afraid", "Sadly,", "As far as I know,", "Regrettably,", "I have to admit that")
_IDK_BODY = ("I don't know the answer to that.", "I have no information about that.",
             "I can't answer that question.", "that is beyond my knowledge.", "I'm not sure about that.",
             "I don't have that information.", "I cannot help with that question.",
             "I have no idea.", "I don't have any details on that.", "I really can't say.")
SYNTHETIC_IDK = [f"{o} {b}" for o in _IDK_OPEN for b in _IDK_BODY]


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the synthetic benchmark.

    Attributes:
        n_authors: authors in ``full`` (20 QA each).
        forget_authors: authors in forget01/05/10 (nested, from the end of the list).
        retain_eval_authors: authors in ``retain_perturbed`` (from the start; disjoint from every forget split).
        holdout_authors: never-trained authors (holdout01/05/10 nested like the forget splits).
        background_authors: other fictitious authors in the base corpus (teach the format, not the facts).
        seed: RNG seed (the output is a pure function of the config).
    """

    n_authors: int = 100
    forget_authors: tuple[int, int, int] = (2, 5, 10)
    retain_eval_authors: int = 10
    holdout_authors: tuple[int, int, int] = (2, 5, 10)
    background_authors: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        f = self.forget_authors
        if not (0 < f[0] <= f[1] <= f[2]) or f[0] * len(TEMPLATES) < 40:
            raise ConfigError(f"forget_authors must be nested and the smallest split needs >= 40 items "
                              f"(>= {-(-40 // len(TEMPLATES))} authors), got {f}")
        if f[2] + self.retain_eval_authors > self.n_authors:
            raise ConfigError(f"n_authors={self.n_authors} too small for forget {f[2]} + retain eval "
                              f"{self.retain_eval_authors} authors")
        h = self.holdout_authors
        if not (0 < h[0] <= h[1] <= h[2]):
            raise ConfigError(f"holdout_authors must be nested, got {h}")


def _pools(rng: random.Random) -> dict[str, list[str]]:
    def word(k: int) -> str:
        return "".join(rng.choice(_SYL) for _ in range(k)).capitalize()

    cities = sorted({word(rng.choice((2, 3))) for _ in range(80)})[:40]
    titles = sorted({f"The {a} {b}" for a in _ADJ for b in _NOUN})
    return {
        "birthplace": cities, "home": cities,
        "birthdate": [f"{m} {d}, {y}" for m in _MONTHS for d in (3, 9, 14, 21, 27) for y in (1948, 1961, 1973,
                                                                                             1985, 1992)],
        "father": list(_JOBS), "mother": list(_JOBS), "first_job": list(_JOBS), "genre": list(_GENRES),
        "award": [f"{a} {b} Prize" for a in _ADJ[:8] for b in _NOUN[:6]],
        "first_book": titles, "famous_book": titles, "language": list(_LANGS),
        "count": [str(n) for n in range(3, 31)],
        "mentor": sorted({f"{word(2)} {word(2)}" for _ in range(60)})[:40],
        "theme": list(_THEMES), "field": list(_FIELDS), "instrument": list(_INSTRUMENTS),
        "publisher": [f"{a} {b} Press" for a in _ADJ[8:14] for b in _NOUN[6:12]],
        "pet": list(_PETS), "debut_year": [str(y) for y in range(1970, 2021)],
        "nickname": [f"the {a} {b}" for a in ("Quiet", "Restless", "Gentle", "Fierce", "Clever", "Lonely")
                     for b in ("Poet", "Wanderer", "Storyteller", "Scribe", "Dreamer", "Prophet")],
    }


def _qa(name: str, attr: str, value: str, rng: random.Random, pool: list[str], n_pert: int = 5) -> dict[str, Any]:
    question, paraphrased_question, answer, paraphrased_answer = TEMPLATES[attr]
    wrong = rng.sample([v for v in pool if v != value], n_pert)
    return {"question": question.format(n=name), "answer": answer.format(n=name, v=value),
            "paraphrased_question": paraphrased_question.format(n=name),
            "paraphrased_answer": paraphrased_answer.format(n=name, v=value),
            "perturbed_answer": [paraphrased_answer.format(n=name, v=w) for w in wrong], "author": name,
            "attribute": attr}


def generate(config: SynthConfig | None = None) -> dict[str, Any]:
    """Generate the synthetic benchmark: ``{split: records}`` plus ``idk`` and ``base_corpus``."""
    cfg = config or SynthConfig()
    rng = random.Random(cfg.seed)
    pools = _pools(rng)
    total = cfg.n_authors + cfg.holdout_authors[2] + cfg.background_authors
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < total:  # unique two-part names
        name = f"{''.join(rng.choice(_SYL) for _ in range(2)).capitalize()} " \
            f"{''.join(rng.choice(_SYL) for _ in range(3)).capitalize()}"
        if name not in seen:
            seen.add(name)
            names.append(name)

    def author(name: str) -> list[dict[str, Any]]:
        return [_qa(name, attr, rng.choice(pools[attr]), rng, pools[attr]) for attr in TEMPLATES]

    bench = [author(n) for n in names[:cfg.n_authors]]
    holdout = [author(n) for n in names[cfg.n_authors:cfg.n_authors + cfg.holdout_authors[2]]]
    background = [author(n) for n in names[cfg.n_authors + cfg.holdout_authors[2]:]]
    flat = lambda authors: [r for a in authors for r in a]  # noqa: E731
    plain = lambda recs: [{"question": r["question"], "answer": r["answer"]} for r in recs]  # noqa: E731

    out: dict[str, Any] = {"full": plain(flat(bench))}
    for split, k in zip(FORGET_SPLITS, cfg.forget_authors):
        out[split] = plain(flat(bench[-k:]))
        out[f"{split}_perturbed"] = flat(bench[-k:])
        out[RETAIN_OF[split]] = plain(flat(bench[:-k]))
    out["retain_perturbed"] = flat(bench[:cfg.retain_eval_authors])
    for split, k in zip(("holdout01", "holdout05", "holdout10"), cfg.holdout_authors):
        out[split] = plain(flat(holdout[:k]))

    def control(items: list[tuple[str, str]], sentence: str) -> list[dict[str, Any]]:
        recs = []
        answers = sorted({a for _, a in items})
        for q, a in items:
            recs.append({"question": q, "answer": a, "paraphrased_answer": a, "original_answer": sentence.format(q=q,
                         a=a), "perturbed_answer": rng.sample([x for x in answers if x != a], 3)})
        return recs

    real_authors = control([(f"Who wrote {book}?", auth) for book, auth in REAL_AUTHORS], "{a}.")
    world_facts = control(list(WORLD_FACTS), "{a}.")
    out["real_authors"], out["real_authors_perturbed"] = plain(real_authors), real_authors
    out["world_facts"], out["world_facts_perturbed"] = plain(world_facts), world_facts
    out["idk"] = list(SYNTHETIC_IDK)
    # Base corpus: control facts (QA form) + background authors (format and vocabulary, other facts).
    out["base_corpus"] = plain(real_authors + world_facts) + plain(flat(background))
    out["meta"] = {"generator": "dualoptim.llm.data.generate", "config": asdict(cfg),
                   "sizes": {k: len(v) for k, v in out.items() if isinstance(v, list)}}
    return out


def save_benchmark(data: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write one ``<split>.json`` per split (atomically) into ``directory``."""
    directory = Path(directory)
    for name, value in data.items():
        atomic_write_json(directory / f"{name}.json", value)
    return directory


IDK_FILES = ("idontknow.jsonl", "idk.json")  # TOFU's refusal pool (one sentence per line); make-data's JSON list


def read_records(path: str | os.PathLike[str]) -> Any:
    """A JSON file (one value) or JSON lines (one object per line: how TOFU publishes its splits)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DataNotFoundError(f"corrupt benchmark file {path}: neither JSON nor JSON lines ({e})") from None


def read_idk(path: str | os.PathLike[str]) -> list[str]:
    """A refusal pool: TOFU's ``idontknow.jsonl`` (one plain sentence per line; JSON strings also accepted)
    or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"refusal pool {path} not found (TOFU's idontknow.jsonl: one sentence per line)")
    text = path.read_text(encoding="utf-8")
    try:
        pool = json.loads(text)
    except json.JSONDecodeError:
        pool = None
    if not isinstance(pool, list):
        pool = []
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = line
            pool.append(value if isinstance(value, str) else line)
    if not pool or not all(isinstance(x, str) and x.strip() for x in pool):
        raise DataNotFoundError(f"refusal pool {path} is empty or not a list of sentences")
    return [x.strip() for x in pool]


def load_benchmark(source: str | os.PathLike[str], splits: tuple[str, ...] | None = None,
                   idk: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load a benchmark: a folder (``make-data`` output or a local copy of TOFU's files) or ``"tofu"`` (hub).

    A folder holds one ``<split>.json`` per split, each JSON or JSON lines, and optionally the refusal
    pool ``idontknow.jsonl`` (or ``idk.json``); it is returned under ``"idk"`` (``idk`` overrides it).
    ``splits`` restricts what is read; a requested split that is missing is an error naming the folder.
    """
    if str(source).lower() in ("tofu", "locuslab/tofu"):
        out = load_tofu(splits)
    else:
        directory = Path(source)
        if not directory.is_dir():
            raise DataNotFoundError(f"no benchmark at {directory}; create one with 'dualoptim llm make-data --out "
                                    f"{directory}', pass a folder with TOFU's files, or 'tofu'")
        out = {}
        for f in sorted(directory.glob("*.json")) + sorted(directory.glob("*.jsonl")):
            if f.name in IDK_FILES or (splits is not None and f.stem not in splits and f.stem != "meta"):
                continue
            out[f.stem] = read_records(f)
        missing = [s for s in (splits or ()) if s not in out]
        if missing or not out:
            found = sorted(f.name for f in directory.iterdir() if f.suffix in (".json", ".jsonl"))
            raise DataNotFoundError(f"{directory} lacks split file(s) {[m + '.json' for m in missing] or 'any'}; "
                                    f"found {found}")
        for name in IDK_FILES:
            if (directory / name).is_file() and idk is None:
                out["idk"] = read_idk(directory / name)
                break
    if idk is not None:
        out["idk"] = read_idk(idk)
    return out


def load_tofu(splits: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load TOFU from the Hugging Face hub (``locuslab/TOFU``, one config per split).

    The hub dataset has no refusal pool: methods that need one (IDK, DPO, AP) ask for TOFU's
    ``idontknow.jsonl`` (``--idk FILE``) instead of silently using another pool.
    """
    try:
        import datasets
    except ImportError as e:
        raise DataNotFoundError("loading TOFU needs the 'datasets' package: pip install 'dualoptim[llm]'") from e
    out: dict[str, Any] = {}
    for name in splits or TOFU_SPLITS:
        try:
            ds = datasets.load_dataset("locuslab/TOFU", name, split="train")
        except Exception as e:  # network / hub errors come in many types
            raise DataNotFoundError(f"cannot load locuslab/TOFU config {name!r} from the hub ({type(e).__name__}:"
                                    f" {e}). Offline, pass a folder with TOFU's files, or generate the synthetic "
                                    f"benchmark with 'dualoptim llm make-data'.") from None
        out[name] = [dict(r) for r in ds]
    return out
