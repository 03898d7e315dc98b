"""The three Dockerfiles: real entry points, pins that match pyproject.toml, non-root, no build tools,
OCI labels, and one image name/tag setting shared with the operator and the chart."""

from __future__ import annotations

import re

import click
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from eftpkg_support import (
    IMAGES,
    exec_form,
    expand,
    parse_dockerfile,
    parse_labels,
    parse_requirements,
    pyproject,
    read_env_file,
)

IMAGE_NAMES = ("operator", "pipeline", "server")

#: Which pyproject extras each image must carry (the core dependencies always).
EXTRAS = {"operator": ["operator"], "pipeline": ["pipeline", "serve"], "server": ["serve"]}
#: CPU packages of pyproject.toml that GPU images replace with their GPU build (same upstream versions).
GPU_SUBSTITUTES = {"faiss-cpu": "faiss-gpu-cu12", "onnxruntime": "onnxruntime-gpu"}
#: GPU-only packages an image may pin beyond pyproject.toml.
GPU_ONLY = {"tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-cu12-bindings"}
#: What must never be installed into a final stage.
BUILD_TOOLS = {"gcc", "g++", "make", "cmake", "build-essential", "python3-dev", "python3-pip", "git",
               "clang", "ninja-build", "cuda-toolkit", "curl", "wget"}
OCI_LABELS = {"title", "description", "version", "revision", "created", "source", "licenses"}


def _dockerfile(name):
    return parse_dockerfile(IMAGES / name / "Dockerfile")


def _final(name):
    return _dockerfile(name)[1][-1]


def _cli_command(name: str) -> click.Command:
    """The `eft` subcommand as the installed CLI resolves it (lazy commands imported)."""
    from eft.cli import main

    ctx = click.Context(main)
    assert name in main.list_commands(ctx), f"`eft {name}` is not a command of the CLI ({main.list_commands(ctx)})"
    return main.get_command(ctx, name)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_entrypoint_is_a_real_project_command(name):
    final = _final(name)
    [entrypoint] = final.all("ENTRYPOINT")
    [cmd] = final.all("CMD")
    argv = exec_form(entrypoint) + exec_form(cmd)
    scripts = pyproject()["project"]["scripts"]
    assert argv[0] in scripts, f"{name}: entry point {argv[0]!r} is not a [project.scripts] console script"
    assert scripts[argv[0]] == "eft.cli:main"
    sub = _cli_command(argv[1])
    helptext = sub.help or ""
    assert not helptext.startswith("(not available"), f"{name}: `eft {argv[1]}` cannot be imported: {helptext}"
    known = {opt for p in sub.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    known.add("--help")
    for token in argv[2:]:
        if token.startswith("-"):
            assert token.split("=", 1)[0] in known, f"{name}: `eft {argv[1]}` has no option {token} ({sorted(known)})"


def test_each_image_runs_its_role():
    assert exec_form(_final("operator").all("CMD")[0])[0] == "operator"
    assert exec_form(_final("pipeline").all("CMD")[0])[0] == "stage"
    assert exec_form(_final("server").all("CMD")[0])[:1] == ["serve"]
    # The stage Jobs call `eft stage NAME --spec ... --workdir ...`: those options must exist.
    stage = _cli_command("stage")
    opts = {o for p in stage.params for o in p.opts}
    assert {"--spec", "--workdir"} <= opts


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_pins_match_pyproject(name):
    project = pyproject()["project"]
    pins = parse_requirements(IMAGES / name / "requirements.txt")
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS[name]:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    gpu = name != "operator"
    covered = set()
    for req in wanted:
        pkg = canonicalize_name(req.name)
        if gpu and pkg in GPU_SUBSTITUTES:
            assert pkg not in pins, f"{name}: pins the CPU build {pkg}; use {GPU_SUBSTITUTES[pkg]}"
            pkg = GPU_SUBSTITUTES[pkg]
        assert pkg in pins, f"{name}: {req} (pyproject.toml) is not pinned in images/{name}/requirements.txt"
        assert req.specifier.contains(pins[pkg], prereleases=True), (
            f"{name}: {pkg}=={pins[pkg]} does not satisfy pyproject.toml's {req}")
        covered.add(pkg)
    extra_pins = set(pins) - covered
    assert extra_pins <= (GPU_ONLY if gpu else set()), f"{name}: pins not backed by pyproject.toml: {extra_pins}"


def test_pins_agree_across_images():
    seen: dict[str, tuple[str, str]] = {}
    for name in IMAGE_NAMES:
        for pkg, version in parse_requirements(IMAGES / name / "requirements.txt").items():
            if pkg in seen:
                assert seen[pkg][1] == version, f"{pkg}: {seen[pkg][0]} pins {seen[pkg][1]}, {name} pins {version}"
            seen.setdefault(pkg, (name, version))


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_dockerfile_installs_the_pins(name):
    _, stages = _dockerfile(name)
    build_runs = " ".join(i.args for s in stages[:-1] for i in s.all("RUN"))
    build_copies = " ".join(i.args for s in stages[:-1] for i in s.all("COPY"))
    assert f"images/{name}/requirements.txt" in build_copies
    assert "-r /tmp/requirements.txt" in build_runs
    # the project itself comes without dependencies, so nothing unpinned sneaks in
    assert re.search(r"pip install --no-deps \S+\.whl", build_runs)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_final_stage_is_non_root_and_has_no_build_tools(name):
    global_args, stages = _dockerfile(name)
    assert len(stages) >= 2, f"{name}: needs a separate build stage"
    final = stages[-1]
    [user] = final.all("USER")[-1:]
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER must be a numeric non-root uid (runAsNonRoot checks it)"
    if name in ("pipeline", "server"):  # the operator runs their pods as this user, fsGroup included
        from eft.controller.manifests import IMAGE_UID

        assert user.args == f"{IMAGE_UID}:{IMAGE_UID}", f"{name}: USER must be the operator's IMAGE_UID"
    assert final.instructions.index(user) > max(final.instructions.index(i) for i in final.all("RUN"))
    runs = " ".join(i.args for i in final.all("RUN"))
    assert "pip install" not in runs, f"{name}: the final stage must not install Python packages (build stage does)"
    installed = set()
    for m in re.finditer(r"apt-get install ([^&;|]+)", runs):
        installed |= {t for t in m.group(1).split() if not t.startswith("-")}
    assert not installed & BUILD_TOOLS, f"{name}: build tools in the final stage: {installed & BUILD_TOOLS}"
    assert "--no-install-recommends" in runs or not installed
    if installed:
        assert "rm -rf /var/lib/apt/lists" in runs
    assert any("--from=" in c.args for c in final.all("COPY")), f"{name}: final stage copies nothing from build"
    for stage in stages:
        base = expand(stage.base, global_args)
        assert ":" in base and not base.endswith(":latest"), f"{name}: base image {base} is not pinned"
        assert re.search(r":\S*\d", base), f"{name}: base image {base} has no version tag"


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_oci_labels(name):
    project = pyproject()["project"]
    global_args, stages = _dockerfile(name)
    final = stages[-1]
    labels = {k.removeprefix("org.opencontainers.image."): v for k, v in parse_labels(final).items()
              if k.startswith("org.opencontainers.image.")}
    assert OCI_LABELS <= set(labels), f"{name}: missing OCI labels {OCI_LABELS - set(labels)}"
    args = {}
    for ins in final.all("ARG"):
        key, _, default = ins.args.partition("=")
        args[key] = default
    assert expand(labels["version"], args) == project["version"]
    assert labels["licenses"] == project["license"]["text"]
    assert expand(labels["base.name"], global_args).endswith(expand(stages[-1].base, global_args))


def test_one_setting_names_the_images():
    """images/images.env is the single source of registry and tag: the operator's defaults agree with it."""
    from eft.api import spec

    env = read_env_file(IMAGES / "images.env")
    assert env["TAG"] == pyproject()["project"]["version"]
    assert spec.DEFAULT_PIPELINE_IMAGE == f"{env['REGISTRY']}/pipeline:{env['TAG']}"
    assert spec.DEFAULT_SERVER_IMAGE == f"{env['REGISTRY']}/server:{env['TAG']}"
    build = (IMAGES / "build.sh").read_text()
    assert "images.env" in build and '"$REGISTRY/$name:$TAG"' in build
    for name in IMAGE_NAMES:
        assert name in build
