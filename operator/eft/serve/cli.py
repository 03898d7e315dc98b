"""`eft serve`: run the embedding server on an exported model (also the serving image's entry point).

The options are the fields of `eft.api.serving.ServingSettings`, with the flags and environment variables of
`SERVE_OPTIONS` and the bounds, choices and defaults of `spec.deploy`: the operator's server Deployment writes
the same settings object that this command reads back.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import click

from eft.api.serving import (
    BACKENDS,
    DEFAULT_HOST,
    DEFAULT_MAX_REQUEST_BYTES,
    INPUT_TYPES,
    ServingSettings,
    deploy_bounds,
    deploy_default,
    serve_option,
)
from eft.errors import EftError


def _option(field_name: str, *decls: str, **kwargs: Any):
    """A click option for one ServingSettings field: flag, variable and help from SERVE_OPTIONS."""
    opt = serve_option(field_name)
    kwargs.setdefault("help", opt.help or None)
    return click.option(opt.flag, *decls, field_name, envvar=opt.envvar, **kwargs)


def _deploy_range(name: str, kind: type[click.IntRange] | type[click.FloatRange]):
    lo, hi = deploy_bounds(name)
    return kind(lo, hi)


@click.command("serve")
@_option("model_dir", required=True, type=click.Path(file_okay=False))
@_option("host", default=DEFAULT_HOST, show_default=True)
@_option("port", default=deploy_default("port"), show_default=True, type=_deploy_range("port", click.IntRange))
@_option("backend", type=click.Choice(BACKENDS), default=deploy_default("backend"), show_default=True)
@_option("served_model_names", multiple=True)
@_option("max_batch_size", default=deploy_default("max_batch_size"), show_default=True,
         type=_deploy_range("max_batch_size", click.IntRange))
@_option("max_wait_ms", default=deploy_default("max_wait_ms"), show_default=True,
         type=_deploy_range("max_wait_ms", click.FloatRange))
@_option("max_inputs_per_request", default=deploy_default("max_inputs_per_request"), show_default=True,
         type=_deploy_range("max_inputs_per_request", click.IntRange))
@_option("max_request_bytes", default=DEFAULT_MAX_REQUEST_BYTES, show_default=True, type=click.IntRange(1024))
@_option("threads", default=None, type=click.IntRange(1, 1024))
@_option("default_input_type", default=None, type=click.Choice(INPUT_TYPES))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(access_log: bool, **params: Any) -> None:
    """Serve POST /v1/embeddings (OpenAI + NIM), GET /v1/models, /v1/health/{live,ready} and /metrics."""
    import uvicorn

    from eft.serve.app import create_app

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = settings_from_params(params)
    try:
        app = create_app(settings)
    except EftError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(err.exit_code) from None
    state = app.state.eft
    click.echo(f"serving '{state.names[0]}' from {state.source.folder} ({state.source.backend}) "
               f"on http://{settings.host}:{settings.port}/v1/embeddings", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=access_log,
                timeout_keep_alive=30)


def settings_from_params(params: Mapping[str, Any]) -> ServingSettings:
    """The ServingSettings of parsed `eft serve` options (`access_log` aside)."""
    values = {k: v for k, v in params.items() if k != "access_log"}
    values["served_model_names"] = tuple(values.get("served_model_names") or ())
    return ServingSettings(**values)
