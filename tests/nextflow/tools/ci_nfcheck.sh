#!/usr/bin/env bash
# Offline checks of the Nextflow layer. Usage: ci_nfcheck.sh PIPELINE_DIR
# No Nextflow runtime, nf-test or container engine is used or needed: nothing here runs
# the pipeline. Passing these checks is not passing Nextflow's own parser or a real run.
set -euo pipefail
T=$(cd "$(dirname "$0")" && pwd); P=$(cd "$1" && pwd)
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64} NFCORE_NO_VERSION_CHECK=1
# The institutional-config include in nextflow.config reads /dev/null instead of GitHub.
export NXF_OFFLINE=true
export NXF_HOME=$(mktemp -d); trap 'rm -rf "$NXF_HOME"' EXIT   # nf-core caches shim output here
"$T/install.sh"
cd "$P"
# The checks run in an empty network namespace where available, so an accidental
# network call fails here instead of passing on a connected machine.
NET=""; unshare -n true 2>/dev/null && NET="unshare -n"
echo "--- 1. Groovy 4 parse + structure check"
# shellcheck disable=SC2046
$NET java -XX:TieredStopAtLevel=1 -cp "$T/groovy4/*" groovy.ui.GroovyMain "$T/nfparse.groovy" \
  $(find . \( -name '*.nf' -o -name '*.config' -o -name '*.nf.test' \) \
      -not -path './.git/*' -not -path './work/*' -not -path './.nf-test/*' -not -path '*/.venv/*' -not -path './tests/nextflow/tools/*' | sort)
export PATH="$T:$T/.venv/bin:$PATH"        # $T/nextflow = offline `nextflow config` shim
echo "--- 2. nf-core pipelines lint (offline subset)"
$NET nf-core --hide-progress pipelines lint --dir . --plain-text
echo "--- 3. nf-core pipelines schema lint"
$NET nf-core --hide-progress pipelines schema lint nextflow_schema.json
echo "--- 4. jsonschema checks"
$NET "$T/.venv/bin/python" "$T/schema_checks.py" .
echo "NOTE: nf-test and Nextflow runs were not executed here: no Nextflow runtime is installed."
