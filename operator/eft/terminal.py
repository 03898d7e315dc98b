"""What the `eft` commands write to the terminal and to logs.

On a terminal (stderr is a TTY) every log record goes through the same rich console as the progress display
(`rich.logging.RichHandler`), so a message prints above the live bars instead of tearing them. Libraries that
draw their own tqdm bars (transformers' "Loading weights", BEIR's corpus loading, datasets, the Hugging Face hub)
are switched off, and chatty library loggers (BEIR logs every metric and a sample document at INFO) are held at
WARNING. `eft -v` brings all of it back: library bars, library INFO and our DEBUG lines.

Without a terminal (a Job's pod log, a redirected file) records are plain timestamped lines, one per progress
step, as before; library bars are switched off there too unless `-v` (a bar in a log file is a line per redraw).
"""

from __future__ import annotations

import logging
import os
import sys

#: Library loggers that are held at WARNING unless -v.
NOISY_LOGGERS = ("beir", "sentence_transformers", "transformers", "datasets", "accelerate", "faiss", "httpx",
                 "httpcore", "openai", "urllib3", "filelock", "huggingface_hub", "torch", "matplotlib", "PIL",
                 "onnxruntime", "onnx", "tensorrt", "numexpr", "uvicorn.access")
#: Environment switches that turn library progress bars off (read when those libraries are imported).
BAR_SWITCHES = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_console = None
_handler: logging.Handler | None = None


def stderr_console():
    """The one rich console on stderr shared by the progress display and the log handler."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def silence_library_bars() -> None:
    """Switch library progress bars off: environment switches for libraries not imported yet (and for child
    processes), the libraries' own switches for those already imported."""
    for key, value in BAR_SWITCHES.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def configure(verbose: bool = False, interactive: bool | None = None) -> logging.Handler:
    """Set up logging for a command (see the module docstring); returns the handler it installed."""
    global _handler
    interactive = sys.stderr.isatty() if interactive is None else interactive
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    if interactive:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=stderr_console(), show_path=False, markup=False,
                                               show_time=verbose, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    _handler = handler
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(True)  # library warnings print through the same handler, above the bars
    if not verbose:
        silence_library_bars()
    return handler
