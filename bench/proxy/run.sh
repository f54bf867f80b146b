#!/usr/bin/env bash
# Proxy benchmark: ms365-gateway vs nginx, both terminating TLS in front of the same upstream.
#
#   bench/proxy/run.sh                 # defaults: ROUNDS=5 DURATION=10 CONNECTIONS=32
#   ROUNDS=3 DURATION=5 bench/proxy/run.sh > results.md
#
# What it does (everything lives in one mktemp dir and is removed on exit):
#   * upstream: its own nginx instance on 127.0.0.1 answering every request with a fixed
#     1 KiB body over keep-alive HTTP/1.1 (stands in for the PBX);
#   * nginx (second instance, worker_processes 2): TLS + HTTP/1.1 + HTTP/2, proxy_pass to the
#     upstream through an `upstream {}` block with `keepalive 64`;
#   * the gateway (target/release/ms365-gateway, `--log $GATEWAY_LOG`, by default `info`: the
#     default configuration, access log included, written to a file): TLS in front of the same
#     upstream; same self-signed P-256 certificate as nginx;
#   * h2load over TLS with keep-alive against both, HTTP/1.1 (--h1, -m 1) and HTTP/2 (-m
#     H2_STREAMS), duration based with a warm-up, interleaved A/B (the proxy that goes first
#     alternates every round). Latency percentiles come from h2load's --log-file (per-request
#     microseconds), so h1 and h2 are measured the same way;
#   * WebSocket (protocol `ws`): bench/proxy_load.rs (`cargo bench --bench proxy_load --no-run`)
#     echoes every message behind both proxies (nginx: `location /ws` with the upgrade
#     headers; the gateway: a second listener whose upstream is the echo server) and drives
#     CONNECTIONS connections, each sending a WS_SIZE-byte text message and waiting for its
#     echo before the next (SIP over WSS is request/answer). Messages/s are reported as req/s;
#   * with a session (protocols `h1s`, `h2s`, the gateway alone): the same h2load load with a
#     signed-in session's `__Host-pbx_session` cookie on every request (made by
#     `proxy_load session` in the gateway's data directory before it starts), so every
#     request is resolved and gets the identity headers; compared with the gateway's own
#     figure without a session measured in the same rounds (runs `h1r`, `h2r`: the same load
#     without the cookie, interleaved A/B with the session runs, the first alternating), so
#     the ratio does not carry the host's drift between the HTTP/1.1 rounds and these;
#   * upstream connections opened per run (upstream nginx stub_status `accepts`): shows
#     keep-alive pool churn when more requests are in flight than the pool keeps idle;
#   * memory: idle RSS right after start, and peak RSS (VmHWM) per run, reset before each run
#     through /proc/PID/clear_refs; nginx figures are master + workers summed;
#   * paired rounds: each round's gateway/nginx ratio (the two ran back to back, at the host's
#     speed of that moment), and the upstream's CPU per request over the gateway's runs, which
#     shows how far the host's speed moved during the run;
#   * machine idle: the share of both CPUs nobody used during a run. Under HTTP/1.1 it, not
#     the proxy's CPU per request, decides most of a run's req/s (docs/benchmarks.md,
#     "HTTP/1.1 decided by where the kernel runs four threads on two CPUs").
#
# Progress goes to stderr; the Markdown report (machine, per-run raw numbers, summary table,
# target check) goes to stdout.
#
# Environment (all optional):
#   ROUNDS=5 DURATION=10 WARMUP=2 CONNECTIONS=32 H2_STREAMS=10 H2LOAD_THREADS=1
#   UPSTREAM_WORKERS=1      nginx worker processes of the upstream
#   UPSTREAM_KEEPALIVE=     idle upstream connections each proxy keeps. Unset: nginx gets
#                           `keepalive 64` (the value nginx's documentation shows) and the
#                           gateway runs on its default (`pool_max_idle_per_host` 512); set:
#                           both get the same number (nginx `keepalive`, gateway
#                           `pool_max_idle_per_host`)
#   GATEWAY_BIN=path        gateway binary (default: target/release/ms365-gateway)
#   GATEWAY_LOG=info        the gateway's --log filter; `warn` turns the access log off
#   PROTOCOLS="h1 h2 ws h1s h2s"  which rows to measure
#   WS_SIZE=600             WebSocket message size in bytes (a SIP INVITE is ~600-1000)
#   PROXY_LOAD_BIN=path     the proxy_load binary (default: built with cargo bench --no-run)
#   BUILD=auto|always|never auto: `cargo build --release` only if the binary is missing
#   KEEP_TMP=1              keep the temporary directory (configs, logs, h2load output)
#   QUIET_PCT=10            before each run, wait until other processes use at most this
#   QUIET_MAX_WAIT=30       much CPU (% of the machine), for at most this many seconds
#   NOISY_PCT=15            repeat a run (at most RETRIES=2 times) when other processes used
#                           more than this during its measured phase
#   NOISE_BUDGET=60         seconds the waiting and repeating may add in total; after that
#                           runs go ahead as they are (and the report says so)
#   DEBUG=1                 log the raw CPU snapshots of each run
# Needs: bash, coreutils, awk, openssl, nginx, h2load (missing packages are installed with
# apt-get when running as root on Debian).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-32}
H2_STREAMS=${H2_STREAMS:-10}
H2LOAD_THREADS=${H2LOAD_THREADS:-1}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
PROTOCOLS=${PROTOCOLS:-h1 h2 ws h1s h2s}
WS_SIZE=${WS_SIZE:-600}
UPSTREAM_KEEPALIVE=${UPSTREAM_KEEPALIVE:-}
NGINX_KEEPALIVE=${UPSTREAM_KEEPALIVE:-64}
BUILD=${BUILD:-auto}
KEEP_TMP=${KEEP_TMP:-0}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_MAX_WAIT=${QUIET_MAX_WAIT:-30}
NOISY_PCT=${NOISY_PCT:-15}
RETRIES=${RETRIES:-2}
NOISE_BUDGET=${NOISE_BUDGET:-60}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
GATEWAY_BIN=${GATEWAY_BIN:-$REPO/target/release/ms365-gateway}
GATEWAY_LOG=${GATEWAY_LOG:-info}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for p in $PROTOCOLS; do [[ $p =~ ^(h1|h2|ws|h1s|h2s)$ ]] || die "PROTOCOLS: '$p' is not h1, h2, ws, h1s or h2s"; done
for v in ROUNDS DURATION WARMUP CONNECTIONS H2_STREAMS H2LOAD_THREADS UPSTREAM_WORKERS NGINX_KEEPALIVE WS_SIZE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for v in QUIET_PCT QUIET_MAX_WAIT NOISY_PCT RETRIES NOISE_BUDGET; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((H2LOAD_THREADS <= CONNECTIONS)) || die "H2LOAD_THREADS must not exceed CONNECTIONS"

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
ensure_tools() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v awk >/dev/null 2>&1 || missing+=(mawk)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing ${missing[*]}; install them (Debian: apt-get install -y ${missing[*]})"
    fi
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
        # nginx-light is gone from newer Debian releases; plain nginx has everything needed.
        apt-get install -y -qq --no-install-recommends "${missing[@]/nginx-light/nginx}" >&2
    fi
}
ensure_tools
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

ensure_gateway() {
    local build=0
    case $BUILD in
        always) build=1 ;;
        auto) [[ -x $GATEWAY_BIN ]] || build=1 ;;
        never) ;;
        *) die "BUILD must be auto, always or never" ;;
    esac
    if ((build)); then
        [[ $GATEWAY_BIN == "$REPO/target/release/ms365-gateway" ]] \
            || die "GATEWAY_BIN=$GATEWAY_BIN does not exist (BUILD only builds the default path)"
        command -v cargo >/dev/null 2>&1 || die "cargo not found; cannot build $GATEWAY_BIN"
        log "building the gateway: cargo build --release (several minutes the first time)"
        (cd "$REPO" && cargo build --release --bin ms365-gateway) >&2
    fi
    [[ -x $GATEWAY_BIN ]] || die "gateway binary $GATEWAY_BIN not found"
    if [[ $GATEWAY_BIN == "$REPO/target/release/ms365-gateway" ]] \
        && [[ -n $(find "$REPO/src" "$REPO/Cargo.toml" "$REPO/Cargo.lock" -newer "$GATEWAY_BIN" -print -quit 2>/dev/null) ]]; then
        log "WARNING: sources are newer than $GATEWAY_BIN; run with BUILD=always to rebuild"
    fi
}
ensure_gateway

ensure_proxy_load() {
    [[ $PROTOCOLS =~ ws|h1s|h2s ]] || return 0
    if [[ -z ${PROXY_LOAD_BIN:-} ]]; then
        log "building the bench helper: cargo bench --bench proxy_load --no-run"
        PROXY_LOAD_BIN=$REPO/$(cd "$REPO" && cargo bench --bench proxy_load --no-run 2>&1 \
            | grep -o '(target/[^)]*proxy_load-[0-9a-f]*)' | tr -d '()' | tail -n1)
    fi
    [[ -x $PROXY_LOAD_BIN ]] || die "proxy_load binary not found (PROXY_LOAD_BIN=$PROXY_LOAD_BIN)"
}
ensure_proxy_load

# ---------------------------------------------------------------------------------------------
# Temporary directory, process bookkeeping, cleanup
# ---------------------------------------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/proxy-bench.XXXXXX")
PIDS=()

# Children of a process (nginx workers), found through /proc so procps is not needed.
children_of() {
    grep -s '^PPid:' /proc/[0-9]*/status | awk -F'[/:[:space:]]+' -v p="$1" '$NF == p {print $3}' || true
}

# Waits until an nginx master has its workers; prints master and worker pids.
nginx_pids() { # master-pid workers
    local i kids
    for ((i = 0; i < 100; i++)); do
        kids=$(children_of "$1")
        (($(wc -w <<<"$kids") >= $2)) && break
        sleep 0.05
    done
    # shellcheck disable=SC2086 # one line, pids separated by spaces
    echo "$1" $kids
}

cleanup() {
    local rc=$? pid i kids=()
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        mapfile -t -O "${#kids[@]}" kids < <(children_of "$pid")
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${PIDS[@]}" "${kids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}" "${kids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if ((rc != 0)); then
        for f in "$T"/gateway.log "$T"/nginx-proxy/error.log "$T"/upstream/error.log; do
            [[ -s $f ]] && { log "--- tail of $f"; tail -n 20 "$f" >&2; }
        done
    fi
    if [[ $KEEP_TMP == 1 ]]; then log "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free loopback port not in the arguments, below the ephemeral range (outgoing connections
# of the load generator and the proxies take ports from there) and unused as a local port.
pick_port() {
    local p taken lo
    lo=$(awk '{print $1; exit}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    ((lo > 12000)) || lo=32768
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (lo - 11000)))
        taken=0
        for q in "$@"; do [[ $p == "$q" ]] && taken=1; done
        ((taken)) && continue
        awk -v hex="$(printf ':%04X' "$p")" 'FNR > 1 && substr($2, length($2) - 4) == hex {f = 1} END {exit !f}' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null && continue
        port_open "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

wait_port() { # port pid what
    local i
    for ((i = 0; i < 300; i++)); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited during start"
        sleep 0.1
    done
    die "$3 did not open port $1"
}

# Status line of a plain-HTTP GET on loopback, without curl.
http_status() { # port path
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$2" >&3
        IFS= read -r line <&3 && printf "%s\n" "${line%$'"'"'\r'"'"'}"' _ "$1" "$2" 2>/dev/null || true
}

# All pids of a proxy: the gateway, or the nginx master and its workers.
proxy_pids() { # name
    case $1 in
        gateway) echo "$GW_PID" ;;
        nginx) echo "$NGX_PIDS" ;;
    esac
}

mem_kib() { # field pid...  (sum of a /proc/PID/status field, KiB)
    local field=$1 sum=0 v pid
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2; exit}' "/proc/$pid/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# mem_kib over all processes of a proxy.
proxy_mem() { # field proxy
    local pids
    read -ra pids <<<"$(proxy_pids "$2")"
    mem_kib "$1" "${pids[@]}"
}

# Reset VmHWM to the current RSS (Linux >= 4.0); returns 1 if not possible.
reset_hwm() {
    local pid ok=0
    for pid in "$@"; do { echo 5 >"/proc/$pid/clear_refs"; } 2>/dev/null && ok=1; done
    ((ok))
}

cpu_ticks() { # pid...  (utime + stime, clock ticks)
    local sum=0 pid t
    for pid in "$@"; do
        t=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        sum=$((sum + t))
    done
    echo "$sum"
}
CLK_TCK=$(getconf CLK_TCK)

median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# ---------------------------------------------------------------------------------------------
# Certificate, upstream, nginx, gateway
# ---------------------------------------------------------------------------------------------
log "work dir $T"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
    -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
chmod 600 "$T/key.pem"

UP_PORT=$(pick_port)
NGX_PORT=$(pick_port "$UP_PORT")
GW_PORT=$(pick_port "$UP_PORT" "$NGX_PORT")
ADMIN_PORT=$(pick_port "$UP_PORT" "$NGX_PORT" "$GW_PORT")
WS_UP_PORT=$(pick_port "$UP_PORT" "$NGX_PORT" "$GW_PORT" "$ADMIN_PORT")
WS_GW_PORT=$(pick_port "$UP_PORT" "$NGX_PORT" "$GW_PORT" "$ADMIN_PORT" "$WS_UP_PORT")

BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')

# Directives shared by both nginx instances: own temp paths (modules nginx-light lacks are
# skipped), unprivileged workers when started as root.
nginx_common() { # dir
    local dir=$1 m
    echo "client_body_temp_path $dir/tmp/body;"
    echo "proxy_temp_path $dir/tmp/proxy;"
    for m in fastcgi uwsgi scgi; do
        "$NGINX" -V 2>&1 | grep -q -- "--without-http_${m}_module" || echo "${m}_temp_path $dir/tmp/$m;"
    done
}
nginx_user() {
    if [[ $(id -u) == 0 ]] && id www-data >/dev/null 2>&1; then echo "user www-data;"; fi
}

start_nginx() { # name config -> sets LAST_PID
    local dir=$T/$1
    "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >&2 || die "$1: nginx -t failed"
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >>"$dir/stdout.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

HAVE_STUB=0
"$NGINX" -V 2>&1 | grep -q -- --with-http_stub_status_module && HAVE_STUB=1
STUB_LOCATION=""
((HAVE_STUB)) && STUB_LOCATION="location = /upstream_status { stub_status; }"
mkdir -p "$T/upstream/tmp" "$T/nginx-proxy/tmp" "$T/data"
cat >"$T/upstream/nginx.conf" <<EOF
$(nginx_user)
worker_processes $UPSTREAM_WORKERS;
daemon off;
pid $T/upstream/nginx.pid;
error_log $T/upstream/error.log warn;
events { worker_connections 4096; }
http {
    $(nginx_common "$T/upstream")
    access_log off;
    default_type text/plain;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        $STUB_LOCATION
        location / { return 200 "$BODY"; }
    }
}
EOF
start_nginx upstream
UP_PID=$LAST_PID
wait_port "$UP_PORT" "$UP_PID" "upstream nginx"
UP_PIDS=$(nginx_pids "$UP_PID" "$UPSTREAM_WORKERS")
if [[ -n ${PROXY_LOAD_BIN:-} ]]; then
    "$PROXY_LOAD_BIN" echo "127.0.0.1:$WS_UP_PORT" >"$T/ws-echo.log" 2>&1 &
    PIDS+=("$!")
    wait_port "$WS_UP_PORT" "$!" "WebSocket echo server"
    UP_PIDS="$UP_PIDS $!" # its CPU counts as the upstream's
fi
[[ $(http_status "$UP_PORT" /) == *" 200 "* ]] || die "upstream does not answer 200"

# nginx >= 1.25.1 wants `http2 on;`; older (Debian 12 has 1.22) `listen ... ssl http2`.
NGX_VERSION=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [[ $(printf '%s\n1.25.1\n' "$NGX_VERSION" | sort -V | head -n1) == 1.25.1 ]]; then
    NGX_LISTEN="listen 127.0.0.1:$NGX_PORT ssl backlog=4096;"
    NGX_HTTP2="http2 on;"
else
    NGX_LISTEN="listen 127.0.0.1:$NGX_PORT ssl http2 backlog=4096;"
    NGX_HTTP2=""
fi

cat >"$T/nginx-proxy/nginx.conf" <<EOF
$(nginx_user)
worker_processes 2;
daemon off;
pid $T/nginx-proxy/nginx.pid;
error_log $T/nginx-proxy/error.log warn;
events { worker_connections 4096; }
http {
    $(nginx_common "$T/nginx-proxy")
    access_log off;
    # No per-connection request cap on either side (nginx defaults to 1000, then closes;
    # the gateway has no such limit), so both proxies keep their connections for the run.
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    upstream ws_backend {
        server 127.0.0.1:$WS_UP_PORT;
    }
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        $NGX_LISTEN
        $NGX_HTTP2
        ssl_certificate $T/cert.pem;
        ssl_certificate_key $T/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location /ws {
            proxy_pass http://ws_backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_read_timeout 300s;
        }
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same forwarding headers the gateway writes.
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header Forwarded "for=\$remote_addr;proto=\$scheme;host=\"\$host\"";
        }
    }
}
EOF
start_nginx nginx-proxy
NGX_PID=$LAST_PID
wait_port "$NGX_PORT" "$NGX_PID" "nginx proxy"
NGX_PIDS=$(nginx_pids "$NGX_PID" 2)

cat >"$T/gateway.toml" <<EOF
data_dir = "$T/data"

[[listener]]
kind = "pbx"
bind = "127.0.0.1:$GW_PORT"
public_url = "https://127.0.0.1:$GW_PORT"
tls_cert = "$T/cert.pem"
tls_key = "$T/key.pem"

[[listener]]
kind = "sbc"
bind = "127.0.0.1:$WS_GW_PORT"
public_url = "https://127.0.0.1:$WS_GW_PORT"
tls_cert = "$T/cert.pem"
tls_key = "$T/key.pem"
upstream = "http://127.0.0.1:$WS_UP_PORT"

[upstream]
url = "http://127.0.0.1:$UP_PORT"
${UPSTREAM_KEEPALIVE:+pool_max_idle_per_host = $UPSTREAM_KEEPALIVE}

[admin]
bind = "127.0.0.1:$ADMIN_PORT"
EOF
for v in $(compgen -e | grep '^MS365GW_' || true); do unset "$v"; done
SESSION_COOKIE=""
if [[ $PROTOCOLS =~ h1s|h2s ]]; then
    SESSION_COOKIE=$("$PROXY_LOAD_BIN" session "$T/data") || die "proxy_load session failed"
fi
(cd "$T" && exec "$GATEWAY_BIN" --log "$GATEWAY_LOG" run --config "$T/gateway.toml") >"$T/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
for ((i = 0; ; i++)); do
    [[ $(http_status "$ADMIN_PORT" /healthz) == *" 200 "* ]] && break
    kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during start"
    ((i < 300)) || die "gateway /healthz did not answer 200"
    sleep 0.1
done
wait_port "$GW_PORT" "$GW_PID" "gateway"
sleep 1 # let both settle before taking idle figures

IDLE_RSS_GW=$(proxy_mem VmRSS gateway)
IDLE_RSS_NGX=$(proxy_mem VmRSS nginx)
log "idle RSS: gateway $((IDLE_RSS_GW / 1024)) MiB, nginx (master+workers) $((IDLE_RSS_NGX / 1024)) MiB"

# Connections the upstream has accepted so far (0 without stub_status).
upstream_accepts() {
    if ((HAVE_STUB)); then
        timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
            printf "GET /upstream_status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3; cat <&3' _ "$UP_PORT" \
            | awk 'f {print $1; exit} /accepts/ {f = 1}'
    else
        echo 0
    fi
}

port_of() { case $1 in gateway) echo "$GW_PORT" ;; nginx) echo "$NGX_PORT" ;; esac; }
# What a protocol's load is sent to.
url_of() { # proxy proto
    if [[ $2 == ws ]]; then
        case $1 in gateway) echo "wss://127.0.0.1:$WS_GW_PORT/ws" ;; nginx) echo "wss://127.0.0.1:$NGX_PORT/ws" ;; esac
    else
        echo "https://127.0.0.1:$(port_of "$1")/"
    fi
}

# Smoke test: both proxies answer 200 with the 1 KiB body over the protocol asked for.
smoke() { # proxy proto
    local out alpn want args=(-n 4 -c 1)
    [[ $2 == h1 ]] && { args+=(--h1); want=http/1.1; } || want=h2
    out=$(h2load "${args[@]}" "https://127.0.0.1:$(port_of "$1")/" 2>&1) || die "$1/$2: h2load failed: $out"
    grep -q 'status codes: 4 2xx' <<<"$out" || die "$1/$2: not 4x 2xx: $out"
    grep -qE '\(4096\) data' <<<"$out" || die "$1/$2: body is not 1 KiB: $out"
    alpn=$(awk -F': ' '/^Application protocol/ {print $2}' <<<"$out")
    [[ $alpn == "$want" ]] || die "$1/$2: negotiated '$alpn', wanted $want"
    awk -F': ' '/^(TLS Protocol|Cipher)/ {s = s (s ? " " : "") $2} END {print s}' <<<"$out"
}
declare -A TLS_INFO
for p in nginx gateway; do for proto in h1 h2; do TLS_INFO[$p]=$(smoke "$p" "$proto"); done; done
# The session cookie resolves: the gateway's own session endpoint answers 200 with it.
if [[ -n $SESSION_COOKIE ]]; then
    out=$(h2load -n 1 -c 1 --h1 -H "cookie: __Host-pbx_session=$SESSION_COOKIE" \
        "https://127.0.0.1:$GW_PORT/ms365/session" 2>&1) || die "session check: h2load failed: $out"
    grep -q 'status codes: 1 2xx' <<<"$out" || die "the bench session does not resolve: $out"
fi
# Smoke test of the WebSocket path: a short load without errors and with echoes.
if [[ " $PROTOCOLS " == *" ws "* ]]; then
    for p in nginx gateway; do
        out=$("$PROXY_LOAD_BIN" load "$(url_of "$p" ws)" --ca "$T/cert.pem" -c 2 -D 0.5 --warm-up-time 0 --size "$WS_SIZE" 2>&1) \
            || die "$p/ws: proxy_load failed: $out"
        grep -q ' 0 errored' <<<"$out" || die "$p/ws: errors: $out"
        grep -qE '^requests: [1-9]' <<<"$out" || die "$p/ws: no message echoed: $out"
    done
fi

# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------
RAW=$T/raw.tsv
printf 'round\tproxy\tproto\trps\tp50_us\tp99_us\tmean_us\trequests\terrors\tpeak_rss_kib\tcpu_us_per_req\tupstream_conns\th2load_cpu_pct\tother_cpu_pct\tupstream_cpu_us_per_req\tmachine_idle_pct\n' >"$RAW"
HWM_RESET=1
NCPU=$(nproc)

# Busy ticks of the whole machine (all CPUs) from /proc/stat.
sys_busy() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
now_ns() { date +%s%N; }

# One CPU snapshot: time, proxy, upstream, load generator, whole machine.
snapshot() { # h2load-pid proxy-pids...
    local h=$1
    shift
    # shellcheck disable=SC2086
    echo "$(now_ns) $(cpu_ticks "$@") $(cpu_ticks $UP_PIDS) $(cpu_ticks "$h") $(sys_busy)"
}

# Seconds of NOISE_BUDGET left: elapsed time beyond what the runs kept so far needed.
RUNS_KEPT=0
noise_budget_left() {
    echo $((NOISE_BUDGET - ($(date +%s) - START - RUNS_KEPT * (WARMUP + DURATION + 2))))
}

# Waits (at most QUIET_MAX_WAIT s) until the machine is quiet apart from our idle processes.
wait_quiet() {
    local waited=0 b0 b1 pct
    while :; do
        (($(noise_budget_left) > 0)) || return 0
        b0=$(sys_busy)
        sleep 1
        b1=$(sys_busy)
        pct=$(((b1 - b0) * 100 / CLK_TCK / NCPU))
        ((pct <= QUIET_PCT)) && return 0
        if ((waited >= QUIET_MAX_WAIT)); then
            log "machine still busy (${pct}% CPU) after ${waited}s; running anyway"
            return 0
        fi
        ((waited == 0)) && log "machine busy (${pct}% CPU used by other processes); waiting up to ${QUIET_MAX_WAIT}s"
        sleep 1
        waited=$((waited + 2))
    done
}

# One measured run; appends a line to $RAW. Returns 1 (without appending) when other
# processes used more than NOISY_PCT of the machine and the caller may repeat it.
run_one() { # round proxy proto may-retry
    local round=$1 proxy=$2 proto=$3 may_retry=$4 pids out logf args hpid rps done_ errors p50 p99 mean hwm a0 a1 conns s0 s1 cpu h2cpu other
    pids=$(proxy_pids "$proxy")
    out=$T/h2load-$proxy-$proto-$round.txt
    logf=$T/latency-$proxy-$proto-$round.log
    args=(-c "$CONNECTIONS" -t "$H2LOAD_THREADS" -D "$DURATION" --warm-up-time "$WARMUP" --log-file "$logf")
    case $proto in
        h1 | h1s | h1r) args+=(--h1 -m 1) ;;
        *) args+=(-m "$H2_STREAMS") ;;
    esac
    [[ $proto == h?s ]] && args+=(-H "cookie: __Host-pbx_session=$SESSION_COOKIE")
    # shellcheck disable=SC2086
    reset_hwm $pids || HWM_RESET=0
    a0=$(upstream_accepts)
    if [[ $proto == ws ]]; then
        "$PROXY_LOAD_BIN" load "$(url_of "$proxy" ws)" --ca "$T/cert.pem" -c "$CONNECTIONS" -D "$DURATION" \
            --warm-up-time "$WARMUP" --size "$WS_SIZE" --log-file "$logf" >"$out" 2>&1 &
    else
        h2load "${args[@]}" "$(url_of "$proxy" "$proto")" >"$out" 2>&1 &
    fi
    hpid=$!
    # CPU is sampled inside the measured phase only (after the warm-up, 0.3 s margins).
    sleep "$(awk -v w="$WARMUP" 'BEGIN {print w + 0.3}')"
    # shellcheck disable=SC2086
    s0=$(snapshot "$hpid" $pids)
    sleep "$(awk -v d="$DURATION" 'BEGIN {print (d > 1 ? d - 0.6 : d / 2)}')"
    # shellcheck disable=SC2086
    s1=$(snapshot "$hpid" $pids)
    if [[ -n ${DEBUG:-} ]]; then log "snapshots: $s0 / $s1"; fi
    wait "$hpid" || die "h2load failed, see $out"
    a1=$(upstream_accepts)
    conns=$((a1 > a0 ? a1 - a0 - 1 : 0)) # the second status request is one of them
    ((HAVE_STUB)) || conns=n/a
    # shellcheck disable=SC2086
    hwm=$(mem_kib VmHWM $pids)
    rps=$(awk '/^finished in/ {print $4; exit}' "$out")
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    done_=$(awk '/^requests:/ {print $6; exit}' "$out")
    errors=$(awk '/^requests:/ {print $10; exit}' "$out")
    # non-2xx answers count as errors too
    errors=$((errors + $(awk '/^status codes:/ {print $5 + $7 + $9; exit}' "$out")))
    [[ -n $rps && -n $done_ ]] || die "cannot parse $out"
    # Per-request latency, 3rd column of the log file, microseconds; nearest-rank percentiles.
    read -r p50 p99 mean < <(cut -f3 "$logf" | sort -n | awk '
        {v[NR] = $1; s += $1}
        END {
            if (NR == 0) { print "nan nan nan"; exit }
            i50 = int(0.50 * NR); if (i50 < 0.50 * NR) i50++
            i99 = int(0.99 * NR); if (i99 < 0.99 * NR) i99++
            printf "%d %d %.0f\n", v[i50], v[i99], s / NR
        }')
    # proxy CPU per request; h2load CPU (% of one core); CPU used by anything else on the
    # machine (% of all cores: background noise, should be ~0).
    # Also, for the progress log: upstream and h2load CPU per request and the machine's idle
    # share, which tell a proxy that costs more CPU from one that leaves the cores waiting.
    read -r cpu h2cpu other upcpu gencpu idle < <(awk -v a="$s0" -v b="$s1" -v hz="$CLK_TCK" -v rps="$rps" -v n="$NCPU" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        secs = (y[1] - x[1]) / 1e9
        proxy = (y[2] - x[2]) / hz; up = (y[3] - x[3]) / hz; gen = (y[4] - x[4]) / hz; all = (y[5] - x[5]) / hz
        o = (all - proxy - up - gen) / secs / n * 100; if (o < 0) o = 0
        idle = 100 - all / secs / n * 100; if (idle < 0) idle = 0
        per = (rps > 0 ? 1e6 / secs / rps : 0)
        printf "%.1f %.0f %.0f %.1f %.1f %.0f\n", proxy * per, gen / secs * 100, o, up * per, gen * per, idle
    }')
    rm -f "$logf"
    if ((may_retry && other > NOISY_PCT && $(noise_budget_left) > 0)); then
        log "round $round $proto $proxy: other processes used ${other}% CPU during the run; repeating it ($rps req/s discarded)"
        return 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$proxy" "$proto" "$rps" "$p50" "$p99" "$mean" \
        "$done_" "$errors" "$hwm" "$cpu" "$conns" "$h2cpu" "$other" "$upcpu" "$idle" >>"$RAW"
    log "round $round $proto $proxy: $rps req/s, p50 ${p50}us, p99 ${p99}us, errors $errors, peak RSS $((hwm / 1024)) MiB," \
        "proxy CPU ${cpu}us/req, upstream conns opened $conns, h2load CPU ${h2cpu}%, other CPU ${other}%," \
        "upstream CPU ${upcpu}us/req, h2load CPU ${gencpu}us/req, machine idle ${idle}%"
}

START=$(date +%s)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load: {${PROTOCOLS// /,}} x $ROUNDS rounds x {nginx,gateway}, ${WARMUP}s warm-up + ${DURATION}s each"
REPEATED=0
# All HTTP/1.1 rounds first, so the HTTP/1.1 peak RSS is not inflated by the HTTP/2 load
# (freed memory is not necessarily returned to the OS).
for proto in $PROTOCOLS; do
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order=(nginx gateway); else order=(gateway nginx); fi
        # nginx has no sessions to compare with: a session run is paired with the gateway's
        # run of the same load without the cookie (proto h1r/h2r).
        if [[ $proto == h?s ]]; then
            if ((r % 2)); then order=(gateway:ref gateway); else order=(gateway gateway:ref); fi
        fi
        for entry in "${order[@]}"; do
            proxy=${entry%%:*}
            run_proto=$proto
            [[ $entry == *:ref ]] && run_proto=${proto%s}r
            for ((attempt = 0; ; attempt++)); do
                wait_quiet
                run_one "$r" "$proxy" "$run_proto" $((attempt < RETRIES)) && break
                REPEATED=$((REPEATED + 1))
            done
            RUNS_KEPT=$((RUNS_KEPT + 1))
        done
    done
done
ELAPSED=$(($(date +%s) - START))
((HWM_RESET)) || log "WARNING: could not reset VmHWM; peak RSS is over the whole process life"

for p in gateway nginx; do kill -0 "$(proxy_pids "$p" | cut -d' ' -f1)" 2>/dev/null || die "$p died during the run"; done
END_RSS_GW=$(proxy_mem VmRSS gateway)
END_RSS_NGX=$(proxy_mem VmRSS nginx)
LIFE_HWM_GW=$(proxy_mem VmHWM gateway)

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
col() { # proxy proto column-name -> values, one per round
    awk -F'\t' -v p="$1" -v q="$2" -v c="$3" '
        NR == 1 {for (i = 1; i <= NF; i++) idx[$i] = i; next}
        $2 == p && $3 == q {print $idx[c]}' "$RAW"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "n/a"}'; }

GW_VERSION=$("$GATEWAY_BIN" version 2>/dev/null || echo "ms365-gateway ?")
cat <<EOF
## Proxy benchmark run

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- load average before the load phase: $LOADAVG_START
- machine: $(nproc) CPUs, $(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)
- software: $GW_VERSION (\`--log $GATEWAY_LOG\`), nginx $NGX_VERSION (upstream: $UPSTREAM_WORKERS worker, proxy: 2 workers), $(h2load --version 2>&1 | head -n1)
- TLS: nginx: ${TLS_INFO[nginx]:-?}; gateway: ${TLS_INFO[gateway]:-?} (P-256 self-signed certificate, same for both)
- WebSocket: \`proxy_load -c $CONNECTIONS --size $WS_SIZE\`, one message in flight per connection, echoed by bench/proxy_load.rs behind both proxies
- load: \`h2load -c $CONNECTIONS -t $H2LOAD_THREADS -D $DURATION --warm-up-time $WARMUP\`, h1: \`--h1 -m 1\`, h2: \`-m $H2_STREAMS\`; $ROUNDS rounds, interleaved A/B (first proxy alternates); load phase took ${ELAPSED}s ($REPEATED runs repeated because other processes were busy)
- response: 1 KiB body from an upstream nginx over keep-alive HTTP/1.1; idle upstream connections kept: nginx \`keepalive $NGINX_KEEPALIVE\`, gateway ${UPSTREAM_KEEPALIVE:+\`pool_max_idle_per_host = $UPSTREAM_KEEPALIVE\`}${UPSTREAM_KEEPALIVE:-its default (512)}

### Per run

| round | protocol | proxy | req/s | p50 ms | p99 ms | mean ms | errors | peak RSS MiB | proxy CPU µs/req | upstream conns opened | h2load CPU % | other CPU % | machine idle % |
|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
tail -n +2 "$RAW" | while IFS=$'\t' read -r round proxy proto rps p50 p99 mean _ errors hwm cpu conns h2cpu other _ idle; do
    printf '| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$round" "$proto" "$proxy" "$rps" \
        "$(ms "$p50")" "$(ms "$p99")" "$(ms "$mean")" "$errors" "$(mib "$hwm")" "$cpu" "$conns" "$h2cpu" "$other" "$idle"
done

cat <<EOF

### Summary (median over $ROUNDS rounds)

| protocol | proxy | req/s | req/s min–max | p50 ms | p99 ms | peak RSS MiB | proxy CPU µs/req | upstream conns opened per run | h2load CPU % | machine idle % | errors | req/s gateway/nginx | p99 gateway/nginx |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
declare -A MED_RPS MED_P99
proto_label() {
    case $1 in
        h1) echo "HTTP/1.1" ;;
        h2) echo "HTTP/2" ;;
        ws) echo "WebSocket ($WS_SIZE B echo)" ;;
        h1s) echo "HTTP/1.1, session cookie" ;;
        h2s) echo "HTTP/2, session cookie" ;;
        h1r) echo "HTTP/1.1, no session (paired with the session runs)" ;;
        h2r) echo "HTTP/2, no session (paired with the session runs)" ;;
    esac
}
for listed in $PROTOCOLS; do
    rows=("nginx $listed" "gateway $listed")
    # A session row comes after the no-session runs it is paired with.
    [[ $listed == h?s ]] && rows=("gateway ${listed%s}r" "gateway $listed")
    for row in "${rows[@]}"; do
        read -r proxy proto <<<"$row"
        rps=$(col "$proxy" "$proto" rps | median)
        lo=$(col "$proxy" "$proto" rps | sort -g | head -n1)
        hi=$(col "$proxy" "$proto" rps | sort -g | tail -n1)
        p50=$(col "$proxy" "$proto" p50_us | median)
        p99=$(col "$proxy" "$proto" p99_us | median)
        peak=$(col "$proxy" "$proto" peak_rss_kib | sort -g | tail -n1)
        cpu=$(col "$proxy" "$proto" cpu_us_per_req | median)
        errs=$(col "$proxy" "$proto" errors | awk '{s += $1} END {print s + 0}')
        conns=$(col "$proxy" "$proto" upstream_conns | median)
        [[ $conns == n/a || $conns == nan ]] || conns=$(printf '%.0f' "$conns")
        h2cpu=$(printf '%.0f' "$(col "$proxy" "$proto" h2load_cpu_pct | median)")
        idle=$(printf '%.0f' "$(col "$proxy" "$proto" machine_idle_pct | median)")
        MED_RPS[$proxy$proto]=$rps
        MED_P99[$proxy$proto]=$p99
        rr=""
        pr=""
        if [[ $proto == h?s ]]; then
            # Against the gateway without a session in the same rounds, not against nginx.
            rr="$(ratio "$rps" "${MED_RPS[gateway${proto%s}r]:-0}")× of no session"
            pr="$(ratio "$p99" "${MED_P99[gateway${proto%s}r]:-0}")× of no session"
        elif [[ $proxy == gateway && $proto != h?r ]]; then
            rr="$(ratio "$rps" "${MED_RPS[nginx$proto]}")×"
            pr="$(ratio "$p99" "${MED_P99[nginx$proto]}")×"
        fi
        label=$(proto_label "$proto")
        printf '| %s | %s | %.0f | %.0f–%.0f | %s | %s | %s | %.1f | %s | %s | %s | %s | %s | %s |\n' "$label" "$proxy" "$rps" "$lo" "$hi" \
            "$(ms "$p50")" "$(ms "$p99")" "$(mib "$peak")" "$cpu" "$conns" "$h2cpu" "$idle" "$errs" "$rr" "$pr"
    done
done

# Per round: A's req/s over B's, the two runs back to back. A ratio of medians compares runs
# minutes apart; a pair shares the host's speed of the moment, which drifts between rounds.
paired() { # proxyA protoA proxyB protoB -> one ratio per round
    awk -F'\t' -v pa="$1" -v qa="$2" -v pb="$3" -v qb="$4" '
        NR == 1 {next}
        $2 == pa && $3 == qa {a[$1] = $4}
        $2 == pb && $3 == qb {b[$1] = $4}
        END {for (r in a) if (r in b && b[r] > 0) printf "%.3f\n", a[r] / b[r]}' "$RAW"
}
spread() { # values on stdin -> "median (min–max)"
    local v
    v=$(sort -g)
    [[ -n $v ]] || { echo "n/a"; return; }
    printf '%.3f (%.3f–%.3f)' "$(median <<<"$v")" "$(head -n1 <<<"$v")" "$(tail -n1 <<<"$v")"
}
upstream_cpu_range() { # proto... -> "min max" of the upstream's CPU per request, gateway runs
    local proto
    for proto in "$@"; do col gateway "$proto" upstream_cpu_us_per_req; done |
        sort -g | sed -n '1p;$p' | paste -sd' '
}
declare -A PAIRED
cat <<EOF

### Paired rounds

Each round runs the two back to back, so their ratio shares the host's speed of that moment.
Behind the gateway the upstream does the same work for every request of a protocol, so its
CPU per request over the gateway's runs shows how far the host's speed moved during the run
(behind nginx it also pays for the connections nginx's pool opens).

| protocol | gateway/nginx req/s per round: median (min–max) | upstream CPU µs/req over the gateway's runs: min–max |
|---|---:|---:|
EOF
for proto in $PROTOCOLS; do
    if [[ $proto == h?s ]]; then
        pr=$(paired gateway "$proto" gateway "${proto%s}r" | spread)
        read -r lo hi <<<"$(upstream_cpu_range "$proto" "${proto%s}r")"
        label="$(proto_label "$proto"), of no session"
    else
        pr=$(paired gateway "$proto" nginx "$proto" | spread)
        read -r lo hi <<<"$(upstream_cpu_range "$proto")"
        label=$(proto_label "$proto")
    fi
    PAIRED[$proto]=${pr%% *}
    printf '| %s | %s× | %s–%s (%s×) |\n' "$label" "$pr" "$lo" "$hi" "$(ratio "$hi" "$lo")"
done

OTHER_MAX=$(tail -n +2 "$RAW" | cut -f14 | sort -g | tail -n1)
cat <<EOF

Peak RSS is the largest per-run VmHWM of that protocol's runs (reset before each run; the HTTP/1.1 rounds run first$( ((HWM_RESET)) || echo ": reset NOT possible here, so it is the lifetime peak")). CPU other than the proxies, the upstream and h2load during the measured phases: at most ${OTHER_MAX}% of the machine$(awk -v o="$OTHER_MAX" -v n="$NOISY_PCT" 'BEGIN {if (o > n) print " -- **the machine was not idle; treat the numbers with care**"}').

Memory: idle RSS right after start: gateway $(mib "$IDLE_RSS_GW") MiB, nginx $(mib "$IDLE_RSS_NGX") MiB (master + 2 workers, shared pages counted in each). After the load: gateway $(mib "$END_RSS_GW") MiB, nginx $(mib "$END_RSS_NGX") MiB; gateway peak over its whole life $(mib "$LIFE_HWM_GW") MiB.

### Targets

EOF
verdict() { awk -v v="$1" -v lim="$2" -v op="$3" 'BEGIN {ok = (op == ">=") ? (v >= lim) : (v <= lim); print ok ? "met" : "**not met**"}'; }
head_row="| target |"
rule="|---|"
rps_row="| req/s (WebSocket: messages/s) ≥ 1.0× nginx |"
p99_row="| p99 ≤ 1.2× nginx |"
session_lines=""
for proto in $PROTOCOLS; do
    if [[ $proto == h?s ]]; then
        r=$(ratio "${MED_RPS[gateway$proto]}" "${MED_RPS[gateway${proto%s}r]:-0}")
        session_lines+="With a session cookie on every request ($(proto_label "${proto%s}")): ${r}× of the figure without in the same rounds (paired rounds: ${PAIRED[$proto]}×), target ≥ 0.95×: $(verdict "$r" 0.95 '>=')."$'\n'
        continue
    fi
    head_row+=" $(proto_label "$proto") |"
    rule+="---|"
    r=$(ratio "${MED_RPS[gateway$proto]}" "${MED_RPS[nginx$proto]}")
    q=$(ratio "${MED_P99[gateway$proto]}" "${MED_P99[nginx$proto]}")
    rps_row+=" ${r}× $(verdict "$r" 1.0 '>=') (paired rounds: ${PAIRED[$proto]}×) |"
    p99_row+=" ${q}× $(verdict "$q" 1.2 '<=') |"
done
printf '%s\n%s\n%s\n%s\n' "$head_row" "$rule" "$rps_row" "$p99_row"
[[ -z $session_lines ]] || printf '\n%s' "$session_lines"
idle_mb=$(awk -v k="$IDLE_RSS_GW" 'BEGIN {printf "%.1f", k * 1024 / 1e6}')
echo
echo "Gateway idle RSS < 30 MB: $(mib "$IDLE_RSS_GW") MiB = ${idle_mb} MB, $(verdict "$idle_mb" 29.999 '<=')."
log "done (load phase ${ELAPSED}s)"
