"""Generate the checked-in shell completions and man pages from the click command tree.

    python scripts/gen_docs.py            # rewrite completions/ and man/
    python scripts/gen_docs.py --check    # exit 1 if they are out of date (tests run this)

Completions are click's own (`_HELIOS_COMPLETE=bash_source helios` and so on),
so they stay correct as commands change; the man pages are written in plain
troff (man(7)) from each command's help, usage and options.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import click
from click.shell_completion import BashComplete, FishComplete, ZshComplete

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helios_cli.main import cli  # noqa: E402

SHELLS = {"helios.bash": BashComplete, "helios.zsh": ZshComplete, "helios.fish": FishComplete}
# A fixed date keeps the generated pages byte-identical between runs.
DATE = datetime.date(2026, 1, 1).isoformat()


def completions() -> dict[str, str]:
    out = {}
    for name, cls in SHELLS.items():
        out[name] = cls(cli, {}, "helios", "_HELIOS_COMPLETE").source()
    return out


def _esc(text: str) -> str:
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def _page(path: list[str], cmd: click.Command) -> str:
    name = " ".join(path)
    ctx = click.Context(cmd, info_name=name)
    usage = cmd.get_usage(ctx).removeprefix("Usage: ")
    short = cmd.get_short_help_str(limit=80)
    parts = [f'.TH "{"-".join(path).upper()}" "1" "{DATE}" "helios" "HELIOS manual"',
             ".SH NAME", f"{'-'.join(path)} \\- {_esc(short)}",
             ".SH SYNOPSIS", f".B {_esc(usage)}"]
    if cmd.help:
        parts += [".SH DESCRIPTION"]
        for para in click.unstyle(cmd.help).split("\n\n"):
            parts += [".PP", _esc(" ".join(para.split()))]
    opts = [p for p in cmd.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]
    if opts:
        parts.append(".SH OPTIONS")
        for opt in opts:
            record = opt.get_help_record(ctx)
            if record:
                parts += [".TP", f"\\fB{_esc(record[0])}\\fR", _esc(record[1] or "")]
    if isinstance(cmd, click.Group):
        parts.append(".SH COMMANDS")
        for sub in cmd.list_commands(ctx):
            c = cmd.get_command(ctx, sub)
            if c is not None and not c.hidden:
                parts += [".TP", f"\\fB{sub}\\fR", _esc(c.get_short_help_str(limit=80)),
                          f"See \\fB{'-'.join(path + [sub])}\\fR(1)."]
    return "\n".join(parts) + "\n"


def man_pages() -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(path: list[str], cmd: click.Command) -> None:
        out["-".join(path) + ".1"] = _page(path, cmd)
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd, info_name=path[-1])
            for sub in cmd.list_commands(ctx):
                c = cmd.get_command(ctx, sub)
                if c is not None and not c.hidden:
                    walk(path + [sub], c)

    walk(["helios"], cli)
    return out


def wanted() -> dict[Path, str]:
    files = {ROOT / "completions" / n: t for n, t in completions().items()}
    files.update({ROOT / "man" / n: t for n, t in man_pages().items()})
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = ap.parse_args()
    files = wanted()
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    extra = [p for d in ("completions", "man") for p in (ROOT / d).glob("*") if p not in files]
    if args.check:
        for p in stale + extra:
            print(f"out of date: {p.relative_to(ROOT)} (run: python scripts/gen_docs.py)")
        return 1 if stale or extra else 0
    for p, text in files.items():
        p.parent.mkdir(exist_ok=True)
        p.write_text(text)
    for p in extra:
        p.unlink()
    print(f"wrote {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
