#!/usr/bin/env bash
# Generates JSON Schemas from Grafana's own published TypeScript types (@grafana/schema): the
# dashboard, and the options and field config of every panel type costspan's dashboards use.
# tests/test_dashboards.py validates the dashboards against them. Output: build/*.schema.json.
#
#   tools/grafana-schema/generate.sh      (scripts/dev.sh test runs it after `npm ci`)
set -euo pipefail
cd "$(dirname "$0")"
raw=node_modules/@grafana/schema/dist/types/raw
gen() {  # gen FILE TYPE OUT
    node node_modules/ts-json-schema-generator/dist/ts-json-schema-generator.js \
        --path "$1" --type "$2" --no-type-check -o "build/$3.schema.json.tmp"
    mv "build/$3.schema.json.tmp" "build/$3.schema.json"
}
mkdir -p build
gen "$raw/dashboard/x/types.gen.d.ts" Dashboard dashboard
for panel in timeseries stat table bargauge; do
    file="$raw/composable/$panel/panelcfg/x/types.gen.d.ts"
    gen "$file" Options "$panel.options"
    if grep -q '^export interface FieldConfig' "$file"; then
        gen "$file" FieldConfig "$panel.fieldconfig"
    fi
done
