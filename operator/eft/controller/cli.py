"""`eft operator`: run the Kopf controller with liveness (Kopf's probes) and Prometheus metrics."""

from __future__ import annotations

import logging

import click


@click.command("operator")
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace (repeatable; globs allowed).")
@click.option("--all-namespaces", "-A", "all_namespaces", is_flag=True, help="Watch every namespace.")
@click.option("--liveness-port", type=int, default=8080, show_default=True, envvar="EFT_LIVENESS_PORT",
              help="Kopf's health endpoint (GET /healthz) for liveness and readiness probes; 0 disables it.")
@click.option("--metrics-port", type=int, default=9090, show_default=True, envvar="EFT_METRICS_PORT",
              help="Prometheus metrics (GET /metrics); 0 disables them.")
@click.option("--workers", type=int, default=None, envvar="EFT_WORKERS", help="Concurrent reconciles (default 8).")
@click.option("--debug", is_flag=True, help="Debug logging (Kopf's included).")
def operator_command(namespaces: tuple[str, ...], all_namespaces: bool, liveness_port: int, metrics_port: int,
                     workers: int | None, debug: bool) -> None:
    """Run the EmbeddingFinetune operator (images from EFT_PIPELINE_IMAGE / EFT_SERVER_IMAGE)."""
    if not namespaces and not all_namespaces:
        raise click.UsageError("give --namespace NAME (repeatable) or --all-namespaces")
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    import os

    if workers:
        os.environ["EFT_WORKERS"] = str(workers)
    import kopf

    # `eft` already configured logging; Kopf's per-handler success lines are noise at INFO.
    logging.getLogger().setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("kopf.activities").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    import eft.controller.handlers  # noqa: F401 - registers the handlers

    kopf.run(
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )
