"""The ``controlkit`` command line: a thin layer that only registers commands.

Each command lives in its own module (``controlkit/app/cli/<name>.py``) that defines a
:func:`click.command` named ``command``.  Modules are imported only when their command
runs, so ``controlkit --help`` is fast and a command's heavy dependencies (vLLM, Ray) load
only for that command.

Exit codes: 0 success, 1 a domain error (bad telemetry, infeasible spec, failed
certificate), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys

import click

from identification.errors import ControlkitError

__all__ = ["COMMANDS", "MAX_ERROR_CHARS", "main"]

#: Longest error line the CLI prints.
MAX_ERROR_CHARS = 1000

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "identify": ("controlkit.app.cli.identify", "Fit latency, memory and workload models from telemetry."),
    "simulate": ("controlkit.app.cli.simulate", "Run a policy on a plant and a workload in the closed-loop simulator."),
    "bench": ("controlkit.app.cli.bench", "Run every policy on plants x workloads x rates; write docs/benchmarks.md."),
    "design": ("controlkit.app.cli.design", "Design a certified batch-size controller from a model file."),
    "certify": ("controlkit.app.cli.certify", "Re-check a policy file's certificate against a model file."),
    "export": ("controlkit.app.cli.export", "Export a policy as a static vLLM config (args or YAML)."),
    "scrape": ("controlkit.app.cli.scrape", "Record a running engine's /metrics into a CSV that identify reads."),
    "live-demo": ("controlkit.app.cli.live_demo", "Identify, design, hot-reload a policy on a live vLLM engine."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        cmd = module.command
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="controlkit")
def cli() -> None:
    """controlkit: identify batch-latency plants, design certified controllers, deploy them to vLLM."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``controlkit`` script; returns the exit code.

    Domain errors (:class:`ControlkitError`) print one clear line and exit 1; nothing
    reaches the user as a traceback.
    """
    try:
        cli.main(args=argv, prog_name="controlkit", standalone_mode=False)
    except ControlkitError as exc:
        click.echo(f"error: {_bounded(exc)}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        if len(exc.format_message()) > MAX_ERROR_CHARS:
            click.echo(f"Error: {_bounded(exc.format_message())}", err=True)
        else:
            exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file the command had to read or write
        name = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {_bounded(name + (exc.strerror or str(exc)))}", err=True)
        return 1
    except MemoryError:
        click.echo("error: out of memory; reduce the input size, --num-requests or --horizon-s", err=True)
        return 1
    except Exception as exc:
        click.echo(f"error: internal error ({type(exc).__name__}: {_bounded(exc, 300)}); please report it",
                   err=True)
        return 1
    return 0


def _bounded(message: object, limit: int = MAX_ERROR_CHARS) -> str:
    """One line of at most ``limit`` characters (bad input is echoed, but never a whole 10 MB line)."""
    text = " ".join(str(message).split("\n"))
    return text if len(text) <= limit else text[: limit - 30] + f"... [{len(text)} characters]"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
