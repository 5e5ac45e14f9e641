# Shared set-up of the benchmarks (sourced by scripts/bench, bench-restore, bench-memory):
# builds vault (release), starts the S3 test server (Garage) and moto's S3 server
# ($moto_endpoint, bucket bench-moto) and a PostgreSQL cluster in a private work directory
# removed on exit, loads $rows_m million rows of realistic, partly compressible data into
# database `bench`, creates an identity, and defines
#   write_config FILE PREFIX LEVEL [THREADS [ENDPOINT BUCKET]]   a vault config (default: Garage)
#   time_cmd NAME CMD...                       appends "NAME seconds maxrss_kib garage_ticks" to $work/times
# Expects: rows_m; the caller has cd'ed to the repository root.
scripts/install-test-deps >/dev/null
command -v aws >/dev/null 2>&1 || pip install --quiet awscli
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${VAULT_TOOLS_DIR:-/var/cache/vault-tools}/target}
cargo build --release --quiet
vault="$CARGO_TARGET_DIR/release/vault"

work=$(mktemp -d /tmp/vault-bench-XXXXXX)
chmod 755 "$work"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg=(); [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
moto_pid=
cleanup() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  scripts/s3-test-server stop "$work/s3" || true
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

scripts/s3-test-server start "$work/s3" 2>/dev/null
. "$work/s3/env"

# moto's S3 server: a second, slower S3 implementation (uploads back up into vault's
# buffers there, which is what its memory is measured against).
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${VAULT_TOOLS_DIR:-/var/cache/vault-tools}/moto/bin/moto_server" -H 127.0.0.1 -p "$moto_port" \
  > "$work/moto.log" 2>&1 &
moto_pid=$!
moto_endpoint="http://127.0.0.1:$moto_port"
for _ in $(seq 1 100); do
  aws --endpoint-url "$moto_endpoint" s3 mb s3://bench-moto >/dev/null 2>&1 && break
  sleep 0.2
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/pg"; [ "$(id -u)" -eq 0 ] && chown postgres "$work/pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=256MB" start >/dev/null
url="postgresql://postgres@127.0.0.1:$port/bench"
psql -X -q -d "postgresql://postgres@127.0.0.1:$port/postgres" -c "CREATE DATABASE bench"

load_rows() { # $1 = first id, $2 = count
  psql -X -q -d "$url" -c "
    INSERT INTO events
    SELECT g,
           timestamptz '2026-01-01' + (g % 31536000) * interval '1 second',
           'user_' || (g % 50000),
           (array['login','logout','purchase','refund','view','search'])[1 + g % 6],
           round((random() * 10000)::numeric, 2),
           md5(g::text),
           'order ' || g || ' for customer ' || (g % 50000) || ': ' ||
             (array['shipped to', 'returned from', 'billed to', 'held at'])[1 + g % 4] ||
             ' city_' || (random() * 5000)::int || ', ref ' || md5(random()::text) ||
             repeat(' item', 1 + g % 3),
           jsonb_build_object('k', g % 100, 'tag', 'tag' || g % 37, 'score', (random() * 100)::int)
    FROM generate_series($1, $1 + $2 - 1) g"
}
psql -X -q -d "$url" -c "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, username text,
  kind text, amount numeric(12,2), token text, body text, attrs jsonb)"
rows=$((rows_m * 1000000))
load_rows 1 "$rows"
psql -X -q -d "$url" -c "VACUUM ANALYZE events"

identity="$work/identity.txt"
recipient=$("$vault" keygen --output "$identity" 2>/dev/null)
signing_key="$work/signing.key"
"$vault" keygen --signing --output "$signing_key" >/dev/null 2>&1
write_config() { # $1 = file, $2 = prefix, $3 = level, $4 = threads, $5 = endpoint, $6 = bucket
  cat > "$1" <<TOML
[source]
url = "$url"
[repository]
url = "s3://${6:-$VAULT_TEST_S3_BUCKET}/$2"
endpoint = "${5:-$VAULT_TEST_S3_ENDPOINT}"
region = "us-east-1"
[encryption]
recipients = ["$recipient"]
identity_file = "$identity"
[signing]
key_file = "$signing_key"
[compression]
level = $3
threads = ${4:-0}
TOML
}
# The S3 server shares the two cores: record the CPU it spends on each run too.
garage_pid=$(cat "$work/s3/garage.pid")
garage_cpu() { awk '{print $14 + $15}' "/proc/$garage_pid/stat"; }
# time_cmd NAME CMD...: appends "NAME seconds maxrss_kib garage_cpu_ticks" to $work/times
time_cmd() {
  local name=$1; shift
  local before; before=$(garage_cpu)
  /usr/bin/time -f "%e %M" -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  echo "$name $(cat "$work/t") $(( $(garage_cpu) - before ))" >> "$work/times"
}
