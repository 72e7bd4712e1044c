"""Generate the command-line reference from the parsers: one page per ``facetorch`` command.

Run by the ``gen-files`` plugin of ``mkdocs build``. Every entry of
:data:`facetorch.cli.commands.COMMANDS` gets a page holding the real output of
``facetorch <command> --help`` (and, for a command with subcommands such as ``gallery``, of each
``facetorch <command> <subcommand> --help``), captured in this process: argparse and jsonargparse
print the help and call ``sys.exit``, which is caught. A new command, flag or help text shows up
at the next build with no edit here.

A command whose module needs an optional package that is not installed gets a page that says so
(its help cannot be printed without the package); any other failure fails the build.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import warnings
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # document this checkout's facetorch, not another installed copy

from facetorch.cli.commands import COMMANDS, main  # noqa: E402

log = logging.getLogger("mkdocs.plugins.facetorch_cli")

# The positional "{a,b,c}" line of an argparse help with subcommands.
SUBCOMMANDS = re.compile(r"^positional arguments:\n\s+\{([\w,-]+)\}", re.MULTILINE)


def captured_help(argv: list[str]) -> str:
    """The stdout of ``facetorch *argv`` (a ``--help``), as a user would see it."""
    out = io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["facetorch " + " ".join(argv[:-1])]  # jsonargparse names the program after argv[0]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main(argv)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise RuntimeError(f"facetorch {' '.join(argv)} exited with {stop.code}") from None
    finally:
        sys.argv = saved_argv
    return out.getvalue().rstrip() + "\n"


def fenced(text: str) -> str:
    """A help text as a fenced block (backticks inside it cannot close the fence)."""
    return f"````text\n{text}````\n"


def command_page(name: str) -> str:
    """The Markdown page of ``facetorch <name>``."""
    command = COMMANDS[name]
    lines = [f"# facetorch {name}", "", f"{command.help[:1].upper()}{command.help[1:]}.", ""]
    tool = getattr(command, "tool", None)
    prefix = " ".join(getattr(command, "prefix", ()))
    if tool:
        lines += [f"The same as `python tools/{tool}` (a one-line shim onto the same code).", ""]
    runs = f"Runs `{command.target}`" + (f" with `{prefix}` before the arguments" if prefix else "")
    lines += [f"{runs}. This page is generated from the parser at each docs build.", ""]
    try:
        text = captured_help([name, "--help"])
    except ImportError as error:  # an optional package (fastapi, onnxruntime, ...) is not installed
        missing = getattr(error, "name", None) or str(error)
        if missing.split(".")[0] == "facetorch":
            raise
        log.info("facetorch %s --help needs %s, which is not installed: page without its help", name, missing)
        lines += ["!!! note", f"    This command needs `{missing}`, which was not installed where these docs were built.", ""]
        return "\n".join(lines)
    lines += ["```bash", f"facetorch {name} --help", "```", "", fenced(text)]
    found = SUBCOMMANDS.search(text)
    if found and not prefix:
        for sub in found.group(1).split(","):
            lines += [f"## {name} {sub}", "", fenced(captured_help([name, sub, "--help"]))]
    return "\n".join(lines)


overview = captured_help(["--help"])
summary = ["* [Overview](index.md)\n"]
table = ["| command | what it does |", "| --- | --- |"]
for name, command in COMMANDS.items():
    with mkdocs_gen_files.open(f"cli/{name}.md", "w") as page:
        page.write(command_page(name))
    summary.append(f"* [{name}]({name}.md)\n")
    table.append(f"| [`facetorch {name}`]({name}.md) | {command.help} |")

with mkdocs_gen_files.open("cli/index.md", "w") as page:
    page.write(
        "# Command line\n\n"
        "`pip install -e .` installs one command, `facetorch`, with a subcommand per tool. Each tool also runs as\n"
        "`python tools/<tool>.py` from the repository root (a one-line shim onto the same code).\n"
        "The pages of this section are generated from the parsers at every docs build\n"
        "(`docs/scripts/gen_cli_pages.py` reads `facetorch.cli.commands.COMMANDS`), so they show the real `--help`.\n\n"
        "```bash\nfacetorch --help\n```\n\n" + fenced(overview) + "\n" + "\n".join(table) + "\n"
    )
with mkdocs_gen_files.open("cli/SUMMARY.md", "w") as page:
    page.writelines(summary)
