#!/usr/bin/env bash
# Validates everything under deploy/ with no cluster, no kubectl and no network
# but the Go module proxy:
#   1. go vet and go test of the deploy module: renders every kustomization
#      with the kustomize API, decodes each object strictly into its
#      k8s.io/api or prometheus-operator type, checks the sidecar against
#      config.yaml, and parses every alert and dashboard query with the PromQL
#      parser against metrics.txt.
#   2. promtool (built once from the module proxy and cached) checks and unit
#      tests the alert rules, extracted from the rendered PrometheusRule.
# Run from anywhere: bash deploy/ci.sh
set -euo pipefail

deploy_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

step() { printf '==> %s\n' "$*" >&2; }

step "go vet (deploy module)"
go -C "$deploy_dir" vet ./...

step "go test (deploy module)"
go -C "$deploy_dir" test ./...

# promtool comes from the same Prometheus module version as the PromQL parser
# the Go test uses, so both read the rules alike.
prom_version=$(go -C "$deploy_dir" list -m -f '{{.Version}}' github.com/prometheus/prometheus)
bin_dir=${XDG_CACHE_HOME:-$HOME/.cache}/dinie-auth-proxy/bin/promtool-$prom_version
promtool=$bin_dir/promtool

# A cached binary counts only if Go's build info says it is that version.
promtool_ok() {
	local info
	[[ -x $promtool ]] || return 1
	info=$(go version -m "$promtool" 2>/dev/null) || return 1
	grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/prometheus/prometheus[[:space:]]+${prom_version}([[:space:]]|$)" <<<"$info"
}

if promtool_ok; then
	step "promtool $prom_version: cached in $bin_dir"
else
	step "promtool $prom_version: building into $bin_dir (takes minutes, once)"
	mkdir -p "$bin_dir"
	build_dir=$(mktemp -d "$bin_dir/.build.XXXXXX")
	GOBIN=$build_dir go install "github.com/prometheus/prometheus/cmd/promtool@$prom_version"
	# Rename into place, so an interrupted build never leaves a broken binary.
	mv -f "$build_dir/promtool" "$promtool"
	rmdir "$build_dir"
	promtool_ok
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The PrometheusRule manifest is the only copy of the rules: extract its
# groups from the rendered manifest into the plain file the tests name.
step "extracting rules from the rendered PrometheusRule (monitoring)"
go -C "$deploy_dir" run ./cmd/promrules monitoring >"$work/rules.yaml"
cp "$deploy_dir"/monitoring/tests/*_test.yaml "$work/"

step "promtool check rules"
"$promtool" check rules "$work/rules.yaml"

step "promtool test rules"
"$promtool" test rules "$work"/*_test.yaml

# Linters are not on a fresh machine and this script installs nothing; they
# run where they are installed (apt-get install yamllint shellcheck).
if command -v yamllint >/dev/null; then
	step "yamllint"
	yamllint --strict -c "$deploy_dir/.yamllint" "$deploy_dir"
else
	step "yamllint: not installed, skipped"
fi
if command -v shellcheck >/dev/null; then
	step "shellcheck"
	shellcheck "$deploy_dir/ci.sh"
else
	step "shellcheck: not installed, skipped"
fi

step "deploy: all checks passed"
