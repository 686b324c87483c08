#!/bin/sh
# Rewrites the golden snippets from the current templates. Review the diff
# (git diff tests/golden) before committing: it is what Exim will read.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/build/tests/render_golden" "$top/exim-templates" "$top/tests/golden"
