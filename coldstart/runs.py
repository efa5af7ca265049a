"""The run directory: resolved config, atomic manifest, and stages that are skipped, resumed or refused.

A stage works in `<run>/.<stage>.partial/` and is renamed to `<run>/<stage>/` when it finishes. Its fingerprint (the
config sections it reads and the hashes of its inputs) decides what a re-run does: the same fingerprint skips a
finished stage and resumes an unfinished one; a different one refuses to touch a finished stage unless forced.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from coldstart import faults, runtime
from coldstart.errors import ColdstartError

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = ".fingerprint.json"
STAGES = ("score", "warmup", "handoff", "rl", "eval")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    faults.reach(f"write:{path.name}")
    os.replace(tmp, path)


@contextlib.contextmanager
def folder_in_place(out: Path) -> Iterator[Path]:
    """A folder written whole: the block fills `<out>.partial`, which then replaces `out` (an error leaves `out`
    as it was)."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def link_if_identical(path: Path, original: Path) -> bool:
    """Replace the file `path` by a hard link to `original` when their bytes are the same (a model saved unchanged
    need not take its size on disk twice); whether it did. Where no link can be made (another file system), the
    copy stays."""
    if original.is_file() and path.samefile(original):
        return True
    if not (original.is_file() and path.stat().st_size == original.stat().st_size
            and file_sha256(path) == file_sha256(original)):
        return False
    link = path.with_name(f".{path.name}.link")
    link.unlink(missing_ok=True)  # left by a crash between the two steps below
    try:
        os.link(original, link)
    except OSError:
        return False
    os.replace(link, path)
    return True


def tree_sha256(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> str:
    """One hash of every file's relative path and content under `root` (or of `root` itself when it is a file)."""
    root = Path(root)
    if root.is_file():
        return file_sha256(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.name == FINGERPRINT_FILE or skip(rel):
            continue
        digest.update(f"{rel.as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def is_checkpoint(rel: Path) -> bool:
    return rel.parts[0].startswith("checkpoint-")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file the project wrote (metrics, scores, rewrites); [] when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """`records` as JSON lines, replacing `path` whole (a crash leaves the old file)."""
    atomic_write_text(Path(path), "".join(json.dumps(record) + "\n" for record in records))


def command_line() -> str:
    """The command this process runs, as a user types it (`coldstart run CONFIG`, however it was launched)."""
    program = Path(sys.argv[0]).name
    return shlex.join(["coldstart" if program in ("coldstart", "cli.py") else program, *sys.argv[1:]])


def json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def source_sha256() -> str:
    """One hash of coldstart's own Python source (the library, its stages and its eval modules): which code ran.

    Installed, the stages and eval folders sit inside the package folder; in a source checkout (editable install)
    pyproject maps them from the `stages/` and `eval/` folders beside it. Folders, not imports: the library imports
    neither.
    """
    root = Path(__file__).resolve().parent
    beside = [root.parent / name for name in ("stages", "eval") if (root.parent / name / "__init__.py").is_file()]
    digest = hashlib.sha256()
    for folder in [root, *beside]:
        digest.update(f"{folder.name}\0{tree_sha256(folder, lambda rel: rel.suffix != '.py')}\n".encode())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "coldstart_source": source_sha256()}
    for name in ("coldstart", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


_DEFAULT = object()  # a setting a fingerprint does not record: it was at its default (`config.settings`)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """What differs between two fingerprints, setting by setting."""
    if all(v is _DEFAULT or isinstance(v, dict) for v in (old, new)):  # a section: compare its settings
        old, new = ({} if v is _DEFAULT else v for v in (old, new))
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key, _DEFAULT), new.get(key, _DEFAULT), f"{prefix}{key}.")
        return out
    shown = ("its default" if v is _DEFAULT else repr(v) for v in (old, new))
    return [] if old == new else [f"{prefix.rstrip('.')}: {' -> '.join(shown)}"]


def _link_large(source: str, target: str) -> None:
    """A hard link for a large file (weights: never written in place), a copy for a small one (a model card or a
    config, which later stages rewrite in place, would otherwise change in both runs)."""
    if os.path.getsize(source) >= 1 << 20:
        os.link(source, target)
    else:
        shutil.copy2(source, target)


class RunDir:
    """One run's folder: `config.yaml`, `manifest.json` and a folder per stage."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def partial_dir(self, stage: str) -> Path:
        return self.root / f".{stage}.partial"

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ColdstartError(f"{self.manifest_path}: not valid JSON ({e}); restore it or start a new run") from e

    def update_stage(self, stage: str, **fields: Any) -> dict[str, Any]:
        manifest = self.manifest()
        entry = manifest["stages"].setdefault(stage, {})
        entry.update(fields)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")
        return entry

    def write_config(self, text: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "config.yaml", text)

    def finished(self, stage: str) -> dict[str, Any] | None:
        """The manifest entry of a finished stage whose folder is in place, else None."""
        entry = self.manifest()["stages"].get(stage)
        if entry and entry.get("status") == "done" and self.stage_dir(stage).is_dir():
            return entry
        return None

    def adopt(self, stage: str, source: "RunDir") -> bool:
        """Take `source`'s finished `stage` as this run's, its large files hard-linked (no second copy on disk), when
        this run has none: for a run whose stage would compute the same thing. The stage's fingerprint travels with
        its folder, so the stage still runs again, or refuses, if this run's config asks for something else.
        Whether adopted."""
        entry = source.finished(stage)
        if entry is None or self.stage_dir(stage).exists():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        work = self.root / f".{stage}.adopting"  # not the partial folder a resumed attempt would train on from
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(source.stage_dir(stage), work, copy_function=_link_large)
        os.replace(work, self.stage_dir(stage))
        self.update_stage(stage, **{**entry, "seconds": 0.0, "adopted_from": str(source.root), "ended": _now()})
        logger.info("%s: the same as %s's, adopted (hard links)", stage, source.root)
        return True

    def require(self, stage: str, by: str) -> Path:
        """The folder of a finished earlier stage that `by` reads; a clear error when it is not there."""
        if self.finished(stage) is None:
            raise ColdstartError(f"{self.root}: stage '{stage}' has not finished; '{by}' reads its outputs (run it first)")
        return self.stage_dir(stage)

    def run_stage(
        self,
        stage: str,
        fingerprint: dict[str, Any],
        body: Callable[[Path], dict[str, Any]],
        force: bool = False,
        config_text: str | None = None,
        keep: Callable[[Path], bool] = lambda rel: True,
    ) -> dict[str, Any]:
        """Run `body(work_dir)` unless the stage already finished with this fingerprint; returns its manifest entry.

        `body` writes into `work_dir` (kept across interruptions, so it can resume) and returns metrics. When it
        returns, top-level entries for which `keep(name)` is False are removed and the folder is renamed into place.
        In several processes every process runs `body` (a trainer's ranks train together; other stages split their
        work with `Runtime.map`), the main process alone writes the folder's files, and its metrics are recorded.
        """
        precision = runtime.precision()  # on every process: resolving it may be a collective
        if precision != "fp32":  # what the stage computes in; fp32 stages keep the fingerprints they had before
            fingerprint = {**fingerprint, "precision": precision}
        digest = json_sha256(fingerprint)
        final, work = self.stage_dir(stage), self.partial_dir(stage)
        main = runtime.is_main()
        if main:
            for stale in self.root.glob(".*.tmp"):  # left by a crash in the middle of an atomic write
                stale.unlink()
        entry = self.manifest()["stages"].get(stage, {})
        redo = final.is_dir()
        if redo:
            if self._folder_digest(final) == digest and not force:
                if main and entry.get("status") != "done":  # renamed into place, the manifest write interrupted
                    self.update_stage(stage, status="done")
                logger.info("%s: finished with the same config and inputs, skipped", stage)
                runtime.wait()
                return self.manifest()["stages"][stage]
            if not force:
                changes = _diff(entry.get("fingerprint_data", {}), fingerprint)
                what = "; ".join(changes[:4]) or "its inputs or config changed"
                raise ColdstartError(
                    f"{final}: finished with another config ({what}); pass --force {stage} to redo it "
                    "or --set name=<new run> to keep both"
                )
        started = time.time()
        runtime.take_loads()
        runtime.reset_peak_memory()
        if main:
            self._prepare(stage, digest, fingerprint, redo, config_text)
        runtime.wait()
        try:
            metrics = body(work)
        except BaseException as e:
            if main:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                self.update_stage(stage, status=status, error=str(e)[:500])
            raise
        loads = runtime.take_loads()  # where the main process's models ran
        runtime.wait()
        if main:
            for path in work.iterdir():
                if path.name != FINGERPRINT_FILE and not keep(Path(path.name)):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(work, final)
            self.update_stage(
                stage,
                status="done",
                ended=_now(),
                seconds=round(time.time() - started, 1),
                outputs_sha256=tree_sha256(final, skip=is_checkpoint),
                metrics=metrics,
                error=None,
                models_on=loads,
                precision=precision,
                peak_memory_gib=round(runtime.peak_memory_gib(), 3),
            )
        runtime.wait()
        return self.manifest()["stages"][stage]

    def _prepare(self, stage: str, digest: str, fingerprint: dict[str, Any], redo: bool, config_text: str | None):
        """The main process's part before a stage runs: clear what is stale, record the attempt."""
        final, work = self.stage_dir(stage), self.partial_dir(stage)
        if redo:
            shutil.rmtree(final)
        if work.is_dir() and self._folder_digest(work) != digest:
            logger.warning("%s: discarding an unfinished attempt made with another config (%s)", stage, work)
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / FINGERPRINT_FILE, json.dumps({"digest": digest, "fingerprint": fingerprint}, default=str))
        if config_text is not None:
            self.write_config(config_text)
        self.update_stage(
            stage, status="running", started=_now(), fingerprint=digest, fingerprint_data=fingerprint, versions=versions(),
            command=command_line(),
        )

    @staticmethod
    def _folder_digest(folder: Path) -> str | None:
        try:
            return json.loads((folder / FINGERPRINT_FILE).read_text())["digest"]
        except (OSError, ValueError, KeyError):
            return None
