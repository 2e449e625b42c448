#!/bin/sh
# Regenerates every golden file in this folder. Run from gpt2/testdata/tokenizer/.
# Needs Debian's python3-regex (apt-get install -y python3-regex), node and npm.
set -eu
cd "$(dirname "$0")"
/usr/bin/python3 gen_cases.py
d=$(mktemp -d)
(cd "$d" && npm init -y >/dev/null && npm install --no-audit --no-fund js-tiktoken@1.0.21 gpt-3-encoder@1.1.4 >/dev/null)
NODE_PATH="$d/node_modules" node js_reference.cjs cases.json random.json
rm -rf "$d"
