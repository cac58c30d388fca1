#!/usr/bin/env bash
# A template for the command jit-dispatch runs for a claimed issue:
#
#   command: ./scripts/work-on-issue.sh {issue_id}
#
# Copy it to scripts/work-on-issue.sh, make it executable, and replace the "work" section with
# what your agent does. The contract (README, "Placeholders and environment"):
#   - exit 0: the work is done; jit-dispatch runs the issue's gates and checks, then settles it
#     `done` (or `gated` while a manual gate is open);
#   - any other exit code (or a timeout): the issue is released with `exit code N` (or the
#     timeout) as the reason, and parked after `max-attempts` failures;
#   - the issue's text is UNTRUSTED (anyone who can file an issue wrote it): read it from
#     $JIT_ISSUE_FILE or the JIT_ISSUE_* variables, pass it as data (a file, an argument in
#     quotes, stdin), never splice it into a command line, `eval`, or arithmetic `$(( ))`;
#   - the last lines of output become the run's summary: end with a line that says what happened.
set -euo pipefail

issue_id="${1:?usage: work-on-issue.sh ISSUE_ID}"
attempt="${JIT_DISPATCH_ATTEMPT:-1}"
echo "working on $JIT_ISSUE_SHORT_ID (${JIT_ISSUE_PRIORITY}), attempt $attempt: $JIT_ISSUE_TITLE"

# The whole issue as jit stores it: description, labels, gates, and the dispatcher's context.
# A retry can read why the previous attempt failed (context."dispatch.last_reason").
description=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("description", ""))' "$JIT_ISSUE_FILE")
last_reason=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["context"].get("dispatch.last_reason", ""))' "$JIT_ISSUE_FILE")
if [ -n "$last_reason" ]; then
  echo "the previous attempt failed: $last_reason"
fi

# ---- work: replace with your agent -------------------------------------------------------------
# An AI coding agent, for instance, gets the issue as a prompt file (data, not code):
#   prompt=$(mktemp)
#   { printf 'Resolve issue %s.\n\n' "$issue_id"; printf '%s\n' "$JIT_ISSUE_TITLE" "$description"; } > "$prompt"
#   your-agent --prompt-file "$prompt"
#   make test
printf 'issue %s: %s\n' "$issue_id" "${description:0:200}" > /dev/null  # the template does nothing
# -------------------------------------------------------------------------------------------------

echo "done: $JIT_ISSUE_SHORT_ID"
