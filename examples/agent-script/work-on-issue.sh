#!/usr/bin/env bash
# work-on-issue.sh: the command jit-dispatch runs for one issue. A template: copy it to
# scripts/work-on-issue.sh in your repository, make it executable, and replace step 2.
#
#   jit-dispatch once --agent laptop --command ./scripts/work-on-issue.sh     # or the Action's `command:`
#
# When this starts, jit-dispatch has already claimed the issue. What it does next depends only
# on the exit code:
#   0       the work is done: the issue's auto gates and any --check commands run, then `done`
#           (or `gated` while a manual gate is open);
#   not 0   the issue is released with the reason `exit code N` and a failed attempt counted;
#           after max-attempts failures it is parked (`jit-dispatch unpark ID` lifts that).
# A timeout or a cancelled run stops this script's whole process group.
#
# The issue comes in environment variables, never pasted into the command:
#   JIT_ISSUE_ID        full id (jit: a UUID; GitHub Issues: #123)
#   JIT_ISSUE_SHORT_ID  first 8 characters (GitHub Issues: #123)
#   JIT_ISSUE_TITLE     the title (untrusted text)
#   JIT_ISSUE_PRIORITY  critical, high, normal or low
#   JIT_ISSUE_LABELS    labels, comma-separated
#   JIT_ISSUE_FILE      a JSON snapshot of the whole issue (jit: `description`; GitHub: `body`),
#                       removed after the run
#   JIT_AGENT_ID        the assignee, e.g. agent:laptop
#   JIT_DISPATCH_ATTEMPT  this attempt's number (1 for the first)
#
# Titles and descriptions are written by whoever can file an issue: treat them as data. Quote
# them ("$JIT_ISSUE_TITLE"), never `eval` them, never put them in arithmetic ($(( )), (( )),
# [[ -eq ]]: bash evaluates the value there), a branch name or a commit message.
set -euo pipefail

: "${JIT_ISSUE_ID:?run this through jit-dispatch, which sets JIT_ISSUE_ID}"

# 1. Read the issue. The description comes from the snapshot, with no shell parsing it.
description=$(python3 -c '
import json, sys
issue = json.load(open(sys.argv[1], encoding="utf-8"))
print(issue.get("description") or issue.get("body") or "")
' "$JIT_ISSUE_FILE")

echo "Issue $JIT_ISSUE_SHORT_ID, priority $JIT_ISSUE_PRIORITY, attempt $JIT_DISPATCH_ATTEMPT"
printf 'Title: %s\n' "$JIT_ISSUE_TITLE"

# 2. Do the work. Replace this step with your agent, build or script. Hand it the issue as a
#    file (as here) or through the variables, never spliced into a command line.
prompt=$(mktemp)
trap 'rm -f "$prompt"' EXIT
{
  printf 'Resolve this issue in the repository in the current directory.\n\n'
  printf 'Title: %s\n\n%s\n' "$JIT_ISSUE_TITLE" "$description"
} >"$prompt"
echo "Prompt for the agent: $(wc -c <"$prompt") bytes in $prompt"
# my-agent --prompt-file "$prompt"          # e.g. an AI coding agent; its exit code decides
# make test                                 # fail here rather than report `done` on broken work

# 3. Leave the work in the workspace: with `deliver: branch` or `deliver: pull-request`
#    jit-dispatch commits what this script changed (never .jit/) onto a work branch, pushes it
#    and opens the pull request (docs/delivery.md). After a review asking for changes, the next
#    run starts on that branch and the review is in "$JIT_DISPATCH_FEEDBACK_FILE" (JSON).
# if [[ -n "${JIT_DISPATCH_FEEDBACK_FILE:-}" && -s "$JIT_DISPATCH_FEEDBACK_FILE" ]]; then
#   echo "Back after review: $(wc -c <"$JIT_DISPATCH_FEEDBACK_FILE") bytes of feedback"
# fi

exit 0
