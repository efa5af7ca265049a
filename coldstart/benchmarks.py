"""Evaluation sets by name, beside the run's own held-out split: one entry per set, with where it comes from and
how its rows become prompts and gold answers. Used for the sets of `eval.benchmarks`.

- `arith-ood`: the built-in generator outside its training distribution (`coldstart.arith.generate_arith_ood`).
- `svamp`: SVAMP's 1,000 elementary word problems (one or two operations), human-written (`data/svamp/`, MIT).

Any other name is a data source as `data.source` reads it (a folder or Hub id: its test split; a file: the file).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from coldstart.arith import BOXED_INSTRUCTION, generate_arith_ood
from coldstart.config import Config

SVAMP = Path(__file__).resolve().parents[1] / "data" / "svamp" / "test.jsonl"


def svamp_rows(path: Path = SVAMP) -> list[dict[str, Any]]:
    """SVAMP's rows as prompt/completion samples: `Body` + `Question` with the boxed-answer instruction, the gold
    answer `Answer` (a float with an integer value) as an integer."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        answer = float(row["Answer"])
        gold = str(int(answer)) if answer.is_integer() else str(answer)
        body = row["Body"].strip()
        problem = f"{body}{'' if body.endswith(('.', '?', '!')) else '.'} {row['Question'].strip()}"
        out.append({"id": f"svamp-{row['ID']}", "prompt": [{"role": "user", "content": f"{problem} {BOXED_INSTRUCTION}"}],
                    "completion": [{"role": "assistant", "content": f"The answer is \\boxed{{{gold}}}."}],
                    "answer": gold, "style": row["Type"], "source": "svamp"})
    return out


BENCHMARKS: dict[str, Callable[[Config, int], list[dict[str, Any]]]] = {
    "arith-ood": lambda cfg, n: generate_arith_ood(cfg.data.arith, n or cfg.data.arith.num_test,
                                                   cfg.data.seed if cfg.data.seed is not None else cfg.seed),
    "svamp": lambda cfg, n: svamp_rows()[:n or None],
}


def load_set(cfg: Config, name: str, num_problems: int):
    """The first `num_problems` (0: all) of set `name` as a `datasets.Dataset`."""
    import datasets

    from coldstart.data import load_samples, with_system_prompt

    if name in BENCHMARKS:  # with the run's system prompt, as every other set gets it
        return datasets.Dataset.from_list(with_system_prompt(BENCHMARKS[name](cfg, num_problems), cfg.data))
    one_file = Path(name).is_file()  # a single file is the set itself: data loading calls its one split 'train'
    data = dataclasses.replace(cfg.data, source=name, test_split="train" if one_file else cfg.data.test_split)
    test, _ = load_samples(data, "test", cfg.seed)
    return test.select(range(min(num_problems, len(test)))) if num_problems else test
