"""MkDocs hook: the configuration reference, generated at build time from the dataclasses of `coldstart.config`.

Every field of every section with its type, its help and its default as `coldstart config` prints it (the defaults
are read back from that same YAML), so the page cannot drift from the code; `tests/test_docs.py` checks it against
the command's output. The page `configuration.md` holds a marker that this hook replaces with the reference, and
`own-model-and-data.md` one it replaces with the table of TRL's GRPO options that `rl` names.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

import yaml

from coldstart.config import GRPO_OPTIONS, Config, _type_name, dump_config, load_config

PAGE = "configuration.md"
MARKER = "<!-- configuration reference -->"
OPTIONS_PAGE, OPTIONS_MARKER = "own-model-and-data.md", "<!-- grpo options -->"
# the TRL config each section's `trl` fields go to, as they are
TRL_CONFIGS = {"warmup": "trl.SFTConfig", "rl": "trl.GRPOConfig"}


@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # dotted, as --set takes it
    type: str
    default: str  # one line of YAML, as `coldstart config` writes the value
    help: str
    trl: bool


@dataclasses.dataclass(frozen=True)
class Section:
    name: str  # dotted; "" for the top level
    help: str
    rows: list[Row]


def one_line_yaml(value: Any) -> str:
    """A value as YAML writes it, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=float("inf"), allow_unicode=True)
    return text.removesuffix("...\n").strip()


def sections(cls: type = Config, printed: dict[str, Any] | None = None, name: str = "",
             help: str = "") -> list[Section]:
    """`cls`'s fields as one section, then each nested section in the order the config declares it."""
    if printed is None:  # what `coldstart config` prints, read back
        printed = yaml.safe_load(dump_config(load_config()))
    hints = typing.get_type_hints(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        key = f"{name}.{f.name}" if name else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            nested += sections(hints[f.name], printed[f.name], key, f.metadata["help"])
        else:
            rows.append(Row(key, _type_name(hints[f.name]), one_line_yaml(printed[f.name]), f.metadata["help"],
                            f.metadata.get("trl", False)))
    return [Section(name, help, rows), *nested]


def _text(text: str) -> str:
    """Help text as Markdown: outside code spans, `<name>` would be read as an HTML tag."""
    parts = text.split("`")
    parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
    return "`".join(parts)


def markdown() -> str:
    """Each section under its heading, each field a definition: its dotted key, then type, default and help (a
    table's help column would be squeezed to a few words a line by the keys beside it)."""
    out = []
    for s in sections():
        top = s.name.split(".")[0]
        out += [f"{'#' * (2 + s.name.count('.'))} {s.name or 'Top level'}", ""]
        if s.help:
            out += [_text(s.help), ""]
        if any(r.trl for r in s.rows):
            out += [f"Fields marked TRL are passed to `{TRL_CONFIGS[top]}` as they are.", ""]
        for r in s.rows:
            trl = ", TRL" if r.trl else ""
            out += [f"`{r.key}`", f":   `{r.type}`, default `{r.default}`{trl}. {_text(r.help)}", ""]
    return "\n".join(out)


def parse_rows(text: str) -> dict[str, str]:
    """{dotted key: default} of the definitions `markdown` writes (for the test that compares them with the
    command)."""
    field = re.compile(r"^`([\w.]+)`\n:   `.*?`, default `(.*?)`", re.M)
    return dict(field.findall(text))


def grpo_options() -> str:
    """The GRPO options `rl` names as a table: key, default (TRL's), help."""
    rows = {r.key: r for s in sections() for r in s.rows}
    out = ["| Option | Default (TRL's) | What it does |", "|---|---|---|"]
    for name in GRPO_OPTIONS:
        r = rows[f"rl.{name}"]
        out.append(f"| `rl.{name}` | `{r.default}` | {_text(r.help).replace('|', '&#124;')} |")
    return "\n".join(out)


def on_page_markdown(markdown_text: str, page, config, files) -> str:
    page_name = page.file.src_uri
    if page_name not in (PAGE, OPTIONS_PAGE):
        return markdown_text
    marker, text = (MARKER, markdown) if page_name == PAGE else (OPTIONS_MARKER, grpo_options)
    if marker not in markdown_text:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page_name} lost its marker {marker}: the generated text has nowhere to go")
    return markdown_text.replace(marker, text())
