"""The `eft` command line: validate a resource, run the pipeline locally, run one stage (the Jobs' entry point).

Commands of other roles (serve, verify, crd, ...) are registered in LAZY_COMMANDS and imported only when used.
"""

from __future__ import annotations

import errno
import importlib
import json
import sys
from pathlib import Path

import click

from eft.errors import EXIT_FAILURE, EXIT_INVALID_INPUT, EftError

#: name -> "module:attribute" of a click command, imported on first use.
LAZY_COMMANDS: dict[str, str] = {
    "serve": "eft.serve.cli:serve",
    "verify": "eft.verify.cli:verify",
    "crd": "eft.controller.crd:crd_command",
    "operator": "eft.controller.cli:operator_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr = LAZY_COMMANDS[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ImportError as err:
                return _unavailable(name, str(err))
        return super().get_command(ctx, name)


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(name, help=f"(not available: {why})", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args):
        raise click.ClickException(f"'eft {name}' is not available in this installation: {why}")

    return cmd


def _fail(err: EftError) -> None:
    click.secho(f"error: {err}", fg="red", err=True)
    sys.exit(err.exit_code)


def _fail_os(err: OSError) -> None:
    """A file the pipeline could not read or write: the path and the system's reason, no traceback. A
    read-only or forbidden path is the user's to fix (exit code 2); anything else (a full disk) may pass."""
    where = f" {err.filename}" if err.filename else ""
    click.secho(f"error: cannot read or write{where}: {err.strerror or err} (check the workdir's volume: free "
                "space, permissions, read-only)", fg="red", err=True)
    sys.exit(EXIT_INVALID_INPUT if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else EXIT_FAILURE)


def _setup_logging(verbose: bool) -> None:
    from eft.terminal import configure

    configure(verbose)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True,
              help="Debug logging, with the libraries' own progress bars and INFO messages.")
@click.version_option(package_name="embedding-finetune-operator")
def main(verbose: bool) -> None:
    """Fine-tune, evaluate and serve a domain embedding model (embedding-finetune-operator)."""
    _setup_logging(verbose)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
def validate(file: Path) -> None:
    """Check an EmbeddingFinetune resource file and report every problem with its field path."""
    from eft.api import load_resource

    try:
        resource = load_resource(file)
    except EftError as err:
        _fail(err)
    click.echo(f"{file}: valid EmbeddingFinetune '{resource.metadata.name}'")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Where stage outputs go (default: ./eft-work/<name>).")
def run(file: Path, workdir: Path | None) -> None:
    """Run every enabled stage on this machine, skipping stages whose outputs are current."""
    from eft.api import load_resource
    from eft.progress import Progress
    from eft.report_table import print_outcome, print_metrics_table
    from eft.runner import run_pipeline
    from eft.stages.registry import workdir_for

    try:
        resource = load_resource(file)
        wd = workdir_for(resource, workdir)
        click.echo(f"workdir: {wd}")
        with Progress() as progress:
            outcomes = run_pipeline(resource, wd, progress, on_stage=print_outcome)
        print_metrics_table(wd, outcomes)
    except EftError as err:
        _fail(err)
    except OSError as err:
        _fail_os(err)
    except KeyboardInterrupt:
        click.secho("interrupted: finished stages are kept; run the same command again to resume", err=True)
        sys.exit(130)


@main.command()
@click.argument("name")
@click.option("--spec", "spec_file", required=True, type=click.Path(path_type=Path), help="Resource YAML.")
@click.option("--workdir", required=True, type=click.Path(path_type=Path), help="Shared workspace folder.")
@click.option("--force", is_flag=True, help="Run even if the stage's output is current.")
def stage(name: str, spec_file: Path, workdir: Path, force: bool) -> None:
    """Run one stage (the entry point of the operator's Jobs). Exit code 2 = invalid input."""
    from eft.api import load_resource
    from eft.progress import Progress
    from eft.runner import run_one
    from eft.stages.registry import check_stage_name

    try:
        check_stage_name(name)
        resource = load_resource(spec_file)
        with Progress() as progress:
            outcome = run_one(resource, name, workdir, progress, force=force)
    except EftError as err:
        _fail(err)
    except OSError as err:
        _fail_os(err)
    except KeyboardInterrupt:
        sys.exit(130)
    state = "skipped (up to date)" if outcome.skipped else f"done in {outcome.seconds:.1f}s"
    click.echo(f"stage {name}: {state}")
    click.echo(json.dumps(outcome.summary, indent=2, default=str))


if __name__ == "__main__":
    main()
