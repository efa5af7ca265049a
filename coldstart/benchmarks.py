"""Evaluation sets by name: one registry entry per set, with where its rows come from and how a row becomes a prompt
and a gold answer. `eval.benchmarks` and `coldstart eval --benchmark` read it.

The paper's five math benchmarks (avg@16 in the CADFT and DFT papers): the problem is the user turn after
`eval.benchmark_prompt` (Qwen2.5-Math's chain-of-thought system prompt), the gold answer a LaTeX string that
math-verify parses. Their rows are read from the first place that has them: `eval.benchmark_dir/<name>/test.jsonl`
(the layout public math-evaluation repositories use), the project's own copy (`data/<name>/`, where the licence
allows shipping it), else the Hub dataset, pinned to a revision where a full commit id is public (not for
minerva_math and amc23: their `main`).

- `math500`: MATH's 500-problem test subset (PRM800K); shipped, MIT. Gold: `answer`.
- `minerva_math`: Minerva's 272 OCW course problems; CC BY-NC-SA 4.0, not shipped. Gold: the last `\\boxed{}` of
  the reference solution.
- `olympiadbench`: OlympiadBench's 675 English open-ended competition problems (text only); shipped, Apache-2.0.
  Gold: `final_answer`, a list of LaTeX strings joined (several answers make a set math-verify compares as one).
- `aime24`, `amc23`: AIME 2024 (30) and AMC 12 2023 (40); problems by the MAA with no licence stated, not shipped.
  AMC's gold is a float (27.0), read as the integer it is.

Two more sets for the built-in arithmetic:
- `arith-ood`: the built-in generator outside its training distribution (`coldstart.arith.generate_arith_ood`).
- `svamp`: SVAMP's 1,000 elementary word problems (one or two operations), human-written (`data/svamp/`, MIT).

Any other name is a data source as `data.source` reads it (arith, gsm8k, a folder or Hub id: its test split; a file:
the file).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from coldstart.arith import BOXED_INSTRUCTION, generate_arith_ood
from coldstart.config import Config
from coldstart.errors import ColdstartError
from coldstart.grading import boxed_answer
from coldstart.runs import read_jsonl

logger = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[1] / "data"
SVAMP = DATA / "svamp" / "test.jsonl"


@dataclass(frozen=True)
class HubSource:
    """Where `datasets.load_dataset` finds a benchmark: id, config, split and the revision it is pinned to."""

    id: str
    split: str
    revision: str
    config: str | None = None


@dataclass(frozen=True)
class Problem:
    """One benchmark row as the evaluation reads it."""

    id: str
    problem: str
    answer: str
    solution: str | None  # the reference solution, where the benchmark has one
    style: str


@dataclass(frozen=True)
class MathBenchmark:
    """A named math benchmark: its rows (`row` maps one, local or Hub, to a Problem), licence and sources."""

    name: str
    licence: str
    shipped: bool
    hub: HubSource
    row: Callable[[dict[str, Any], int], Problem]

    def read(self, benchmark_dir: str = "") -> list[Problem]:
        """Every problem, from `benchmark_dir/<name>/test.jsonl`, the project's copy or the pinned Hub dataset."""
        for folder in ([Path(benchmark_dir)] if benchmark_dir else []) + ([DATA] if self.shipped else []):
            path = folder / self.name / "test.jsonl"
            if path.is_file():
                return [self._parse(row, i, f"{path}:{i + 1}") for i, row in enumerate(read_jsonl(path))]
        return self._from_hub()

    def _from_hub(self) -> list[Problem]:
        import datasets

        hub = self.hub
        try:
            data = datasets.load_dataset(hub.id, hub.config, split=hub.split, revision=hub.revision)
        except Exception as e:  # offline, or the Hub refused: say where else the rows can come from
            raise ColdstartError(
                f"benchmark {self.name!r}: not shipped with the project ({self.licence}) and loading {hub.id} "
                f"(revision {hub.revision}) from the Hub failed ({e.__class__.__name__}); set eval.benchmark_dir to "
                f"a folder holding {self.name}/test.jsonl"
            ) from None
        return [self._parse(row, i, f"{hub.id} row {i}") for i, row in enumerate(data)]

    def _parse(self, row: dict[str, Any], index: int, where: str) -> Problem:
        try:
            return self.row(row, index)
        except (KeyError, TypeError, ValueError) as e:
            field = e.args[0] if e.args else type(e).__name__
            raise ColdstartError(f"{where}: benchmark {self.name!r}: field {field!r} missing or unreadable") from None


def _first(row: dict[str, Any], *names: str) -> Any:
    """The first of `names` the row has: the local files and the Hub copies name some columns differently."""
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise KeyError(names[0])


def _strip_dollars(text: str) -> str:
    return text.strip().strip("$").strip()


def _number(value: Any) -> str:
    """A numeric gold answer as text: 27.0 as '27'."""
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def _math500(row, index):
    return Problem(str(row.get("unique_id", index)), row["problem"], str(row["answer"]).strip(), row["solution"],
                   str(row.get("subject", "math500")))


def _minerva(row, index):
    solution = row.get("solution")  # the evaluation repositories' files; the Hub copy has the gold `answer` alone
    gold = boxed_answer(solution) if solution else str(row["answer"]).strip()
    if gold is None:
        raise ValueError("solution")
    return Problem(str(row.get("idx", index)), _first(row, "problem", "question"), gold, solution,
                   str(row.get("type", "minerva")))


def _olympiad(row, index):
    answers = row["final_answer"]
    if isinstance(answers, str):
        answers = [answers]
    # each element may hold several `$...$` answers separated by commas ('$69$,$84$'): one comma-separated set
    parts = [_strip_dollars(p) for a in answers for p in a.replace("$,$", "$\n$").split("\n")]
    solutions = row.get("solution") or [None]
    question = row["question"] if not row.get("context") else f"{row['context']}\n\n{row['question']}"
    return Problem(str(row.get("id", index)), question, ", ".join(parts),
                   solutions[0] if isinstance(solutions, list) else solutions, str(row.get("subfield", "olympiad")))


def _aime(row, index):
    return Problem(str(row.get("id", index)), row["problem"], str(row["answer"]).strip(), row.get("solution"), "aime")


def _amc(row, index):
    return Problem(str(row.get("id", index)), _first(row, "problem", "question"), _number(row["answer"]), None, "amc")


# Hub revisions: full commit ids where a public page shows one; minervamath and amc23 show only short ids, so their
# `main` is what loads (data/README.md)
MATH_BENCHMARKS: dict[str, MathBenchmark] = {b.name: b for b in (
    MathBenchmark("math500", "MIT", True,
                  HubSource("HuggingFaceH4/MATH-500", "test", "ff5b20257d8185524591543f8ff5993951537bb8"), _math500),
    MathBenchmark("minerva_math", "CC BY-NC-SA 4.0", False, HubSource("math-ai/minervamath", "test", "main"), _minerva),
    MathBenchmark("olympiadbench", "Apache-2.0", True,
                  HubSource("Hothan/OlympiadBench", "train", "3b426ee1d587c71b495146dde9f3e995ee7ac59f",
                            "OE_TO_maths_en_COMP"), _olympiad),
    MathBenchmark("aime24", "no licence stated (MAA problems)", False,
                  HubSource("HuggingFaceH4/aime_2024", "train", "2fe88a2f1091d5048c0f36abc874fb997b3dd99a"), _aime),
    MathBenchmark("amc23", "no licence stated (MAA problems)", False, HubSource("math-ai/amc23", "test", "main"), _amc),
)}


def math_samples(name: str, cfg: Config) -> list[dict[str, Any]]:
    """A named math benchmark's problems as evaluation samples: the system prompt, then the problem and the suffix
    as the user turn; the reference solution (else the boxed gold answer) as the completion."""
    system = [{"role": "system", "content": cfg.eval.benchmark_prompt}] if cfg.eval.benchmark_prompt else []
    suffix = cfg.eval.benchmark_suffix
    out = []
    for p in MATH_BENCHMARKS[name].read(cfg.eval.benchmark_dir):
        completion = p.solution if p.solution else f"The final answer is $\\boxed{{{p.answer}}}$."
        out.append({"id": f"{name}-{p.id}", "prompt": system + [{"role": "user", "content": p.problem + suffix}],
                    "completion": [{"role": "assistant", "content": completion}], "answer": p.answer,
                    "style": p.style, "source": name})
    return out


def svamp_rows(path: Path = SVAMP) -> list[dict[str, Any]]:
    """SVAMP's rows as prompt/completion samples: `Body` + `Question` with the boxed-answer instruction, the gold
    answer `Answer` (a float with an integer value) as an integer."""
    out = []
    for row in read_jsonl(path):
        gold = _number(row["Answer"])
        body = row["Body"].strip()
        problem = f"{body}{'' if body.endswith(('.', '?', '!')) else '.'} {row['Question'].strip()}"
        out.append({"id": f"svamp-{row['ID']}", "prompt": [{"role": "user", "content": f"{problem} {BOXED_INSTRUCTION}"}],
                    "completion": [{"role": "assistant", "content": f"The answer is \\boxed{{{gold}}}."}],
                    "answer": gold, "style": row["Type"], "source": "svamp"})
    return out


# sets in the run's own format: they get the run's system prompt (`data.system_prompt`), as its held-out split does
RUN_SETS: dict[str, Callable[[Config, int], list[dict[str, Any]]]] = {
    "arith-ood": lambda cfg, n: generate_arith_ood(cfg.data.arith, n or cfg.data.arith.num_test,
                                                   cfg.data.seed if cfg.data.seed is not None else cfg.seed),
    "svamp": lambda cfg, n: svamp_rows()[:n or None],
}

NAMES = (*MATH_BENCHMARKS, *RUN_SETS)


def load_set(cfg: Config, name: str, num_problems: int):
    """The first `num_problems` (0: all) of set `name` as a `datasets.Dataset`, saying so when that is a cut."""
    import datasets

    from coldstart.data import load_samples, with_system_prompt

    if name in RUN_SETS:
        return datasets.Dataset.from_list(with_system_prompt(RUN_SETS[name](cfg, num_problems), cfg.data))
    if name in MATH_BENCHMARKS:
        problems = datasets.Dataset.from_list(math_samples(name, cfg))
    elif name not in ("arith", "gsm8k") and "/" not in name and not Path(name).expanduser().exists():
        close = difflib.get_close_matches(name, [*NAMES, "arith", "gsm8k"], n=1)
        raise ColdstartError(
            f"eval.benchmarks: {name!r} is no named set, file, folder or Hub id"
            + (f"; did you mean {close[0]!r}?" if close else f" (named sets: {', '.join(NAMES)}, arith, gsm8k)")
        )
    else:
        one_file = Path(name).expanduser().is_file()  # a single file is the set itself: data loading calls its one split 'train'
        data = dataclasses.replace(cfg.data, source=name, test_split="train" if one_file else cfg.data.test_split)
        problems, _ = load_samples(data, "test", cfg.seed)
    return first_problems(problems, num_problems, f"problems of {name}")


def held_out(cfg: Config):
    """The held-out problems the eval stage grades: the first `eval.num_problems` of the test split (all with 0),
    saying so when cut; and the split's load statistics."""
    from coldstart.data import load_samples

    test, stats = load_samples(cfg.data, "test", cfg.seed)
    return first_problems(test, cfg.eval.num_problems, "held-out problems"), stats


def first_problems(problems, num_problems: int, what: str):
    """The first `num_problems` of a `datasets.Dataset` (all with 0), saying so when that is a cut."""
    if num_problems and num_problems < len(problems):
        logger.info("eval: the first %d of %d %s (eval.num_problems; 0 takes all)", num_problems, len(problems), what)
        problems = problems.select(range(num_problems))
    return problems
