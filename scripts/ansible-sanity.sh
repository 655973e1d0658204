#!/usr/bin/env bash
# ansible-test sanity on the collection, on this machine's Python (no containers).
# Usage: scripts/ansible-sanity.sh [ansible-test sanity options, e.g. --test validate-modules]
#
# ansible-test makes a virtualenv per sanity test and bootstraps pip in it with a get-pip script
# it downloads from Ansible's CI file host, which is out of reach here. The script it looks for in
# its cache is replaced by one that does the same from what Python ships (ensurepip), then brings
# pip to the version ansible-test asks for through pip itself, from the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=$repo/.venv/bin/python
# the pip version ansible-test bootstraps into its virtualenvs
pip_version=$("$python" -c 'from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])')
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
cat >"$cache" <<'PY'
# Stand-in for get-pip.py, written by anyvirt's scripts/ansible-sanity.sh: pip from Python's own
# ensurepip, then the requested packages (pip==X) through it.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
PY
cd ansible_collections/anyvirt/cloud
py=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
exec "$repo/.venv/bin/ansible-test" sanity --venv --python "$py" --color no "$@"
