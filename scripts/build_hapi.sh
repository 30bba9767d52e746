#!/usr/bin/env bash
# Build the HAPI FHIR test server (tests/hapi) once and cache it; print the cache directory.
#
# The cache key is a hash of the module's sources (pom.xml, src/), so any checkout of the same sources reuses
# one build: ~/.cache/trialscreen-hapi/<hash>/{trialscreen-hapi.jar,classpath.txt,version}. The dependencies
# stay in the Maven repository (~/.m2), which classpath.txt points into. Needs Java 17+ and Maven.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
module="$root/tests/hapi"
cache_root="${TRIALSCREEN_HAPI_CACHE:-$HOME/.cache/trialscreen-hapi}"

key="$(cd "$module" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
out="$cache_root/$key"
if [[ -s "$out/trialscreen-hapi.jar" && -s "$out/classpath.txt" ]]; then
  # a cached class path is only good while every jar it names is still in ~/.m2
  missing=0
  IFS=: read -r -a jars < "$out/classpath.txt" || true  # one line, no final newline
  for j in "${jars[@]}"; do [[ -f "$j" ]] || { missing=1; break; }; done
  if [[ $missing == 0 ]]; then echo "$out"; exit 0; fi
fi

command -v mvn >/dev/null || { echo "build_hapi.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "build_hapi.sh: java not found (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }

# build in a scratch copy: the checkout gets no target/ folder and parallel builds do not collide
work="$(mktemp -d "${TMPDIR:-/tmp}/trialscreen-hapi-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r "$module/pom.xml" "$module/src" "$work/"
echo "build_hapi.sh: building the HAPI test server ($key) with Maven..." >&2
# offline first (a warm ~/.m2 needs no network); online from Maven Central when something is missing
if ! (cd "$work" && mvn -B -q -o package >"$work/mvn-offline.log" 2>&1); then
  (cd "$work" && mvn -B -q package) >&2
fi
mkdir -p "$cache_root"
tmp_out="$(mktemp -d "$cache_root/.partial.XXXXXX")"
cp "$work/target/trialscreen-hapi.jar" "$work/target/classpath.txt" "$tmp_out/"
unzip -p "$tmp_out/trialscreen-hapi.jar" META-INF/maven/org.trialscreen/trialscreen-hapi-test-server/pom.xml \
  | sed -n 's:.*<hapi.version>\(.*\)</hapi.version>.*:\1:p' > "$tmp_out/version"
rm -rf "$out"
mv "$tmp_out" "$out"  # atomic: a reader sees a whole build or none
echo "$out"
