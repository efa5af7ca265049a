import json

import pytest

from coldstart.arith import generate_arith
from coldstart.config import load_config
from coldstart.data import gsm8k_answer, load_samples
from coldstart.errors import ColdstartError


def arith_cfg(**overrides):
    return load_config(None, [f"data.arith.{k}={v}" for k, v in overrides.items()]).data


def test_arith_is_deterministic_per_seed_and_differs_across_seeds():
    cfg = arith_cfg(num_train=50)
    a, _ = load_samples(cfg, "train", seed=1)
    b, _ = load_samples(cfg, "train", seed=1)
    c, _ = load_samples(cfg, "train", seed=2)
    assert a.to_list() == b.to_list()
    assert a["prompt"] != c["prompt"]


def test_arith_held_out_split_never_shares_a_problem_with_train():
    cfg = arith_cfg(num_train=600, num_test=150, max_steps=2)
    train, _ = load_samples(cfg, "train", seed=0)
    test, _ = load_samples(cfg, "test", seed=0)

    def problem(prompt):  # the numbers and operations, without the names and items
        text = prompt[0]["content"]
        return tuple(w for w in text.replace(".", " ").split() if w.isdigit() or w in ("more", "away", "times"))

    assert not {problem(p) for p in train["prompt"]} & {problem(p) for p in test["prompt"]}
    assert len(set(train["id"])) == 600 and len(set(test["id"])) == 150


def test_arith_answers_and_styles():
    cfg = arith_cfg(num_train=400, wrong_fraction=0.25)
    rows = generate_arith(cfg.arith, "train", 400, seed=3)
    styles = {r["style"] for r in rows}
    assert styles == {"concise", "verbose", "notation", "answer_only", "wrong"}
    for r in rows:
        text = r["completion"][0]["content"]
        boxed = text[text.rindex("\\boxed{") + 7 : text.rindex("}")]
        if r["style"] == "wrong":
            assert boxed != r["answer"]  # a wrong demonstration, but the gold answer stays right
        else:
            assert boxed == r["answer"]
        if r["style"] == "concise":  # every written step is true arithmetic
            for line in text.splitlines()[:-1]:
                lhs, rhs = line.split(" = ")
                assert eval(lhs) == int(rhs)
    share = sum(r["style"] == "wrong" for r in rows) / len(rows)
    assert 0.15 < share < 0.35


def test_gsm8k_shipped_copy_parses_answers():
    cfg = load_config(None, ["data.source=gsm8k", "data.max_test_samples=20"]).data
    test, stats = load_samples(cfg, "test", seed=0)
    assert stats.kept == 20 and test[0]["answer"] == "18"
    assert test[0]["completion"][0]["content"].endswith("\\boxed{18}.")
    assert "<<" not in "".join(c[0]["content"] for c in test["completion"])
    assert gsm8k_answer("so 1,000 in all\n#### 1,000") == "1000"


GOOD = {"prompt": "What is 2+2?", "completion": "4, so \\boxed{4}", "answer": "4"}


@pytest.mark.parametrize(
    "bad_line, field, problem",
    [
        ('{"prompt": "x", "completion": ', "<line>", "invalid JSON"),
        (json.dumps({"prompt": "x", "answer": "1"}), "completion", "missing field"),
        (json.dumps({"prompt": "x", "completion": "  \n ", "answer": "1"}), "completion", "empty completion"),
        (json.dumps({"prompt": "x", "completion": 7, "answer": "1"}), "completion", "expected text, got int"),
        (json.dumps({"prompt": "x", "completion": "y"}), "answer", "missing field"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "answer": "1"}), "messages", "last message"),
        (json.dumps([1, 2]), "<row>", "expected a JSON object"),
        (json.dumps({**GOOD, "answer": "}{"}), "answer", "math-verify cannot parse '}{'"),
        (json.dumps({"messages": [{"role": "human", "content": "x"}, {"role": "assistant", "content": "1"}], "answer": "1"}),
         "messages[0].role", "'human' is not one of system, user, assistant"),
        (json.dumps({**GOOD, "id": "a"}), "id", "duplicate id 'a'"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, bad_line, field, problem):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({**GOOD, "id": "a"}), "", json.dumps({**GOOD, "id": "b"}), bad_line]
    path.write_text("\n".join(lines) + "\n")
    cfg = load_config(None, [f"data.source={path}"]).data
    with pytest.raises(ColdstartError) as e:
        load_samples(cfg, "train", seed=0)
    assert str(e.value).startswith(f"{path}:4: field '{field}': ")  # the blank line 2 still counts
    assert problem in str(e.value)

    cfg.on_bad_row = "skip"
    kept, stats = load_samples(cfg, "train", seed=0)
    assert len(kept) == 2 and stats.skipped == 1 and stats.skipped_examples[0].startswith(f"{path}:4:")


def test_non_utf8_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(ColdstartError, match=rf"{path}:2: field '<line>': not UTF-8"):
        load_samples(load_config(None, [f"data.source={path}"]).data, "train", seed=0)


def test_local_formats_become_the_same_samples(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a \\boxed{1}"}], "answer": 1},
        {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "b"}], "answer": "2"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds, _ = load_samples(load_config(None, [f"data.source={path}"]).data, "train", seed=0)
    assert ds[0]["prompt"] == [{"role": "user", "content": "q"}]
    assert ds[0]["completion"] == [{"role": "assistant", "content": "a \\boxed{1}"}]
    assert ds["answer"] == ["1", "2"] and ds["id"] == ["data-train-000000", "data-train-000001"]
    with pytest.raises(ColdstartError, match="is one file, used as the train split"):
        load_samples(load_config(None, [f"data.source={path}"]).data, "test", seed=0)


def test_gold_answers_from_the_last_box_of_each_demonstration(tmp_path):
    """NuminaMath-CoT's rows (source, problem, solution, messages) carry no answer: `data.gold: boxed` reads the
    demonstration's last box (braces balanced; boxes in one list, as `\\boxed{2} and \\boxed{3}`, read as one
    answer, the way math-verify reads a completion); a demonstration without one is a bad row, named."""
    rows = [{"source": "olympiads", "problem": "p", "solution": "s",
             "messages": [{"role": "user", "content": "p"},
                          {"role": "assistant", "content": "First \\boxed{2} for the sum. So $x = \\boxed{\\frac{1}{2}}$."}]},
            {"messages": [{"role": "user", "content": "r"}, {"role": "assistant", "content": "\\boxed{2} and \\boxed{3}"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no box"}]}]
    path = tmp_path / "numina.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"data.source={path}", "data.gold=boxed"]).data
    with pytest.raises(ColdstartError, match=rf"{path}:3: field 'completion': no closed \\boxed{{}} answer"):
        load_samples(cfg, "train", seed=0)
    ds, stats = load_samples(load_config(None, [f"data.source={path}", "data.gold=boxed", "data.on_bad_row=skip"]).data,
                             "train", seed=0)
    assert ds["answer"] == ["\\frac{1}{2}", "2,3"] and stats.skipped == 1
    with pytest.raises(ColdstartError, match="field 'answer': missing field"):  # the default reads the answer field
        load_samples(load_config(None, [f"data.source={path}"]).data, "train", seed=0)
