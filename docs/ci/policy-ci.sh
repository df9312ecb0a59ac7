#!/bin/sh
# CI for a repository of Mandate policies: validate, test with coverage, and diff against the
# target branch (docs/policy-workflow.md, "CI"). Any CI system can run it; GitHub Actions:
# github-actions.yml beside it.
#
#   policy-ci.sh [POLICIES] [BASE]      (defaults: policies, $MANDATE_BASE_REF or origin/main)
#
# Writes, in $MANDATE_CI_OUT (default mandate-ci/): junit.xml (mandate test), diff.md (mandate diff
# against BASE, Markdown for a pull-request comment; empty when BASE has no POLICIES yet), and
# test.txt (the test run with coverage). Exits non-zero when the set does not validate or a test
# fails; the diff is written either way, so a reviewer sees it on a failing change too.
# CI has no Secrets mounted: every command runs with --no-secret-files (paths checked, files unread).
set -u
POLICIES=${1:-policies}
BASE=${2:-${MANDATE_BASE_REF:-origin/main}}
OUT=${MANDATE_CI_OUT:-mandate-ci}
mkdir -p "$OUT"
status=0

echo "== mandate validate --policies $POLICIES"
mandate validate --policies "$POLICIES" --no-secret-files || status=1

echo "== mandate test --policies $POLICIES --coverage"
mandate test --policies "$POLICIES" --no-secret-files --coverage --junit "$OUT/junit.xml" >"$OUT/test.txt" 2>&1 || status=1
cat "$OUT/test.txt"

echo "== mandate diff $BASE:$POLICIES $POLICIES"
: >"$OUT/diff.md"
old=$(mktemp -d)
if git archive --format=tar "$BASE" -- "$POLICIES" 2>/dev/null | tar -x -C "$old" 2>/dev/null \
    && [ -d "$old/$POLICIES" ]; then
    requests=""
    [ -d "$POLICIES/tests" ] && requests="--requests $POLICIES/tests"
    # shellcheck disable=SC2086  # $requests is two words or none
    if mandate diff "$old/$POLICIES" "$POLICIES" --no-secret-files --format markdown $requests >"$OUT/diff.md"; then
        sed "s|$old/||g" "$OUT/diff.md" >"$OUT/diff.tmp" && mv "$OUT/diff.tmp" "$OUT/diff.md"  # the base's copy by its name
        cat "$OUT/diff.md"
    else
        echo "mandate diff failed: does $BASE hold a valid policy set?" >&2
    fi
else
    echo "$BASE has no $POLICIES: nothing to compare with"
fi
rm -rf "$old"
exit $status
