"""`eft operator`: run the Kopf controller with liveness (Kopf's probes) and Prometheus metrics.

The flags and the environment are read into one `OperatorConfig` (`operator_config`), which the reconciler
gets through Kopf's `memo`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import click

from eft.controller.config import OperatorConfig


@click.command("operator")
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace (repeatable; globs allowed).")
@click.option("--all-namespaces", "-A", "all_namespaces", is_flag=True, help="Watch every namespace.")
@click.option("--liveness-port", type=click.IntRange(0, 65535), default=None,
              help="Kopf's health endpoint (GET /healthz) for liveness and readiness probes; 0 disables it "
                   "[default: EFT_LIVENESS_PORT, else 8080].")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Prometheus metrics (GET /metrics); 0 disables them [default: EFT_METRICS_PORT, else 9090].")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Concurrent reconciles [default: EFT_WORKERS, else 8].")
@click.option("--debug", is_flag=True, help="Debug logging (Kopf's included).")
def operator_command(**flags: Any) -> None:
    """Run the EmbeddingFinetune operator (images from EFT_PIPELINE_IMAGE / EFT_SERVER_IMAGE)."""
    config = operator_config(flags, os.environ)
    run_operator(config)


def operator_config(flags: Mapping[str, Any], env: Mapping[str, str]) -> OperatorConfig:
    """The configuration from parsed `eft operator` flags and an environment (click.UsageError when wrong)."""
    if not flags.get("namespaces") and not flags.get("all_namespaces"):
        raise click.UsageError("give --namespace NAME (repeatable) or --all-namespaces")
    if flags.get("namespaces") and flags.get("all_namespaces"):
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    try:
        return OperatorConfig.load(env, namespaces=tuple(flags.get("namespaces") or ()),
                                   all_namespaces=bool(flags.get("all_namespaces")),
                                   debug=bool(flags.get("debug")), workers=flags.get("workers"),
                                   liveness_port=flags.get("liveness_port"), metrics_port=flags.get("metrics_port"))
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def run_operator(config: OperatorConfig) -> None:
    """Start metrics, then Kopf with the handlers of `eft.controller.handlers` (blocks until stopped)."""
    import kopf

    # `eft` already configured logging; Kopf's per-handler success lines are noise at INFO.
    logging.getLogger().setLevel(logging.DEBUG if config.debug else logging.INFO)
    if not config.debug:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("kopf.activities").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if config.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port)
    import eft.controller.handlers  # noqa: F401 - registers the handlers
    from eft.controller.reconciler import Reconciler

    logging.getLogger("eft.controller").info(
        "operator %s (namespace %s): %d workers, watching %s", config.instance, config.namespace or "?",
        config.workers, "all namespaces" if config.all_namespaces else ", ".join(config.namespaces))
    kopf.run(
        clusterwide=config.all_namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None,
        memo=kopf.Memo(reconciler=Reconciler(config)),
    )
