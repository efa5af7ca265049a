"""The `coldstart` command: one sub-command per stage, `run` for the whole pipeline."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import warnings
from typing import Any, Callable

from coldstart.runtime import is_main, leave_failed
from coldstart.errors import ColdstartError

STAGE_HELP = {
    "score": "compatibility of every training demonstration under the base model",
    "warmup": "supervised warm-up (sft | dft | cadft) of the base model on the demonstrations",
    "handoff": "check and export the warmed checkpoint for RL; write the mismatch report",
    "rl": "GRPO with verifiable rewards from the handoff checkpoint",
}


def _add_config_args(parser: argparse.ArgumentParser, force_help: str) -> None:
    parser.add_argument("config", help="YAML config (see configs/quickstart.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set warmup.learning_rate=1e-5 (repeatable)",
    )
    parser.add_argument("--force", action="append", default=[], metavar="STAGE", help=force_help)


def _stage_runners() -> dict[str, Callable[..., dict[str, Any]]]:
    from coldstart.stages import evaluation, handoff, rl, score, warmup

    return {"score": score.run, "warmup": warmup.run, "handoff": handoff.run, "rl": rl.run, "eval": evaluation.run}


def _summary(run_dir, entries: dict[str, dict[str, Any]]) -> None:
    if not is_main():  # one summary, from the process that keeps the run directory
        return
    print(f"\nrun directory: {run_dir.root}")
    for stage, entry in entries.items():
        seconds = entry.get("seconds")
        took = f"{seconds:.0f} s" if seconds is not None else "-"
        print(f"  {stage:<8} {entry.get('status', '?'):<8} {took:>7}  {run_dir.stage_dir(stage)}/")
    print(f"  config   {run_dir.root / 'config.yaml'}\n  manifest {run_dir.manifest_path}")
    report = run_dir.stage_dir("eval") / "report.md"
    if "eval" in entries and report.is_file():
        print(f"\n{report.read_text()}")


def _runtime(cfg):
    """This process's runtime (and, in a launch of several processes, the process group) for the config."""
    from coldstart.runtime import Runtime

    return Runtime.start(cfg.runtime.timeout_minutes, cfg.runtime.precision)


def _preflight(cfg, stages: list[str]) -> None:
    """The checks, before any stage that trains; the first error stops the run before it starts."""
    if cfg.check.skip or not {"score", "warmup", "rl"} & set(stages):
        return
    from coldstart.models import resolve_model_path
    from coldstart.preflight import run_checks, summary

    resolve_model_path(cfg.model.name_or_path)  # the stages load weights; `coldstart check` alone needs the config
    findings = run_checks(cfg, stages=stages)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        first = errors[0]
        where = "" if first.check == "load" else f"{first.check}: "
        raise ColdstartError(f"{where}{first.message}")
    if is_main():
        for f in findings:
            if f.level in ("fixed", "warning"):
                logging.getLogger("coldstart").warning("%s: %s", f.check, f.message)
        logging.getLogger("coldstart").info("%s (coldstart check lists them; check.skip: true skips them)",
                                            summary(findings))


def _run_stages(args: argparse.Namespace, stages: list[str]) -> None:
    from coldstart.config import load_config
    from coldstart.runs import RunDir

    cfg = load_config(args.config, args.overrides)
    runtime = _runtime(cfg)
    _preflight(cfg, stages)
    run_dir = RunDir(cfg.run_dir)
    runners = _stage_runners()
    unknown = [s for s in args.force if s not in runners]
    if unknown:
        raise ColdstartError(f"--force {unknown[0]}: not a stage; stages are {', '.join(runners)}")
    entries = {}
    forced = False
    for stage in stages:
        forced = forced or stage in args.force  # a redone stage changes the inputs of every later one
        entries[stage] = runners[stage](cfg, run_dir, runtime, force=forced)
    _summary(run_dir, entries)


def _eval(args: argparse.Namespace) -> None:
    if args.model is None:
        if args.config is None:
            raise ColdstartError("eval: give a config (the run's models) or --model PATH --benchmark NAME[,NAME...]")
        return _run_stages(args, ["eval"])
    import json
    from pathlib import Path

    from coldstart.benchmarks import load_set
    from coldstart.config import load_config
    from coldstart.eval.evaluate import suite_average
    from coldstart.eval.report import benchmark_table
    from coldstart.models import resolve_model_path
    from coldstart.runs import write_jsonl
    from coldstart.stages.evaluation import evaluate_with, generator

    cfg = load_config(args.config, args.overrides)
    runtime = _runtime(cfg)
    names = [n.strip() for n in (args.benchmark or cfg.data.source).split(",") if n.strip()]
    sets = {name: load_set(cfg, name, cfg.eval.num_problems) for name in names}  # a bad name fails before the model loads
    model = resolve_model_path(args.model)
    out = Path(args.out or Path(cfg.output_dir) / "eval" / f"{Path(model).name}-{'+'.join(Path(n).stem for n in names)}")
    results: dict = {"model": model, "benchmarks": {}}
    records_by_set, lines = {}, []
    with generator(cfg, Path(model), runtime) as generate_fn:
        for name, problems in sets.items():
            records, metrics = evaluate_with(cfg, generate_fn, problems, runtime)
            results["benchmarks"][name] = metrics
            records_by_set[name] = records
            lines += [{"set": name, **r} for r in records]
    if len(names) > 1:
        results["average"] = suite_average(records_by_set)
    if not runtime.is_main:  # every process generated its share; the main one writes
        return
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "records.jsonl", lines)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = benchmark_table(results)
    (out / "report.md").write_text(table)
    print(f"{model}\n\n{table}\n-> {out}/")


def _compare(args: argparse.Namespace) -> None:
    from coldstart.config import load_config
    from coldstart.eval.compare import (
        analyse, arm_stages, compare_dir, run_matrix, run_mechanism, start_config, study_of,
    )
    from coldstart.eval.outputs import write_compare

    cfg = load_config(args.config, args.overrides)
    runtime = _runtime(cfg)
    for start in cfg.compare.starts:  # each start trains and hands over differently (the base model has no warm-up)
        try:
            _preflight(start_config(cfg, start, cfg.compare.seeds[0]), arm_stages(cfg))
        except ColdstartError as e:
            raise ColdstartError(f"compare.starts: {start}: {e}") from e
    runs = run_matrix(cfg, _stage_runners(), runtime, args.force)
    mechanism = run_mechanism(cfg, runs, runtime)
    if not runtime.is_main:  # the runs are done on every process; the main one analyses and writes
        return
    results = analyse(study_of(cfg), runs, mechanism=mechanism)
    out = compare_dir(cfg)
    write_compare(out, results, runs)
    print(f"\n{(out / 'report.md').read_text()}\ncomparison: {out}/")


def _mechanism(args: argparse.Namespace) -> None:
    from pathlib import Path

    from coldstart.config import load_config
    from coldstart.eval.mechanism import policy_name, run

    cfg = load_config(args.config, args.overrides)
    runtime = _runtime(cfg)
    model = args.model or cfg.model.name_or_path
    out = Path(args.out or Path(cfg.output_dir) / "mechanism" / policy_name(model))
    if runtime.is_main:  # one policy: measured by one process (a comparison gives each process its own policies)
        results = run(cfg, model, out, args.minibatches, runtime)
    runtime.wait()
    if not runtime.is_main:
        return
    print(f"\n{(out / 'report.md').read_text()}\nmechanism: {out}/ ({len(results['samples'])} demonstrations)")


def _rerender(path: str, regrade: bool):
    from coldstart.eval.outputs import rerender

    return rerender(path, regrade)


def _prepare_model(args: argparse.Namespace) -> None:
    from coldstart.models import EMBEDDED_HUB_ID, EMBEDDED_QUANTISATION, embedded_model_dir

    path = embedded_model_dir()
    # what the model is on stderr, so that stdout stays the path alone for scripts
    print(f"embedded model: {EMBEDDED_HUB_ID}, {EMBEDDED_QUANTISATION}", file=sys.stderr)
    print(path)


def _check(args: argparse.Namespace) -> None:
    from coldstart.config import load_config
    from coldstart.preflight import launch_from, run_checks, summary

    cfg = load_config(args.config, args.overrides)
    launch = launch_from(args.launcher, args.processes)
    print(f"check {args.config} ({launch.described})")
    findings = run_checks(cfg, launch)
    for f in findings:
        print(f"  {f.line()}")
    print(summary(findings))
    if any(f.level == "error" for f in findings):
        raise ColdstartError(f"check: {args.config} would fail; see the errors above")


def _print_config(args: argparse.Namespace) -> None:
    from coldstart.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.overrides)), end="")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks instead of one-line errors")
    parser = argparse.ArgumentParser(prog="coldstart", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, parents=[common])

    p = sub.add_parser("run", help="run every stage in order, skipping finished ones")
    _add_config_args(p, "redo this stage, and the ones after it, even if they finished")
    p.set_defaults(func=lambda a: _run_stages(a, list(_stage_runners())))

    for stage, help_text in STAGE_HELP.items():
        p = sub.add_parser(stage, help=help_text)
        _add_config_args(p, f"redo the stage even if it finished (--force {stage})")
        p.set_defaults(func=functools.partial(lambda a, stage: _run_stages(a, [stage]), stage=stage))

    p = sub.add_parser(
        "eval",
        help="evaluate the run's models on held-out problems, or any model: --model PATH --benchmark NAME",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config (optional with --model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="redo the eval stage (--force eval)")
    p.add_argument("--model", help="a model folder or Hub id to evaluate instead of the run's models")
    p.add_argument("--benchmark", default=None,
                   help="comma-separated sets: math500, minerva_math, olympiadbench, aime24, amc23, svamp, arith-ood, "
                        "or a data source (arith, gsm8k, a local file or folder, a Hub dataset id); default: the "
                        "config's data source")
    p.add_argument("--out", default=None, help="where --model results go (default: <output_dir>/eval/<model>-<benchmark>/)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("compare", help="{base, sft, dft, cadft} x {warm-up, warm-up + GRPO}, with confidence intervals")
    _add_config_args(p, "redo this stage in every start, and the stages after it")
    p.set_defaults(func=_compare)

    p = sub.add_parser("mechanism", help="would CADFT change anything here? per-sample gradient norms by compatibility "
                                         "and each loss's update noise, at a fixed policy")
    p.add_argument("config", help="YAML config: the training data, batch size and beta")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model", default=None, help="the model to measure (default: the config's base model), e.g. a "
                                                 "warm-up checkpoint folder")
    p.add_argument("--minibatches", type=int, default=8, help="minibatches of the warm-up's batch size (default 8)")
    p.add_argument("--out", default=None, help="where the results go (default: <output_dir>/mechanism/<model>/)")
    p.set_defaults(func=_mechanism)

    p = sub.add_parser("report", help="re-render the reports of a comparison or run directory from their JSON")
    p.add_argument("path", help="a run directory, or the folder holding compare/")
    p.add_argument("--regrade", action="store_true",
                   help="grade a comparison's saved completions again with the installed grader before analysing")
    p.set_defaults(func=lambda a: print("\n".join(str(x) for x in _rerender(a.path, a.regrade))))

    p = sub.add_parser("check", help="preflight: tokenizer, model config, data, batches, versions and memory, in seconds")
    p.add_argument("config", help="YAML config (see configs/quickstart.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--launcher", default=None, metavar="FILE",
                   help="the accelerate config the stages will be launched with (process count, DeepSpeed, FSDP)")
    p.add_argument("--processes", type=int, default=None, help="process count (default: the launcher's, else 1)")
    p.set_defaults(func=_check)

    p = sub.add_parser("config", help="print the resolved config, every default written out")
    p.add_argument("config", nargs="?", default=None, help="YAML config (default: the built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_print_config)

    p = sub.add_parser("prepare-model", help="convert the embedded model to a cached HF folder and print its path")
    p.set_defaults(func=_prepare_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="coldstart: %(message)s")
    # TRL's generation helper asks for a renamed transformers property at every rewriting round and RL generation
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        args.func(args)
    except ColdstartError as e:
        if getattr(args, "debug", False):
            raise
        leave_failed()
        print(f"coldstart: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        leave_failed()
        print("coldstart: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
