#!/usr/bin/env bash
# Validates Kubernetes manifests against the API schemas of one Kubernetes
# version, in strict mode (an unknown field is an error): the render's golden
# files by default, or the files and folders given as arguments.
#
#   scripts/validate-k8s.sh                      # packs/k8s/tests/golden/*.yaml
#   scripts/validate-k8s.sh out/ extra.yaml      # every .yaml under out/, and extra.yaml
#
# kubernetes-validate is installed, pinned, into a venv under target/ the
# first time (PyPI must be reachable then). Exit 0 only when every document
# of every file is valid; 1 on any error; 2 when the validator cannot be set up.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the render targets: k8s-openapi's `v1_33` feature
# (packs/k8s/Cargo.toml). Change both together.
K8S_VERSION="${K8S_VERSION:-1.33}"
# Pinned: its schema set decides what passes. 1.37.0 carries the schemas of
# Kubernetes 1.32 to 1.37 (local and local-strict).
KUBERNETES_VALIDATE_VERSION="1.37.0"
VENV="${K8S_VALIDATE_VENV:-target/k8s-validate-venv}"

python="$VENV/bin/python"
if ! "$python" -c "import kubernetes_validate, sys; sys.exit(0 if kubernetes_validate.__version__ == '$KUBERNETES_VALIDATE_VERSION' else 1)" 2>/dev/null; then
  echo "== installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $VENV" >&2
  python3 -m venv "$VENV" || { echo "cannot create a venv at $VENV (python3 -m venv)" >&2; exit 2; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    || { echo "cannot install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (is PyPI reachable?)" >&2; exit 2; }
fi

files=()
if [ "$#" -eq 0 ]; then
  set -- packs/k8s/tests/golden
fi
for target in "$@"; do
  if [ -d "$target" ]; then
    while IFS= read -r -d '' file; do files+=("$file"); done \
      < <(find "$target" -maxdepth 1 -name '*.yaml' -print0 | sort -z)
  elif [ -f "$target" ]; then
    files+=("$target")
  else
    echo "no such file or folder: $target" >&2
    exit 1
  fi
done
if [ "${#files[@]}" -eq 0 ]; then
  echo "no .yaml files to validate in: $*" >&2
  exit 1
fi

# kubernetes-validate prints one line per document and exits non-zero when
# any document fails; warnings (such as an unknown version) count as errors
# here, so a file can never pass unchecked.
output=$("$python" -m kubernetes_validate --strict -k "$K8S_VERSION" "${files[@]}" 2>&1) && status=0 || status=$?
printf '%s\n' "$output"
problems=$(printf '%s\n' "$output" | grep -Ec '^(ERROR|WARN|WARNING)' || true)
documents=$(printf '%s\n' "$output" | grep -Ec '^INFO' || true)
echo "== kubernetes-validate $KUBERNETES_VALIDATE_VERSION, Kubernetes $K8S_VERSION, strict: ${#files[@]} files, $documents valid documents, $problems problems"
if [ "$status" -ne 0 ] || [ "$problems" -ne 0 ] || [ "$documents" -eq 0 ]; then
  exit 1
fi
