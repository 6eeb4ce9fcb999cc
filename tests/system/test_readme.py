"""The README's facts agree with the code: flags, defaults and limits it quotes."""

import os
import re

from gostgev.cli import build_parser
from gostgev.codec.mux import MuxConfig
from tests import ROOT


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        return fh.read()


def section(text, title):
    start = text.index("\n## %s\n" % title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def parser_flags():
    return {option for action in build_parser()._actions for option in action.option_strings} - {"-h", "--help"}


def test_every_flag_is_in_the_readme_table_and_every_table_flag_exists():
    table = section(readme(), "Command line")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = {flag for row in rows for flag in re.findall(r"`(--?[A-Za-z][\w-]*)", row.split("|")[1])}
    assert documented, "no flag table found"
    assert documented - parser_flags() == set(), "README names flags gostgev does not have"
    long_flags = {flag for flag in parser_flags() if flag.startswith("--")}
    assert long_flags - documented == set(), "flags missing from the README's table"


def test_the_usage_line_names_every_long_flag():
    usage = section(readme(), "Command line").split("```")[1]
    for flag in parser_flags():
        if flag.startswith("--") and flag not in ("--service", "--node", "--debug", "--output", "--version",
                                                  "--config", "--reload-period"):
            assert flag in usage, flag


def test_mux_defaults_quoted_in_the_readme_are_the_code_s():
    text = readme()
    defaults = MuxConfig()
    numbers = re.findall(r"mux\.maxStreams\W{0,4}(\d[\d,]*)", text) + \
        re.findall(r"(\d[\d,]*) \(`mux\.maxStreams`\)", text)
    quoted = {int(n.replace(",", "")) for n in numbers}
    assert quoted == {defaults.max_streams}, quoted
    assert "mux.maxFrameSize (%d)" % defaults.max_frame_size in text
    assert "mux.keepaliveInterval: %ds" % defaults.keepalive_interval in text
    assert "mux.keepaliveTimeout: %ds" % defaults.keepalive_timeout in text


def test_workers_help_and_readme_agree_on_tunnel_servers():
    help_text = " ".join(build_parser().format_help().split())
    assert "tunnel servers run in every one" in help_text
    assert "Tunnel servers run in every worker" in readme()
