"""`eft verify`: the post-deploy check (also the operator's verification Job).

Writes `DIR/verify/report.json` (always) and, when it passed, finishes the stage through the stage contract
(`DIR/verify/_SUCCESS.json` and the compact summary in the pod's termination message); a failed check leaves
no `_SUCCESS.json` and still reports its summary. Exit 0 = passed, 1 = metrics outside the tolerances or the
endpoint failed (the Job may retry), 2 = the workspace lacks the test split or the eval numbers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from eft.api.serving import BACKENDS
from eft.api.spec import VerificationSpec, field_bounds, field_default
from eft.errors import EXIT_FAILURE, EftError


def _tolerance_option(flag: str, field: str, help: str):
    """A tolerance flag with the bounds and default of `spec.deploy.verification.<field>`."""
    return click.option(flag, field, type=click.FloatRange(*field_bounds(VerificationSpec, field)), default=None,
                        help=f"{help} [default: spec.deploy.verification, else "
                             f"{field_default(VerificationSpec, field)}]")


@click.command("verify")
@click.option("--endpoint", required=True, envvar="EFT_ENDPOINT",
              help="Base URL of the server (http://host:8000, .../v1 or .../v1/embeddings).")
@click.option("--workdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The workspace with prep/beir and eval/_SUCCESS.json.")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Resource YAML: tolerances from spec.deploy.verification and the config hash.")
@_tolerance_option("--tolerance-at1", "tolerance_at1", "Allowed |live - offline| at k<5.")
@_tolerance_option("--tolerance-at-k", "tolerance_at_k", "Allowed |live - offline| at k>=5.")
@click.option("--model", default=None, help="Model id to send (default: the first of GET /v1/models).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="What the endpoint serves: an int8 backend is compared with its own export-stage metrics "
                   "[default: spec.deploy.backend, else auto (eval's fine-tuned model)]")
@click.option("--wait", "wait_seconds", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Wait up to this many seconds for /v1/health/ready first.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--api-key-env", default="EFT_ENDPOINT_API_KEY", show_default=True,
              help="Environment variable holding a bearer token for the endpoint, if it needs one.")
def verify(endpoint, workdir, spec_file, tolerance_at1, tolerance_at_k, model, backend, wait_seconds, concurrency,
           api_key_env):
    """Re-run the test split's BEIR evaluation through a live endpoint and compare with the offline eval."""
    import os

    from eft.api.stages import stage
    from eft.clock import now_iso
    from eft.stages.contract import compact_summary, finish_stage, write_json_atomic, write_termination_message
    from eft.verify.core import DEFAULT_TOLERANCES, verify_endpoint

    tol = dict(DEFAULT_TOLERANCES)
    config_hash = None
    inputs: dict[str, str] = {}
    started_at = now_iso()
    try:
        if spec_file is not None:
            from eft.api import load_resource
            from eft.hashing import plan_hashes

            resource = load_resource(spec_file)
            v = resource.spec.deploy.verification
            tol = {"at1": v.tolerance_at1, "atK": v.tolerance_at_k}
            backend = backend or resource.spec.deploy.backend
            hashes = plan_hashes(resource.spec)
            config_hash = hashes["verify"]
            inputs = {up: hashes[up] for up in stage("verify").inputs}
        if tolerance_at1 is not None:
            tol["at1"] = tolerance_at1
        if tolerance_at_k is not None:
            tol["atK"] = tolerance_at_k
        t0 = time.monotonic()
        summary = verify_endpoint(endpoint, workdir, tol, model=model, wait_seconds=wait_seconds,
                                  concurrency=concurrency, api_key=os.environ.get(api_key_env) or None,
                                  backend=backend or "auto")
    except EftError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        write_termination_message(compact_summary({"stage": "verify", "configHash": config_hash,
                                                   "summary": {"passed": False, "error": str(err)[:1000]}}))
        sys.exit(err.exit_code)
    out = workdir / "verify"
    out.mkdir(parents=True, exist_ok=True)
    (out / "_SUCCESS.json").unlink(missing_ok=True)
    write_json_atomic(out / "report.json", summary)
    seconds = round(time.monotonic() - t0, 2)
    if summary["passed"]:
        finish_stage(out, "verify", config_hash, inputs, started_at, seconds, summary)
    else:
        write_termination_message(compact_summary({"stage": "verify", "configHash": config_hash,
                                                   "durationSeconds": seconds, "summary": summary}))
    click.echo(json.dumps(summary, indent=2))
    if summary["passed"]:
        click.secho(f"verify: passed ({summary['compared']} metrics within tolerance, max |delta| "
                    f"{summary['maxAbsDelta']})", fg="green", err=True)
    else:
        worst = ", ".join(f"{f['metric']} {f['offline']} -> {f['live']}" for f in summary["failures"][:5])
        click.secho(f"verify: FAILED ({len(summary['failures'])} metrics outside tolerance: {worst})", fg="red",
                    err=True)
        sys.exit(EXIT_FAILURE)
