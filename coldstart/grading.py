"""Answer checking with math-verify, used by rewriting, rewards, the handoff report and evaluation.

The gold answer is parsed as a `\\boxed{}` answer and compared as `verify(gold, prediction)` (the order matters:
math-verify treats the first argument as the reference). A gold answer that does not parse is an error in the data,
never a free point.

Model outputs can be hostile: megabytes long, unbalanced or deeply nested LaTeX. Only the tail where the final
answer lives is read, and every check has a time limit. math-verify's own limits use SIGALRM, which works only in
the main thread; elsewhere the check runs in a worker process that is killed when it overruns.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
from functools import lru_cache

from latex2sympy2_extended.math_normalization import extract_boxed_content
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from coldstart.errors import ColdstartError

_PRED_CONFIG = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
MAX_CHARS = 4096  # the final answer is at the end; longer completions are read from their tail
DEFAULT_TIMEOUT = 5.0


@lru_cache(maxsize=65536)
def parse_gold(answer: str) -> tuple:
    """The parsed gold answer; raises ColdstartError when math-verify cannot read it. Gold answers are the data's,
    not a model's: off the main thread, where math-verify's SIGALRM limit cannot run, they are parsed without it."""
    limit = {} if threading.current_thread() is threading.main_thread() else {"parsing_timeout": None}
    parsed = parse(f"\\boxed{{{answer}}}", extraction_config=[LatexExtractionConfig()], **limit)
    if not parsed:
        parsed = parse(answer, extraction_config=[ExprExtractionConfig()], **limit)
    if not parsed:
        raise ColdstartError(f"answer {answer!r}: math-verify cannot parse this gold answer")
    return tuple(parsed)


def _seconds(timeout: float) -> int:
    return max(1, int(timeout / 2))  # SIGALRM takes whole seconds; parse and verify share the budget


def _grade(gold_answer: str, text: str, timeout: float) -> bool:
    prediction = parse(text, extraction_config=_PRED_CONFIG, parsing_timeout=_seconds(timeout))
    if not prediction:
        return False
    return bool(verify(list(parse_gold(gold_answer)), prediction, timeout_seconds=_seconds(timeout)))


def _extract(text: str, timeout: float) -> str | None:
    parsed = parse(text, extraction_config=_PRED_CONFIG, parsing_timeout=_seconds(timeout))
    return str(parsed[-1]) if parsed else None


class _Worker:
    """One worker process for checks outside the main thread; replaced when a check overruns its limit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def run(self, fn, args, timeout: float, default):
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            future = self._pool.submit(fn, *args)
            try:
                return future.result(timeout=timeout + 2.0)  # +2 s: the worker's own start-up
            except concurrent.futures.TimeoutError:
                for process in list(self._pool._processes.values()):
                    process.kill()
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                return default
            except Exception:
                return default


_worker = _Worker()


def _guarded(fn, args, timeout: float, default):
    if threading.current_thread() is threading.main_thread():
        try:
            return fn(*args, timeout)
        except Exception:
            return default
    return _worker.run(fn, (*args, timeout), timeout, default)


def is_correct(gold_answer: str, completion: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether the completion's final answer equals the gold answer, by math-verify; False past `timeout`."""
    parse_gold(gold_answer)  # a bad gold answer is the data's fault: raise, never score
    return _guarded(_grade, (gold_answer, completion[-MAX_CHARS:]), timeout, False)


def extract_answer(completion: str, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """The final answer math-verify reads from a completion (last `\\boxed{}` first), as text; None if none."""
    return _guarded(_extract, (completion[-MAX_CHARS:],), timeout, None)


def boxed_answer(completion: str) -> str | None:
    """The content of the completion's last `\\boxed{}` (braces balanced, so `\\boxed{\\frac{1}{2}}` holds
    `\\frac{1}{2}`; boxes in one list, `\\boxed{2} and \\boxed{3}`, joined as `2,3`), by math-verify's own
    extraction (latex2sympy2_extended); None when there is no closed, non-empty box."""
    tail = completion[-MAX_CHARS:]
    if "\\boxed" not in tail and "\\fbox" not in tail:
        return None
    content = extract_boxed_content(tail)
    unclosed = tail.endswith(content) and content.startswith("{") and content.count("{") > content.count("}")
    if content == tail or unclosed or not content.strip():
        return None
    return content.strip()


def has_boxed_answer(completion: str) -> bool:
    """Whether the completion ends its answer in a closed, non-empty `\\boxed{}` (the format reward and figure)."""
    return boxed_answer(completion) is not None
