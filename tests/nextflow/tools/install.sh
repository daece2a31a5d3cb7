#!/usr/bin/env bash
# Install the offline check tools once, next to this script (both folders are git-ignored):
#   groovy4/  Groovy 4.0.26 jars, taken from the npm package npm-groovy-lint@18.0.0
#             (Debian's groovy 2.4 cannot parse nf-core files)
#   .venv/    nf-core==4.2.1 and jsonschema from PyPI
set -euo pipefail
T=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$T/groovy4/groovy-4.0.26.jar" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent npm-groovy-lint@18.0.0 >/dev/null)
  mkdir -p "$T/groovy4.partial"
  tar xzf "$tmp/npm-groovy-lint-18.0.0.tgz" -C "$T/groovy4.partial" --strip-components=5 \
    package/lib/java/groovy/lib/groovy-4.0.26.jar \
    package/lib/java/groovy/lib/groovy-json-4.0.26.jar \
    package/lib/java/groovy/lib/groovy-dateutil-4.0.26.jar
  rm -rf "$T/groovy4" && mv "$T/groovy4.partial" "$T/groovy4"
fi
if [ ! -x "$T/.venv/bin/nf-core" ]; then
  rm -rf "$T/.venv"
  python3 -m venv "$T/.venv"
  "$T/.venv/bin/pip" install --quiet nf-core==4.2.1 jsonschema
fi
