# Shared by tests/e2b/one-url and tests/e2b/subdomain: start and stop a
# codebox server with fresh data. Sourced, not run.

# start_server NAME [VAR=VALUE...]: sets SERVER_PID, SERVER_PORT, SERVER_KEY, SERVER_LOG.
start_server() {
    local name="$1"
    shift
    local data="$E2B_TEST_SCRATCH/data-$name"
    SERVER_LOG="$E2B_TEST_SCRATCH/serve-$name.log"
    SERVER_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # A cgroup parent of its own: start-up destroys whatever it finds there.
    env -i PATH="$PATH" HOME="${HOME:-/root}" \
        CODEBOX_AGENT_PATH="$CODEBOX_AGENT_PATH" \
        CODEBOX_CGROUP_PARENT="codebox-e2b-test-$name-$$" \
        CODEBOX_TEMPLATES_DIR="$E2B_TEST_TEMPLATES" \
        CODEBOX_TEMPLATES_ENABLED=python3 \
        CODEBOX_TEMPLATES_BUILD_ON_START=false \
        CODEBOX_POOL_SIZE=1 \
        CODEBOX_LOG_FORMAT=text \
        "$@" \
        "$CODEBOX_BIN" serve --port "$SERVER_PORT" --data-dir "$data" > "$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local tries=0
    until curl -fs "http://127.0.0.1:$SERVER_PORT/health" > /dev/null; do
        tries=$((tries + 1))
        if ! kill -0 "$SERVER_PID" 2> /dev/null || [[ "$tries" -gt 1200 ]]; then
            echo "codebox serve did not start:" >&2
            tail -30 "$SERVER_LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    SERVER_KEY="$(cat "$data/admin.key")"
}

stop_server() {
    if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2> /dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
    fi
}

# run_scenario LABEL COMMAND...: runs it, shows the server log on failure.
run_scenario() {
    local label="$1"
    shift
    echo "== $label" >&2
    if "$@"; then
        return 0
    fi
    echo "== $label FAILED; server log:" >&2
    tail -40 "$SERVER_LOG" >&2
    return 1
}
