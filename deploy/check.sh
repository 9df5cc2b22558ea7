#!/usr/bin/env bash
# Checks Karen's observability files in deploy/:
#   1. promtool check rules  prometheus/karen-rules.yml
#   2. promtool test rules   prometheus/karen-rules.test.yml
#   3. every grafana/*.json dashboard parses as JSON
#   4. lint_observability.py: every metric and label that the rules, their
#      tests and the dashboards use is in metrics.txt; every alert has a
#      severity, summary, description and runbook, and a test where it fires
#      and one where it does not; dashboards have uid, title, a ${datasource}
#      variable, and queries promtool can parse.
#
# Installs promtool (Debian package `prometheus`) and python3 when they are
# missing; that needs root or sudo. Runs every step, then exits 1 if any
# failed. Usage: deploy/check.sh   (from any directory)
set -uo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DEPLOY" || exit 1
export DEBIAN_FRONTEND=noninteractive

failed=()

step() {
    echo
    echo "==> $*"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo --preserve-env=DEBIAN_FRONTEND "$@"
    else
        echo "error: '$*' needs root and sudo is not available" >&2
        return 1
    fi
}

# apt_install PACKAGE...: installs without recommended packages (the
# prometheus package would otherwise pull in node-exporter and its tools);
# refreshes the package lists first if the install fails on stale ones.
apt_install() {
    as_root apt-get install -y -q --no-install-recommends "$@" ||
        { as_root apt-get update -q && as_root apt-get install -y -q --no-install-recommends "$@"; }
}

step "tools"
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: installing the Debian package prometheus"
    apt_install prometheus >/dev/null || { echo "error: could not install prometheus" >&2; exit 1; }
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 not found: installing it"
    apt_install python3 >/dev/null || { echo "error: could not install python3" >&2; exit 1; }
fi
promtool --version 2>&1 | head -n 1
python3 --version

step "promtool check rules"
promtool check rules prometheus/karen-rules.yml || failed+=("promtool check rules")

step "promtool test rules"
promtool test rules prometheus/karen-rules.test.yml || failed+=("promtool test rules")

step "dashboards are valid JSON"
shopt -s nullglob
dashboards=(grafana/*.json)
shopt -u nullglob
if [ "${#dashboards[@]}" -eq 0 ]; then
    echo "no dashboards in grafana/"
    failed+=("dashboards present")
fi
for f in "${dashboards[@]}"; do
    if command -v jq >/dev/null 2>&1; then
        jq empty "$f" && echo "$f: ok" || failed+=("JSON $f")
    else
        python3 -m json.tool "$f" >/dev/null && echo "$f: ok" || failed+=("JSON $f")
    fi
done

step "metric names and labels against metrics.txt; alerts; dashboards"
python3 lint_observability.py \
    --metrics metrics.txt \
    --rules prometheus/karen-rules.yml \
    --tests prometheus/karen-rules.test.yml \
    --promtool "$(command -v promtool)" \
    --docs ../docs/observability.md \
    "${dashboards[@]}" || failed+=("lint_observability.py")

echo
if [ "${#failed[@]}" -gt 0 ]; then
    echo "deploy/check.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "deploy/check.sh: all observability checks passed"
