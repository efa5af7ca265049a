"""Data: every source becomes a `datasets.Dataset` of TRL prompt/completion samples with a gold `answer`.

Sources: the built-in `arith` generator, the shipped `gsm8k` copy, local JSONL/Parquet files and Hub datasets.
Rows may come as `messages`, as `prompt`/`completion` (conversational or plain text), or GSM8K-style
`question`/`answer` with a `#### N` final answer. Every sample gets `id`, `prompt`, `completion`, `answer`,
`style` and `source`. A malformed row (a missing field, a message role other than system, user or assistant, a gold
answer math-verify cannot parse) stops the load with one line naming the file, the line and the field, or is
skipped and counted when `on_bad_row: skip`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from coldstart.arith import BOXED_INSTRUCTION, generate_arith
from coldstart.config import DataSection
from coldstart.errors import ColdstartError
from coldstart.grading import boxed_answer, parse_gold

GSM8K_DIR = Path(__file__).resolve().parents[1] / "data" / "gsm8k"
# the roles every chat template renders; another role is dropped or mis-rendered by some templates, silently
ROLES = ("system", "user", "assistant")


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
        role = _text(message["role"], f"{name}[{i}].role")
        if role not in ROLES:
            raise BadRow(f"{name}[{i}].role", f"{role!r} is not one of {', '.join(ROLES)}")
        out.append({"role": role, "content": _text(message["content"], f"{name}[{i}].content")})
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


def normalize_row(row: Any, index: int, source: str, split: str, gold: str = "answer") -> dict[str, Any]:
    """One raw row as a sample, its gold answer from the `answer` field or (`gold="boxed"`) the demonstration's last
    `\\boxed{}`; raises BadRow naming the field at fault."""
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
    if gold == "boxed":
        boxed = boxed_answer(completion_text)
        if boxed is None:
            raise BadRow("completion", "no closed \\boxed{} answer in the demonstration (data.gold: boxed)")
        row = {**row, "answer": boxed}
    if "answer" not in row or row["answer"] is None:
        raise BadRow("answer", "missing field (rewards, rewriting and evaluation check answers against it)")
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise BadRow("answer", f"expected text or a number, got {type(answer).__name__}")
    if not str(answer).strip():
        raise BadRow("answer", "empty answer")
    try:
        parse_gold(str(answer).strip())
    except ColdstartError:
        raise BadRow("answer", f"math-verify cannot parse {str(answer).strip()!r} (rewards, rewriting and evaluation "
                               "could never grade it)") from None
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
                sample = normalize_row(row, index, source, split, cfg.gold)
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
    return datasets.Dataset.from_list(with_system_prompt(samples, cfg)), stats


def with_system_prompt(samples: list[dict[str, Any]], cfg: DataSection) -> list[dict[str, Any]]:
    """`data.system_prompt` put before every conversational prompt (the samples as they are without one)."""
    if cfg.system_prompt:
        for sample in samples:
            if isinstance(sample["prompt"], list):
                sample["prompt"] = [{"role": "system", "content": cfg.system_prompt}] + sample["prompt"]
    return samples


def rl_prompts(cfg: DataSection, num_prompts: int, seed: int):
    """The prompts (with gold answers) GRPO trains on, and the training split's LoadStats (`rl_pool`)."""
    train, stats = load_samples(cfg, "train", seed)
    return rl_pool(train, cfg, num_prompts, seed), stats


def rl_pool(train, cfg: DataSection, num_prompts: int, seed: int):
    """The loaded training split, shuffled by `seed` (or `cfg.seed`), the first `num_prompts` of it (0 = all)."""
    train = train.shuffle(seed=seed if cfg.seed is None else cfg.seed)
    if num_prompts:
        train = train.select(range(min(num_prompts, len(train))))
    return train
