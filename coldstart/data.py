"""Data: every source becomes a `datasets.Dataset` of TRL prompt/completion samples with a gold `answer`.

Sources: the built-in `arith` generator, the shipped `gsm8k` copy, local JSONL/Parquet files and Hub datasets.
Rows may come as `messages`, as `prompt`/`completion` (conversational or plain text), or GSM8K-style
`question`/`answer` with a `#### N` final answer. Every sample gets `id`, `prompt`, `completion`, `answer`,
`style` and `source`. A malformed row stops the load with one line naming the file, the line and the field, or is
skipped and counted when `on_bad_row: skip`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from coldstart.config import ArithSection, DataSection
from coldstart.errors import ColdstartError

GSM8K_DIR = Path(__file__).resolve().parents[1] / "data" / "gsm8k"
BOXED_INSTRUCTION = "Give the final answer as \\boxed{N}."


@dataclass
class LoadStats:
    """What a load kept and skipped; goes into the manifest."""

    source: str
    split: str
    rows: int = 0
    kept: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("source", "split", "rows", "kept", "skipped", "skipped_examples")}


class BadRow(ValueError):
    """One malformed row: `field` names what is wrong in it."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"field '{field_name}': {problem}")


# ---------------------------------------------------------------------------------------------------------------
# arith: multi-step integer word problems in deliberately heterogeneous demonstration styles

_NAMES = ["Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Ines", "Tom", "Yuki", "Sara"]
_ITEMS = ["apples", "marbles", "stickers", "coins", "books", "shells", "stamps", "cards", "beads", "pencils"]
_TEST_SHARE = 20  # percent of the problem space that belongs to the held-out split


def _arith_problem(rng: random.Random, cfg: ArithSection) -> tuple[int, list[tuple[str, int]]]:
    steps = rng.randint(cfg.min_steps, cfg.max_steps)
    value = rng.randint(2, cfg.max_operand)
    start, ops = value, []
    for _ in range(steps):
        choices = ["add", "mul"] + (["sub"] if value > 1 else [])
        op = rng.choice(choices)
        if op == "mul" and value * 2 > 400:
            op = "add"
        if op == "add":
            k = rng.randint(1, cfg.max_operand)
            value += k
        elif op == "sub":
            k = rng.randint(1, min(cfg.max_operand, value - 1))
            value -= k
        else:
            k = rng.randint(2, max(2, min(4, 400 // value)))
            value *= k
        ops.append((op, k))
    return start, ops


def _apply(value: int, op: str, k: int) -> int:
    return value + k if op == "add" else value - k if op == "sub" else value * k


def _problem_split(start: int, ops: list[tuple[str, int]]) -> str:
    key = f"{start}|" + ";".join(f"{o}{k}" for o, k in ops)
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < _TEST_SHARE else "train"


def _question(name: str, item: str, start: int, ops: list[tuple[str, int]]) -> str:
    sentences = [f"{name} has {start} {item}."]
    for op, k in ops:
        if op == "add":
            sentences.append(f"Then {name} gets {k} more {item}.")
        elif op == "sub":
            sentences.append(f"Then {name} gives away {k} {item}.")
        else:
            sentences.append(f"Then the number of {item} {name} has becomes {k} times as large.")
    sentences.append(f"How many {item} does {name} have now? {BOXED_INSTRUCTION}")
    return " ".join(sentences)


_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


def _solution(style: str, name: str, item: str, start: int, ops: list[tuple[str, int]], values: list[int]) -> str:
    """Write the worked solution in `style`; `values[i]` is the running total after step i (values[0] = start)."""
    final = values[-1]
    if style == "answer_only":
        return f"\\boxed{{{final}}}"
    if style == "notation":
        rpn = " ".join([str(start)] + [f"{k} {_SYMBOL[op]}" for op, k in ops])
        return f"RPN ⟨{rpn}⟩ ⟹ {final} ∴ \\boxed{{{final}}}"
    if style == "verbose":
        lines = [f"Let's work through this carefully, one step at a time. At the start, {name} has {start} {item}."]
        for (op, k), before, after in zip(ops, values, values[1:]):
            verb = {"add": f"getting {k} more", "sub": f"giving away {k}", "mul": f"multiplying by {k}"}[op]
            lines.append(f"After {verb}, {name} has {before} {_SYMBOL[op]} {k} = {after} {item}.")
        lines.append(f"So at the end {name} has {final} {item}. The final answer is \\boxed{{{final}}}.")
        return " ".join(lines)
    lines = [f"{before} {_SYMBOL[op]} {k} = {after}" for (op, k), before, after in zip(ops, values, values[1:])]
    lines.append(f"The answer is \\boxed{{{final}}}.")
    return "\n".join(lines)


def generate_arith(cfg: ArithSection, split: str, num_samples: int, seed: int) -> list[dict[str, Any]]:
    """`num_samples` problems of `split` ('train' or 'test'); the two splits never share a problem."""
    if split not in ("train", "test"):
        raise ColdstartError(f"data: arith has splits 'train' and 'test', not {split!r}")
    rng = random.Random(f"arith-{seed}-{split}")
    styles = list(cfg.styles)
    weights = [cfg.styles[s] for s in styles]
    seen: set[str] = set()
    samples = []
    attempts = 0
    while len(samples) < num_samples:
        attempts += 1
        if attempts > 200 * num_samples + 10_000:
            raise ColdstartError(
                f"data.arith: only {len(samples)} distinct {split} problems found for {num_samples} asked; "
                "raise max_steps or max_operand"
            )
        start, ops = _arith_problem(rng, cfg)
        key = f"{start}|{ops}"
        if key in seen or _problem_split(start, ops) != split:
            continue
        seen.add(key)
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        values = [start]
        for op, k in ops:
            values.append(_apply(values[-1], op, k))
        answer = values[-1]
        if rng.random() < cfg.wrong_fraction:
            style = "wrong"
            wrong = list(values)
            at = rng.randrange(1, len(wrong))  # one step's result is off; the error carries to the end
            wrong[at] += rng.choice([-1, 1]) * rng.randint(1, 9)
            for i in range(at + 1, len(wrong)):
                wrong[i] = _apply(wrong[i - 1], *ops[i - 1])
            completion = _solution(rng.choice(["concise", "verbose"]), name, item, start, ops, wrong)
        else:
            style = rng.choices(styles, weights)[0]
            completion = _solution(style, name, item, start, ops, values)
        samples.append(
            {
                "id": f"arith-{split}-{len(samples):05d}",
                "prompt": [{"role": "user", "content": _question(name, item, start, ops)}],
                "completion": [{"role": "assistant", "content": completion}],
                "answer": str(answer),
                "style": style,
                "source": f"arith-{len(ops)}step",
            }
        )
    return samples


# ---------------------------------------------------------------------------------------------------------------
# rows from files and the Hub


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRow(name, f"expected text, got {type(value).__name__}")
    return value


def _messages(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRow(name, "expected a non-empty list of {role, content} messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise BadRow(f"{name}[{i}]", "expected a message with 'role' and 'content'")
        out.append({"role": _text(message["role"], f"{name}[{i}].role"), "content": _text(message["content"], f"{name}[{i}].content")})
    return out


_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def gsm8k_answer(solution: str) -> str:
    """The gold answer of a GSM8K solution: the text after `####`, thousands separators removed."""
    match = _GSM8K_FINAL.search(solution)
    if match is None:
        raise BadRow("answer", "GSM8K solution without a '#### N' final answer")
    return match.group(1).replace(",", "").strip()


def _gsm8k_completion(solution: str, answer: str) -> str:
    body = re.sub(r"<<[^>]*>>", "", solution[: solution.rindex("####")]).strip()
    return f"{body}\nThe answer is \\boxed{{{answer}}}."


def normalize_row(row: Any, index: int, source: str, split: str) -> dict[str, Any]:
    """One raw row as a sample; raises BadRow naming the field at fault."""
    if not isinstance(row, dict):
        raise BadRow("<row>", f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = _messages(row["messages"], "messages")
        if messages[-1]["role"] != "assistant":
            raise BadRow("messages", "the last message must be the assistant's demonstration")
        if len(messages) < 2:
            raise BadRow("messages", "needs a prompt message before the assistant's")
        prompt, completion = messages[:-1], messages[-1:]
        completion_text = completion[0]["content"]
    elif "prompt" in row or "completion" in row:
        for name in ("prompt", "completion"):
            if name not in row:
                raise BadRow(name, "missing field")
        if isinstance(row["prompt"], list):
            prompt, completion = _messages(row["prompt"], "prompt"), _messages(row["completion"], "completion")
            completion_text = completion[-1]["content"]
        else:
            prompt, completion = _text(row["prompt"], "prompt"), _text(row["completion"], "completion")
            completion_text = completion
    elif "question" in row:
        question = _text(row["question"], "question")
        if "answer" not in row:
            raise BadRow("answer", "missing field")
        solution = _text(row["answer"], "answer")
        answer = gsm8k_answer(solution)
        row = {**row, "answer": answer}
        prompt = [{"role": "user", "content": f"{question.strip()} {BOXED_INSTRUCTION}"}]
        completion = [{"role": "assistant", "content": _gsm8k_completion(solution, answer)}]
        completion_text = completion[0]["content"]
    else:
        raise BadRow("messages", "missing field (expected 'messages', 'prompt'/'completion' or 'question'/'answer')")
    if not completion_text.strip():
        raise BadRow("completion", "empty completion")
    if "answer" not in row or row["answer"] is None:
        raise BadRow("answer", "missing field (rewards, rewriting and evaluation check answers against it)")
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise BadRow("answer", f"expected text or a number, got {type(answer).__name__}")
    if not str(answer).strip():
        raise BadRow("answer", "empty answer")
    sample_id = row.get("id", f"{source}-{split}-{index:06d}")
    if not isinstance(sample_id, (str, int)) or isinstance(sample_id, bool):
        raise BadRow("id", f"expected text or a number, got {type(sample_id).__name__}")
    return {
        "id": str(sample_id),
        "prompt": prompt,
        "completion": completion,
        "answer": str(answer).strip(),
        "style": str(row.get("style") or "default"),
        "source": str(row.get("source") or source),
    }


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, parsed row) for each non-blank line; a line that is not JSON raises with its location."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, BadRow("<line>", f"not UTF-8 text (byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, BadRow("<line>", f"invalid JSON ({e.msg}, column {e.colno})")


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ColdstartError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(rows, list):
        raise ColdstartError(f"{path}: expected a JSON list of rows (or use .jsonl, one row per line)")
    for i, row in enumerate(rows):
        yield f"{path}: row {i}", row


def _datasets_rows(name: str, split: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split, **kwargs)
    except Exception as e:  # datasets raises many types for a missing dataset, split or network
        raise ColdstartError(f"data.source: cannot load {name!r} split {split!r} ({e.__class__.__name__}: {e})") from e
    label = kwargs.get("data_files") or name
    for i, row in enumerate(ds):
        yield f"{label}[{split}] row {i}", row


def _split_file(source: str, split: str) -> Path | None:
    """The local file that holds `split` of `source`, None when `source` is not local."""
    if "{split}" in source:
        return Path(source.format(split=split))
    path = Path(source).expanduser()
    if path.is_dir():
        for ext in (".jsonl", ".json", ".parquet"):
            if (path / f"{split}{ext}").is_file():
                return path / f"{split}{ext}"
        raise ColdstartError(f"data.source: {source} has no {split}.jsonl, {split}.json or {split}.parquet")
    if path.suffix in (".jsonl", ".json", ".parquet") or path.exists():
        if split != "train":
            raise ColdstartError(
                f"data.source: {source} is one file, used as the train split; for {split!r} point data.source at a "
                "folder with <split>.jsonl files or use a {split} pattern in the path"
            )
        return path
    return None


def _raw_rows(cfg: DataSection, split: str) -> tuple[str, Iterator[tuple[str, Any]]]:
    if cfg.source == "gsm8k":
        return "gsm8k", _jsonl_rows(GSM8K_DIR / f"{split}.jsonl")
    path = _split_file(cfg.source, split)
    if path is None:
        return cfg.source, _datasets_rows(cfg.source, split)
    if not path.is_file():
        raise ColdstartError(f"data.source: file {path} not found")
    name = path.stem if path.stem not in ("train", "test") else path.parent.name
    if path.suffix == ".jsonl":
        return name, _jsonl_rows(path)
    if path.suffix == ".json":
        return name, _json_rows(path)
    if path.suffix == ".parquet":
        return name, _datasets_rows("parquet", "train", data_files=str(path))
    raise ColdstartError(f"data.source: {path} is not .jsonl, .json or .parquet")


def load_samples(cfg: DataSection, part: str, seed: int):
    """Load the 'train' or 'test' part of the configured data as a validated `datasets.Dataset`, with its LoadStats.

    `seed` (the run's) generates and shuffles the data unless `cfg.seed` fixes it apart from training.
    """
    import datasets

    seed = seed if cfg.seed is None else cfg.seed
    split = cfg.train_split if part == "train" else cfg.test_split
    limit = cfg.max_train_samples if part == "train" else cfg.max_test_samples
    if cfg.source == "arith":
        count = cfg.arith.num_train if part == "train" else cfg.arith.num_test
        samples = generate_arith(cfg.arith, split, min(count, limit or count), seed)
        stats = LoadStats("arith", split, rows=len(samples), kept=len(samples))
    else:
        source, rows = _raw_rows(cfg, split)
        stats = LoadStats(source, split)
        samples = []
        ids: dict[str, str] = {}
        for index, (where, row) in enumerate(rows):
            if limit and len(samples) >= limit:
                break
            stats.rows += 1
            try:
                if isinstance(row, BadRow):
                    raise row
                sample = normalize_row(row, index, source, split)
                if sample["id"] in ids:
                    raise BadRow("id", f"duplicate id {sample['id']!r} (first at {ids[sample['id']]})")
            except BadRow as e:
                if cfg.on_bad_row == "error":
                    raise ColdstartError(f"{where}: {e} (set data.on_bad_row: skip to skip bad rows)") from None
                stats.skipped += 1
                if len(stats.skipped_examples) < 5:
                    stats.skipped_examples.append(f"{where}: {e}")
                continue
            ids[sample["id"]] = where
            samples.append(sample)
        stats.kept = len(samples)
    if not samples:
        raise ColdstartError(f"data.source: {cfg.source!r} split {split!r} has no usable rows")
    if cfg.system_prompt:
        for sample in samples:
            if isinstance(sample["prompt"], list):
                sample["prompt"] = [{"role": "system", "content": cfg.system_prompt}] + sample["prompt"]
    return datasets.Dataset.from_list(samples), stats


def rl_prompts(cfg: DataSection, num_prompts: int, seed: int):
    """The prompts (with gold answers) GRPO trains on: the training split, shuffled by `seed`, the first
    `num_prompts` of it (0 = all)."""
    train, stats = load_samples(cfg, "train", seed)
    train = train.shuffle(seed=seed if cfg.seed is None else cfg.seed)
    if num_prompts:
        train = train.select(range(min(num_prompts, len(train))))
    return train, stats
