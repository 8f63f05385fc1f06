"""Every command shown in README.md and docs/ is checked, so the documentation cannot
drift from the code without a test failing.

Each part of a documented command (the parts of a pipeline or ``&&`` list) must match
exactly one of :data:`RULES`, which says how it is checked:

``run``
    run as written (from the repository root); it must exit 0, and in a ``console``
    block print the output shown under it (unless that output elides with ``...``).
``daemon``
    the README quick start's registryd: started for real, on free loopback ports in
    place of the documented ones, awaited until ``/ready`` answers 200, then stopped
    with SIGTERM, which must end it with status 0.
``debug``
    a ``curl`` of registryd's debug port: sent to that quick-start daemon (the method,
    body and path as written); it must answer 200.
``parse``
    a command that runs for minutes, needs a server, or files the reader writes: the
    program's own argparse parser parses the documented arguments (the program runs up
    to its ``parse_args`` and no further), so a renamed flag or a bad value fails.
``synopsis``
    a usage line with placeholders (``[--port P]``, ``...``): every ``--option`` it names
    is one the program's parser knows.
``envoy``
    Envoy with a bootstrap from the repository: ``envoy --mode validate`` accepts it.
``pip``
    what is installed exists: the extra in pyproject.toml, the package in the test
    extra, a directory with a pyproject.toml.
``suite``
    the whole test command: ``.ci/run`` runs exactly the documented line.
``pytest-files``
    a pytest command naming test files: each exists.
``build-servers``
    ``scripts/build-servers NAME``: the script knows every NAME.
``external``
    another program's own command (Consul's, etcd's, the shell's, a filter such as
    ``jq``): nothing of registryd's to check; the rule says why.

A rule may also name ``tests`` that exercise the command (checked to exist).  A command
no rule matches fails, saying how to add one.

Commands quoted in the prose (code spans such as ``python -m bench.compare [--quick]``
or ``registryd validate --config``) are synopses and fragments, not commands to run:
the program (module, ``registryd`` subcommand) must exist and know every ``--option``
the span names.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import runpy
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from tests.docs.commands import ROOT, Command, documented, inline
from tests.support.procs import Process, envoy_binary, free_ports, poll
from tests.support.procs import _start as start_process

CHECKS = frozenset(
    {
        "run",
        "daemon",
        "debug",
        "parse",
        "synopsis",
        "envoy",
        "pip",
        "suite",
        "pytest-files",
        "build-servers",
        "external",
    }
)
QUICK_START = "tests/e2e/test_examples.py::test_examples_quick_start"
READY_DEADLINE = 60.0  # seconds: bounded, generous for a loaded 2-CPU machine
STOP_GRACE = 30.0  # seconds from SIGTERM to SIGKILL (registryd exits in well under one)


@dataclass(frozen=True)
class Rule:
    """``pattern`` fully matches a part of a command (its words joined by single spaces,
    program paths shortened: ``.venv/bin/registryd`` is ``registryd``, ``python3`` and
    ``.venv/bin/python`` are ``python``); ``check`` is how it is checked (see the module
    docstring); ``tests`` are tests that run it; ``why`` says why, for ``external``."""

    pattern: str
    check: str
    why: str = ""
    tests: tuple[str, ...] = ()


RULES = (
    Rule(r"python -m venv \.venv", "external", "the standard library's venv"),
    Rule(r"pip install .+", "pip"),
    Rule(r"python -m pytest -q", "suite"),
    Rule(r"python -m pytest( tests/\S+)+", "pytest-files"),
    Rule(
        r"registryd discovery --configDir examples/serviceentries --grpcAddr 127\.0\.0\.1:\d+"
        r" --httpAddr 127\.0\.0\.1:\d+ --monitoringAddr 127\.0\.0\.1:\d+",
        "daemon",
        tests=(QUICK_START,),
    ),
    Rule(r"registryd validate( examples/\S+)+", "run"),
    Rule(r"registryd (discovery|validate|proxy-status|proxy-config|wait)( .+)?", "parse"),
    Rule(r"python -m (bench|tests\.support)\.[\w.]+ .*(\[|\.\.\.).*", "synopsis"),
    Rule(r"python -m (bench|tests\.support)\.[\w.]+( .+)?", "parse"),
    Rule(
        r"python examples/grpc/(server|client)\.py",
        "parse",
        tests=(
            "tests/e2e/test_example_grpc.py::"
            "test_example_client_calls_the_example_server_through_registryd",
        ),
    ),
    Rule(
        r"python -m http\.server 18081 --bind 127\.0\.0\.1",
        "external",
        "the standard library's HTTP server, as the quick start's VM",
        tests=(QUICK_START,),
    ),
    Rule(r"python scripts/console-screenshots", "parse"),
    Rule(r"envoy -c \S+( --concurrency \d+)?", "envoy", tests=(QUICK_START,)),
    Rule(r"curl .*(localhost|127\.0\.0\.1):8080/\S+", "debug"),
    Rule(
        r"curl .*http://127\.0\.0\.1:(18080|15000)/\S*",
        "external",
        "the quick start's Envoy (its listener, its admin port)",
        tests=(QUICK_START,),
    ),
    Rule(r"curl .*localhost:8500/.+", "external", "a Consul agent's own HTTP API"),
    Rule(r"\$CONSUL .+", "external", "Consul's own command line"),
    Rule(r"etcdctl put \S+ .+", "external", "etcd's own command line"),
    Rule(r"scripts/build-servers( [\w-]+)+", "build-servers"),
    Rule(r"(grep|jq) .+", "external", "a filter of the previous command's output"),
    Rule(r"ssh -L \S+ \S+", "external", "OpenSSH's port forwarding to a loopback port"),
    Rule(r"kubectl .+", "external", "Kubernetes' own command line"),
    Rule(r"export \w+=\S+", "external", "the shell's"),
    Rule(r"cat > \S+ << \w+", "external", "the shell's: writes the here-document to a file"),
)

SHORT = {".venv/bin/registryd": "registryd", "python3": "python", ".venv/bin/python": "python"}


def words_of(segment: tuple[str, ...]) -> tuple[str, ...]:
    """The words a rule sees: ``NAME=$(inner)`` is ``inner``; program paths shortened."""
    words = segment
    if len(words) > 3 and words[0].endswith("=$") and words[1] == "(" and words[-1] == ")":
        words = words[2:-1]
    program = words[0]
    program = SHORT.get(program, program.removeprefix(".venv/bin/"))
    return (program, *words[1:])


def classify(segment: tuple[str, ...]) -> Rule:
    """The one rule for ``segment``; a failure saying how to add one if there is none."""
    text = " ".join(words_of(segment))
    matching = [rule for rule in RULES if re.fullmatch(rule.pattern, text, re.DOTALL)]
    if not matching:
        pytest.fail(
            f"no rule says how to check the documented command part {text!r}: add a Rule "
            f"to RULES in {Path(__file__).relative_to(ROOT)} ('run' if it is quick and "
            "self-contained, 'parse' if it runs long or needs a server, 'synopsis' for a "
            "usage line with placeholders, 'external' with a reason for another program's "
            "command; name the tests that run it in tests=)",
            pytrace=False,
        )
    return matching[0]


COMMANDS = documented()


def test_the_documentation_shows_commands() -> None:
    files = {command.file for command in COMMANDS}
    assert {"README.md", "docs/cli.md", "docs/debug.md"} <= files, files


def test_every_rule_is_used_and_every_check_known() -> None:
    used = {classify(s).pattern for c in COMMANDS for s in c.segments}
    assert [r.pattern for r in RULES if r.pattern not in used] == []
    assert [r.check for r in RULES if r.check not in CHECKS] == []
    assert [r.pattern for r in RULES if r.check == "external" and not r.why] == []


@pytest.mark.parametrize("test_id", sorted({t for rule in RULES for t in rule.tests}))
def test_the_tests_rules_name_exist(test_id: str) -> None:
    path, _, name = test_id.partition("::")
    source = (ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), test_id


# --- the checks ---------------------------------------------------------------------------


def program_argv(words: tuple[str, ...]) -> list[str]:
    """A documented ``registryd …`` (or ``python …``) as this interpreter's argv."""
    program, *rest = words
    if program == "registryd":
        script = Path(sys.executable).parent / "registryd"
        if script.exists():
            return [str(script), *rest]
        return [sys.executable, "-m", "registryd", *rest]
    if program == "python":
        return [sys.executable, *rest]
    raise AssertionError(f"not a program this check runs: {program}")


def check_run(command: Command, words: tuple[str, ...]) -> None:
    done = subprocess.run(
        program_argv(words), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{command.text}: exit {done.returncode}\n{done.stderr}"
    if command.output and "..." not in command.output:
        assert done.stdout.rstrip("\n") == command.output


class _Parsed(BaseException):
    """Raised by the patched ``parse_args``: the program got that far.  Not an Exception,
    so a program's ``except Exception`` lets it through."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: object) -> None:
        super().__init__()
        self.parser, self.namespace = parser, namespace


def run_until_parsed(words: tuple[str, ...], *, parse: bool) -> _Parsed:
    """Run the documented program in this process up to its ``parse_args``: with
    ``parse``, that call parses the documented arguments first (a usage error fails);
    without, it stops before parsing (to read the parser's options).  Nothing after it
    runs."""
    program, *args = words
    original = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, *a: object, **k: object) -> object:
        raise _Parsed(self, original(self, *a, **k) if parse else None)  # type: ignore[arg-type]

    if program == "registryd":
        name = "registryd"
        run = lambda: runpy.run_module("registryd", run_name="__main__")  # noqa: E731
    elif program == "python" and args[:1] == ["-m"]:
        name, args = args[1], args[2:]
        run = lambda: runpy.run_module(name, run_name="__main__", alter_sys=True)  # noqa: E731
    elif program == "python":
        name, args = str(ROOT / args[0]), args[1:]
        run = lambda: runpy.run_path(name, run_name="__main__")  # noqa: E731
    else:
        raise AssertionError(f"not a program this check parses for: {program}")
    stderr = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_args),
        mock.patch.object(sys, "argv", [name, *args]),
        contextlib.redirect_stderr(stderr),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        # runpy warns when the module was imported before (by another test): harmless here,
        # as only its parser is used
        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
        try:
            run()
        except _Parsed as parsed:
            return parsed
        except SystemExit as exc:
            pytest.fail(f"{' '.join(words)}: exit {exc.code}: {stderr.getvalue()}", pytrace=False)
    pytest.fail(f"{' '.join(words)}: ended without parsing its arguments", pytrace=False)


def check_synopsis(words: tuple[str, ...]) -> None:
    program = run_until_parsed(tuple(w for w in words[:3]), parse=False).parser
    named = {w.strip("[]").split("=")[0] for w in words if w.lstrip("[").startswith("--")}
    known = set(program._option_string_actions)
    assert named - known == set(), f"{' '.join(words)}: not options of the program"


def check_pip(words: tuple[str, ...]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    for target in (w for w in words[2:] if not w.startswith("-")):
        path, _, extra = target.partition("[")
        if path.startswith("."):
            assert (ROOT / path / "pyproject.toml").is_file(), target
            if extra:
                assert extra.rstrip("]") in extras, target
        else:  # a package from the index: one the test extra installs
            assert any(re.match(rf"{re.escape(path)}\b", r) for r in extras["test"]), target


def check_suite(command: Command) -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command.text.strip() in ci, ".ci/run does not run the documented test command"


def check_build_servers(words: tuple[str, ...]) -> None:
    script = (ROOT / "scripts" / "build-servers").read_text(encoding="utf-8")
    for name in words[1:]:
        assert re.search(rf"^\s*{re.escape(name)}\)", script, re.MULTILINE), name


def check_envoy(words: tuple[str, ...]) -> None:
    argv = [envoy_binary(), "--mode", "validate", *words[1:]]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Daemon:
    """The README quick start's registryd: documented port → the free port used."""

    process: Process
    ports: dict[int, int]


def _quick_start() -> Command:
    (command,) = [
        c
        for c in COMMANDS
        if c.file == "README.md" and any(classify(s).check == "daemon" for s in c.segments)
    ]
    return command


class QuickStart(Process):
    """The README quick start's registryd command, its documented ports replaced by free
    ones of 127.0.0.1 (``ports``: documented → used)."""

    def __init__(self, words: tuple[str, ...], log: Path) -> None:
        documented_ports = [int(m.group(1)) for w in words if (m := re.search(r":(\d+)$", w))]
        self.ports = dict(zip(documented_ports, free_ports(len(documented_ports)), strict=True))
        argv = [re.sub(r":(\d+)$", lambda m: f":{self.ports[int(m.group(1))]}", w) for w in words]
        super().__init__("registryd", program_argv(tuple(argv)), log, cwd=ROOT)

    def wait_ready(self) -> None:
        def ready() -> bool:
            self.check_alive()
            return _request("GET", f"http://127.0.0.1:{self.ports[8080]}/ready", None) == 200

        what = "the quick start's registryd to answer /ready with 200"
        poll(ready, what, deadline=READY_DEADLINE, details=self.tail)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    (words,) = (words_of(s) for s in _quick_start().segments)
    log = tmp_path_factory.mktemp("quick-start") / "registryd.log"
    # started again on new ports if a free port was taken before registryd bound it
    process = start_process(lambda: QuickStart(words, log), QuickStart.wait_ready)
    try:
        yield Daemon(process, process.ports)
    finally:
        status = process.stop(grace=STOP_GRACE)
    assert status == 0, process.tail()  # SIGTERM ends registryd with status 0


def _request(method: str, url: str, body: bytes | None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def check_debug(words: tuple[str, ...], daemon: Daemon) -> None:
    method, body, url = "GET", None, ""
    rest = iter(words[1:])
    for word in rest:
        if word == "-X":
            method = next(rest)
        elif word in ("-d", "--data"):
            body = next(rest).encode()
        elif word == "-H":
            next(rest)
        elif not word.startswith("-"):
            url = word
    host, _, path = url.removeprefix("http://").partition("/")
    port = daemon.ports[int(host.rpartition(":")[2])]
    status = _request(method, f"http://127.0.0.1:{port}/{path}", body)
    assert status == 200, f"{' '.join(words)}: status {status}\n{daemon.process.tail()}"


# --- one test per documented command ------------------------------------------------------


def test_the_quick_start_daemon_is_the_readme_command() -> None:
    assert "--configDir examples/serviceentries" in _quick_start().text


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command(command: Command, request: pytest.FixtureRequest) -> None:
    for segment in command.segments:
        rule = classify(segment)
        words = words_of(segment)
        match rule.check:
            case "run":
                check_run(command, words)
            case "daemon":
                daemon = request.getfixturevalue("daemon")
                daemon.process.check_alive()
            case "debug":
                check_debug(words, request.getfixturevalue("daemon"))
            case "parse":
                run_until_parsed(words, parse=True)
            case "synopsis":
                check_synopsis(words)
            case "envoy":
                check_envoy(words)
            case "pip":
                check_pip(words)
            case "suite":
                check_suite(command)
            case "pytest-files":
                missing = [w for w in words[3:] if not (ROOT / w).exists()]
                assert missing == []
            case "build-servers":
                check_build_servers(words)
            case "external":
                pass  # another program's command; the rule says why
            case other:
                raise AssertionError(f"unknown check {other!r}")


# --- commands quoted in the prose ---------------------------------------------------------

INLINE = inline()


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_the_prose_quotes_commands() -> None:
    assert any(c.text.startswith("python -m bench.") for c in INLINE)
    assert any(c.text.startswith("registryd validate") for c in INLINE)


@pytest.mark.parametrize("command", INLINE, ids=[f"{c.where}#{n}" for n, c in enumerate(INLINE)])
def test_quoted_command_names_a_program_and_options_it_has(command: Command) -> None:
    words = words_of(command.segments[0])
    if words[:3] == ("python", "-m", "registryd"):
        words = ("registryd", *words[3:])
    named = {w.strip("[]").split("=")[0] for w in words if w.lstrip("[").startswith("--")}
    if words[0] == "registryd":
        top = run_until_parsed(("registryd",), parse=False).parser
        subcommand = words[1]
        if subcommand.startswith("-"):
            known = _options(top)
        else:
            assert subcommand in _subcommands(top), f"{command.text}: no such subcommand"
            known = _options(_subcommands(top)[subcommand])
    else:
        module = words[2]
        placeholder = "<" in module  # python -m bench.<script>: a package of scripts
        module = module.partition(".<")[0]
        assert importlib.util.find_spec(module) is not None, f"{command.text}: no {module}"
        if placeholder or not named:
            return
        known = _options(run_until_parsed(words[:3], parse=False).parser)
    assert named - known == set(), f"{command.text}: not options of the program"
