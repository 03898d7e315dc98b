"""Fixtures of the operator tests: kmock's emulator on loopback (in a thread) and the real operator process."""

from __future__ import annotations

import pytest

from eftop_harness import Cluster, EmulatorThread, OperatorProcess


@pytest.fixture()
def emulator():
    with EmulatorThread() as emu:
        yield emu


@pytest.fixture()
def cluster(emulator) -> Cluster:
    return Cluster(emulator.url)


@pytest.fixture()
def operator_factory(emulator, tmp_path, request):
    started: list[OperatorProcess] = []

    def start(**kwargs) -> OperatorProcess:
        op = OperatorProcess(emulator.url, tmp_path, **kwargs).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for op in started:
            print(f"----- operator log ({op.log_path}) -----\n{op.output()[-8000:]}")


@pytest.fixture()
def operator(operator_factory) -> OperatorProcess:
    return operator_factory()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
