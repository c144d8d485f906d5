#!/usr/bin/env bash
# A big Markdown import through HTTP, and its Markdown export: wall time
# and the server's peak RSS (VmHWM) for each, one `quire serve` per step so
# each peak is its own.
#
# Usage: bench/scripts/import-http.sh [MEGABYTES] [QUIRE_BINARY]
#   MEGABYTES     size of the generated Markdown file (default 20)
#   QUIRE_BINARY  default: $CARGO_TARGET_DIR/release/quire or target/release/quire
# Build first: cargo build --release -p quire-server --bin quire
# Prints a Markdown table; bench/results/import-http.md holds a run.
set -euo pipefail

mb=${1:-20}
bin=${2:-${CARGO_TARGET_DIR:-target}/release/quire}
[ -x "$bin" ] || { echo "no quire binary at $bin" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

# A document with every kind of block and mark, repeated to the size.
python3 - "$mb" > "$work/big.md" <<'PY'
import sys
target = int(sys.argv[1]) * 1024 * 1024
section = """## Section {n}

Paragraph {n} with **bold**, *italic*, ~~struck~~, <u>underlined</u>, `code` and a [link](https://example.com/{n}).
It goes on over a second line, as text does.

- first point of {n}
- second point
  1. nested one
  2. nested two

> A quotation in section {n}.

```rust
fn section_{n}() -> u32 {{ {n} }}
```

"""
out, n, size = [], 0, 0
while size < target:
    s = section.format(n=n)
    out.append(s)
    size += len(s.encode())
    n += 1
sys.stdout.write("".join(out))
PY
bytes=$(stat -c %s "$work/big.md")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_server() {
    QUIRE_LOG=warn "$bin" --data "$work/data" serve --addr "127.0.0.1:$port" &
    pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return
        sleep 0.1
    done
    echo "server did not start" >&2; exit 1
}
stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }

start_server
idle=$(kb VmRSS)
import=$(curl -s -o "$work/import.json" -w '%{http_code} %{time_total}' -X PUT \
    -H 'Content-Type: text/markdown; charset=utf-8' --data-binary @"$work/big.md" \
    "http://127.0.0.1:$port/api/docs/big/snapshot")
import_peak=$(kb VmHWM)
import_after=$(kb VmRSS)
stop_server

start_server
export=$(curl -s -o "$work/out.md" -w '%{http_code} %{time_total}' \
    "http://127.0.0.1:$port/api/docs/big/snapshot?format=markdown")
export_peak=$(kb VmHWM)
stop_server
stored=$(du -sk "$work/data" | cut -f1)
out_bytes=$(stat -c %s "$work/out.md")
blocks=$(grep -c '^## Section' "$work/out.md" || true)

echo "| step | HTTP | seconds | server RSS before → peak (MiB) |"
echo "|---|---|---|---|"
printf '| PUT %s MiB Markdown (%s bytes) | %s | %s | %d → %d (after: %d) |\n' \
    "$mb" "$bytes" "${import%% *}" "${import#* }" $((idle / 1024)) $((import_peak / 1024)) $((import_after / 1024))
printf '| GET ?format=markdown, cold (%s bytes, %s sections) | %s | %s | → %d |\n' \
    "$out_bytes" "$blocks" "${export%% *}" "${export#* }" $((export_peak / 1024))
echo
echo "Stored: $((stored / 1024)) MiB on disk. Import answer: $(cat "$work/import.json")"
