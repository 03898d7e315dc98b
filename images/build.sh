#!/usr/bin/env bash
# Build (and optionally push) the three images from the repository root:
#   images/build.sh            # build operator, pipeline and server
#   images/build.sh operator   # build one
#   PUSH=1 images/build.sh     # build and push
# Names and tags come from images/images.env (REGISTRY, TAG); override them in the environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck disable=SC1091
set -a; . "$here/images.env"; set +a
REGISTRY="${EFT_REGISTRY:-$REGISTRY}"
TAG="${EFT_TAG:-$TAG}"
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(operator pipeline server)
for name in "${targets[@]}"; do
  image="$REGISTRY/$name:$TAG"
  echo "building $image"
  DOCKER_BUILDKIT=1 docker build \
    -f "$here/$name/Dockerfile" \
    --build-arg "EFT_VERSION=$TAG" \
    --build-arg "VCS_REF=$revision" \
    --build-arg "BUILD_DATE=$created" \
    -t "$image" "$root"
  if [ "${PUSH:-0}" = "1" ]; then docker push "$image"; fi
done
