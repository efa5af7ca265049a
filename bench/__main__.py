"""`make bench`: every benchmark in its own process, one after the other on the same machine, then the ratios.

Prints a table (metric, value, target) and writes `bench/results.json`: a flat mapping of metric name to value,
with the machine and the library versions. Workers' logs go to `bench/logs/`. The end-to-end figures come from
the demo's manifest when the demo ran with the current code, else from a fresh quickstart run (+10-15 minutes).

    python -m bench                      # everything: ~40 minutes on 2 CPU cores after `make demo`
    python -m bench --only warmup,scoring   # re-measures these groups; the other figures in results.json stay
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULT_PREFIX
from coldstart.runs import versions

HERE = Path(__file__).parent
# metric -> (direction, bound): the targets on a 2-core CPU
TARGETS = {
    "warmup_over_plain_loop_step_time": ("<=", 1.15),
    "cadft_over_sft_step_time": ("<=", 1.03),
    "cadft_over_sft_peak_mem": ("<=", 1.02),
    "scoring_speedup": (">=", 2.0),
    "generation_speedup": (">=", 4.0),
    **{f"{bf16}generation_{p}_of_bare_forward": (">=", 0.8) for p in ("eval", "handoff", "rewriting", "grpo")
       for bf16 in ("", "bf16_")},
    "grpo_logits_over_fused_step_time": ("<=", 1.0),
    "quickstart_seconds": ("<=", 600.0),
}


def worker(module: str, *args: str) -> dict:
    """Run `python -m bench.<module> args` and return its result line; its output goes to bench/logs/."""
    logs = HERE / "logs"
    logs.mkdir(exist_ok=True)
    name = "_".join([module, *(a.lstrip("-") for a in args)])
    print(f"  {name} ...", end="", flush=True)
    start = time.perf_counter()
    with (logs / f"{name}.log").open("w") as log:
        proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], stdout=subprocess.PIPE, stderr=log,
                              text=True)
    print(f" {time.perf_counter() - start:.0f} s", flush=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        raise SystemExit(f"bench.{module} {' '.join(args)} failed (exit {proc.returncode}); see {logs / name}.log")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def warmup() -> dict[str, float]:
    runs = {v: worker("warmup_step", "--variant", v) for v in ("plain", "sft", "dft", "cadft", "asft", "naive")}
    step = {v: r["step_s"] for v, r in runs.items()}
    mem = {v: r["peak_rss_mb"] for v, r in runs.items()}
    return {
        "warmup_over_plain_loop_step_time": step["sft"] / step["plain"],
        "cadft_over_sft_step_time": step["cadft"] / step["sft"],
        "dft_over_sft_step_time": step["dft"] / step["sft"],
        "naive_over_cadft_step_time": step["naive"] / step["cadft"],
        "asft_over_dft_step_time": step["asft"] / step["dft"],
        "cadft_over_sft_peak_mem": mem["cadft"] / mem["sft"],
        "naive_over_cadft_peak_mem": mem["naive"] / mem["cadft"],
        "asft_over_dft_peak_mem": mem["asft"] / mem["dft"],
        **{f"warmup_step_s_{v}": s for v, s in step.items()},
        **{f"warmup_peak_mem_mb_{v}": m for v, m in mem.items()},
    }


def scoring() -> dict[str, float]:
    ours, naive = worker("scoring", "--scorer", "coldstart"), worker("scoring", "--scorer", "naive")
    return {
        "scoring_speedup": ours["samples_per_s"] / naive["samples_per_s"],
        "scoring_mem_ratio": naive["peak_rss_mb"] / ours["peak_rss_mb"],
        "scoring_samples_per_s": ours["samples_per_s"],
        "scoring_naive_samples_per_s": naive["samples_per_s"],
        "scoring_max_nll_difference": max(abs(a - b) for a, b in zip(ours["nll"], naive["nll"])),
    }


def generation() -> dict[str, float]:
    r = worker("generation")
    return {"generation_speedup": r["speedup"], "generation_batched_tokens_per_s": r["batched_tokens_per_s"],
            "generation_single_tokens_per_s": r["single_tokens_per_s"]}


def decode() -> dict[str, float]:
    """Each path against its own precision's bounds: fp32 as before, bf16 (weights in bf16) prefixed."""
    return {**worker("decode"), **{f"bf16_{k}": v for k, v in worker("decode", "--precision", "bf16").items()}}


def options() -> dict[str, float]:
    return {f"options_{k}": v for k, v in worker("decode_options").items()}


def precision() -> dict[str, float]:
    return {f"precision_{k}": v for k, v in worker("precision").items()}


def grpo() -> dict[str, float]:
    runs = {v: worker("grpo_step", "--logprobs", v) for v in ("fused", "logits")}
    # generation is the same work in both and untouched by the option, but the two runs are minutes apart: the
    # step less its generation compares only what the option changes
    update = {v: r["step_s"] - r["generation_s_per_step"] for v, r in runs.items()}
    return {"grpo_logits_over_fused_step_time": runs["logits"]["step_s"] / runs["fused"]["step_s"],
            "grpo_logits_over_fused_update_time": update["logits"] / update["fused"],
            **{f"grpo_{v}_{key}": value for v, r in runs.items() for key, value in r.items()}}


def compiled() -> dict[str, float]:
    """torch.compile (Trainer's `torch_compile`) for the warm-up step and the GRPO update, against the same without:
    the steady step's ratio, and how many steps the compile takes to pay back: its extra time over the run (the
    compiled run's total less the plain one's, plus the saving its steady steps made) over the saving per step;
    None where a compiled step saves nothing. The quickstart has 16 warm-up steps and 20 GRPO updates."""
    out = {}
    plain, fast = worker("warmup_step", "--variant", "cadft"), worker("warmup_step", "--variant", "cadft", "--compile")
    saving = plain["step_s"] - fast["step_s"]
    extra = sum(fast["step_times"]) - sum(plain["step_times"]) + saving * len(fast["step_times"])
    out["compile_warmup_step_ratio"] = fast["step_s"] / plain["step_s"]
    out["compile_warmup_payback_steps"] = extra / saving if saving > 0 else None
    plain, fast = (worker("grpo_step", "--logprobs", "logits", *extra_args) for extra_args in ((), ("--compile",)))
    saving = plain["update_s"] - fast["update_s"]
    extra = fast["total_s"] - plain["total_s"] + saving * fast["updates"]
    out["compile_grpo_update_ratio"] = fast["update_s"] / plain["update_s"]
    out["compile_grpo_round_ratio"] = fast["total_s"] / plain["total_s"]
    out["compile_grpo_payback_updates"] = extra / saving if saving > 0 else None
    return out


def quickstart(fresh: bool) -> dict[str, float]:
    r = worker("quickstart", *(["--fresh"] if fresh else []))
    return {"quickstart_seconds": sum(r["stages"].values()), **{f"quickstart_{k}_seconds": v for k, v in r["stages"].items()},
            "quickstart_run": r["run"]}


GROUPS = {"warmup": warmup, "scoring": scoring, "generation": generation, "decode": decode, "options": options,
          "precision": precision, "grpo": grpo, "compile": compiled, "quickstart": quickstart}


def machine() -> dict[str, str]:
    import torch

    from coldstart.precision import cpu_name

    return {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        **versions(),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(results: dict) -> str:
    rows = ["| metric | value | target |", "|---|---|---|"]
    for key, value in results.items():
        if not isinstance(value, float):
            continue
        target = ""
        if key in TARGETS:
            op, bound = TARGETS[key]
            met = value <= bound if op == "<=" else value >= bound
            target = f"{op} {bound:g} {'met' if met else 'MISSED'}"
        rows.append(f"| {key} | {value:.3g} | {target} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups among {', '.join(GROUPS)}")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--fresh-quickstart", action="store_true",
                        help="run the quickstart anew even when the demo's run (runs/quickstart) is current")
    args = parser.parse_args()
    chosen = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(chosen) - set(GROUPS))
    if unknown:
        parser.error(f"--only: unknown group {unknown[0]!r}; groups are {', '.join(GROUPS)}")
    start = time.perf_counter()
    out = Path(args.out)
    # a partial run replaces its groups' figures and keeps the others (each ratio is still measured side by side)
    results: dict = json.loads(out.read_text()) if len(chosen) < len(GROUPS) and out.is_file() else {}
    for group in chosen:
        print(f"{group}:", flush=True)
        run = (lambda: quickstart(args.fresh_quickstart)) if group == "quickstart" else GROUPS[group]
        results.update(run())
    if len(chosen) < len(GROUPS):  # the machine of the full run stays; a partial run's goes beside it
        results.setdefault("partial_runs", {})[",".join(chosen)] = {
            "bench_seconds": time.perf_counter() - start, **machine()
        }
    else:
        results["bench_seconds"] = time.perf_counter() - start
        results.update(machine())
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
