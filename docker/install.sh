#!/bin/sh
# The image's install steps, one script so the Dockerfile and the test that runs them in a plain
# venv (tests/integration/test_image.py; `make image-check`) execute the same commands:
#   install.sh PREFIX WHEEL_DIR LOCK
# A venv at PREFIX with exactly the lock's dependencies (hashes checked, no resolution), then
# jit-dispatch from the one wheel in WHEEL_DIR (built in the same workflow), nothing else.
set -eu
prefix=$1 wheels=$2 lock=$3
# The wheel is looked for first: a wrong dist/ fails at once, before a venv is built for nothing.
set -- "$wheels"/jit_dispatch-*.whl
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
  echo "install.sh: expected one jit_dispatch wheel in $wheels, found: $*" >&2
  exit 1
fi
python3 -m venv "$prefix"
"$prefix/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check --require-hashes --no-deps -r "$lock"
"$prefix/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check --no-deps "$1"
"$prefix/bin/jit-dispatch" --version
