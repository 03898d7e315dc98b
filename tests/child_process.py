"""Child processes the test fixtures start (kube-apiserver, etcd, kube-controller-manager, the operator, pods)
that die with the test run: `die_with_parent(argv)` runs `argv` under util-linux's `setpriv --pdeathsig`, so a
pytest killed outright (a CI timeout, `kill -9`) leaves no control plane or operator behind holding CPU and
ports. The signal goes when the thread that started the child exits, so start children from a thread that lives
as long as they should. Without `setpriv` (not Linux) `argv` runs as is."""

from __future__ import annotations

import shutil


def die_with_parent(argv: list[str]) -> list[str]:
    """`argv` prefixed so that the process gets SIGTERM when its parent (thread) dies."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else list(argv)
