# Helpers for the end-to-end scripts that run inside the sandbox
# (run-inside in the container, vm-inside in the VM): one line per check,
# polling, wrk load and its report. Sourced; scripts/e2e copies it to /e2e.

readonly URL=http://127.0.0.1:8097
readonly UNIT=ferricorn.service
passed=0
failed=0
skipped=0
started=${EPOCHREALTIME/./}

ok() { echo "ok - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }
skip() { echo "skip - $*"; skipped=$((skipped + 1)); }
# check DESCRIPTION COMMAND...: one check, passed if COMMAND succeeds. A
# failure runs $ON_FAIL (if set), which can print what the log needs to
# say why: the machine and its journal are gone once the run ends.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else
        fail "$what"
        [[ -z ${ON_FAIL:-} ]] || $ON_FAIL
    fi
}
# Seconds since the start, to 0.1 s.
elapsed() {
    local us=$((${EPOCHREALTIME/./} - started))
    printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}
section() { printf '\n# %s (t=%ss)\n' "$*" "$(elapsed)"; }
# The last line: what scripts/e2e adds up.
summary() {
    echo
    echo "took $(elapsed) s"
    echo "$passed passed, $failed failed, $skipped skipped"
    [[ $failed -eq 0 ]]
}

# eventually SECONDS COMMAND...: polls COMMAND every 100 ms.
eventually() {
    local limit=$1 i
    shift
    for ((i = 0; i < limit * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
health() { curl -fsS --max-time 10 "$URL/health"; }
health_field() { health | json "['$1']"; }
main_pid() { systemctl show -p MainPID --value "$UNIT"; }
status_text() { systemctl show -p StatusText --value "$UNIT"; }
workers_of() { pgrep -P "$1" -d ' ' -f 'ferricorn worker'; }

# wrk_totals FILE: "REQUESTS ERRORS NON2XX" from a wrk report. Fails, saying
# which line, on a report it cannot read whole: a line about errors that
# does not parse must never count as zero errors.
wrk_totals() {
    python3 - "$1" <<'EOF'
import re, sys

text = open(sys.argv[1]).read()
requests = re.findall(r"^\s*(\d+) requests in ", text, re.M)
if len(requests) != 1:
    sys.exit("no single 'N requests in' line")
errors = non2xx = 0
for line in text.splitlines():
    if "error" in line.lower():
        m = re.fullmatch(r"\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*", line)
        if not m:
            sys.exit(f"unreadable line: {line!r}")
        errors += sum(int(n) for n in m.groups())
    elif "2xx" in line:
        m = re.fullmatch(r"\s*Non-2xx or 3xx responses: (\d+)\s*", line)
        if not m:
            sys.exit(f"unreadable line: {line!r}")
        non2xx += int(m.group(1))
print(requests[0], errors, non2xx)
EOF
}

# load_verdict FILE [ALLOWED]: prints wrk's report and its totals; succeeds
# if requests were made and at most ALLOWED (default 0) of them failed.
load_verdict() {
    local report=$1 allowed=${2:-0} totals requests errors non2xx
    sed 's/^/  wrk| /' "$report"
    if ! totals=$(wrk_totals "$report" 2>&1); then
        echo "  load: cannot read the report: $totals"
        return 1
    fi
    read -r requests errors non2xx <<<"$totals"
    echo "  load: $requests requests, $errors socket errors, $non2xx non-2xx (allowed: $allowed)"
    [[ $requests -gt 0 && $((errors + non2xx)) -le $allowed ]]
}

# Background load: wrk with keep-alive connections until load_stop (at most
# 5 minutes), its report in $load_out.
load_start() {
    load_out=$(mktemp)
    wrk -t2 -c16 -d300s "$URL/health" >"$load_out" 2>&1 &
    load_pid=$!
    # Under way once wrk's connections are open.
    eventually 10 bash -c "[[ \$(ss -tnH state established '( dport = :8097 )' | wc -l) -ge 16 ]]"
}
# Whether the load is still running (an action checked with this ran inside it).
load_running() { kill -0 "$load_pid" 2>/dev/null; }
# Stops wrk (SIGINT: it stops and prints its report) and judges the report;
# $1: failures allowed (default 0).
load_stop() {
    kill -INT "$load_pid" 2>/dev/null
    wait "$load_pid"
    load_verdict "$load_out" "${1:-0}"
}
