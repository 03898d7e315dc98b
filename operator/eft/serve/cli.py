"""`eft serve`: run the embedding server on an exported model (also the serving image's entry point)."""

from __future__ import annotations

import os

import click

from eft.errors import EftError


@click.command("serve")
@click.option("--model", "model_dir", required=True, envvar="EFT_MODEL_DIR", type=click.Path(file_okay=False),
              help="An export folder (DIR/export), one variant (DIR/export/onnx), a workspace DIR, or a "
                   "SentenceTransformer folder (served with PyTorch).")
@click.option("--host", default="0.0.0.0", show_default=True, envvar="EFT_HOST")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), envvar="EFT_PORT")
@click.option("--backend", type=click.Choice(["auto", "onnx", "onnx-int8", "tensorrt", "torch"]), default="auto",
              show_default=True, envvar="EFT_BACKEND",
              help="auto: TensorRT when an engine and a GPU exist, else ONNX (CUDA or CPU), else PyTorch.")
@click.option("--served-model-name", "names", multiple=True, envvar="EFT_SERVED_MODEL_NAME",
              help="Model id(s) clients send as `model` (default: the exported model's name).")
@click.option("--max-batch-size", default=64, show_default=True, type=click.IntRange(1, 4096),
              envvar="EFT_MAX_BATCH_SIZE")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(0, 1000),
              envvar="EFT_MAX_WAIT_MS", help="Longest wait for more requests to fill a batch.")
@click.option("--max-inputs", default=2048, show_default=True, type=click.IntRange(1, 100000),
              envvar="EFT_MAX_INPUTS", help="Most texts in one request.")
@click.option("--max-request-bytes", default=16 * 1024 * 1024, show_default=True, type=click.IntRange(1024),
              envvar="EFT_MAX_REQUEST_BYTES")
@click.option("--threads", default=None, type=click.IntRange(1, 1024), envvar="EFT_THREADS",
              help="Inference threads (default: the CPUs this process may use).")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(model_dir, host, port, backend, names, max_batch_size, max_wait_ms, max_inputs, max_request_bytes,
          threads, access_log):
    """Serve POST /v1/embeddings (OpenAI + NIM), GET /v1/models, /v1/health/{live,ready} and /metrics."""
    import uvicorn

    from eft.serve.app import ServerSettings, create_app

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = ServerSettings(model_dir=model_dir, backend=backend, served_model_names=list(names),
                              max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                              max_inputs_per_request=max_inputs, max_request_bytes=max_request_bytes,
                              threads=threads)
    try:
        app = create_app(settings)
    except EftError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(err.exit_code) from None
    state = app.state.eft
    click.echo(f"serving '{state.names[0]}' from {state.source.folder} ({state.source.backend}) "
               f"on http://{host}:{port}/v1/embeddings", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, timeout_keep_alive=30)
