#!/usr/bin/env bash
# Run the HAPI FHIR test server in the foreground: scripts/run_hapi.sh [PORT] (default 8091).
# Open base http://127.0.0.1:PORT/fhir; bearer-protected base /secure/fhir (token: $TRIALSCREEN_HAPI_TOKEN,
# default trialscreen-test-token). Empty database (H2 in memory) at every start; Ctrl-C stops it.
set -euo pipefail
port="${1:-8091}"
dir="$(bash "$(dirname "$0")/build_hapi.sh")"
exec java -Xmx"${TRIALSCREEN_HAPI_XMX:-768m}" -XX:+UseSerialGC \
  -Dtrialscreen.hapi.port="$port" -Dtrialscreen.hapi.host=127.0.0.1 \
  -Dtrialscreen.hapi.token="${TRIALSCREEN_HAPI_TOKEN:-trialscreen-test-token}" \
  -cp "$dir/trialscreen-hapi.jar:$(cat "$dir/classpath.txt")" org.trialscreen.hapi.HapiTestServer
