"""Every resource in `examples/` is accepted by the spec model, by the generated CRD (as the API server would
check it) and, for the cluster examples, by the operator's own checks; the other objects in a file are valid
Kubernetes objects, and every Secret an example needs is in the file or created by a command it shows."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from crd_schema import spec_validator
from eft.api import parse_resource
from eft.controller.validation import secret_refs, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Examples for `eft run` on a laptop (a local corpus path), not for a cluster.
LOCAL = {"quickstart.yaml", "01-quickstart.yaml"}
K8S = "1.30"


def test_numbered_examples_are_consecutive():
    numbers = sorted(int(p.name[:2]) for p in EXAMPLES.glob("[0-9][0-9]-*.yaml"))
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 5


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_is_valid_for_the_model_the_crd_and_the_operator(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), "an example starts with a comment saying what it shows and how to use it"
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    [body] = [d for d in docs if d["kind"] == "EmbeddingFinetune"]
    resource = parse_resource(body)
    assert not [e.message for e in spec_validator().iter_errors(body["spec"])]
    if path.name not in LOCAL:
        checked, problems = validate(body)
        assert checked is not None and not problems, problems
    for doc in docs:
        if doc is not body:
            kubernetes_validate.validate(doc, K8S, strict=True)
            assert doc["metadata"].get("namespace") == body["metadata"].get("namespace")
    secrets = {d["metadata"]["name"]: {**(d.get("data") or {}), **(d.get("stringData") or {})}
               for d in docs if d["kind"] == "Secret"}
    for field, name, key in secret_refs(resource.spec):
        if name in secrets:
            assert key in secrets[name], f"{field}: the Secret {name!r} in the file has no key {key!r}"
        else:
            assert re.search(rf"kubectl create secret generic {re.escape(name)} --from-literal={re.escape(key)}=",
                             text), f"{field}: Secret {name!r} is neither in the file nor created by a shown command"
