#!/usr/bin/env bash
# Sourced by hack/kafka.sh and hack/redis.sh: local TLS material for a loopback server.
#
# make_tls DIR NAME   once per DIR: a CA (ca.crt, ca.key) and a server certificate for 127.0.0.1
#                     and localhost signed by it (server.crt, server.key in PKCS#8), EC P-256,
#                     valid 30 days. Returns 1 (with a message) when openssl is missing or fails.

make_tls() {
  local dir="$1" name="$2"
  [[ -f "$dir/server.crt" ]] && return 0
  if ! command -v openssl >/dev/null 2>&1; then
    echo "TLS needs openssl (Debian: apt-get install -y openssl)." >&2
    return 1
  fi
  mkdir -p "$dir"
  (
    cd "$dir"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj "/CN=$name local CA" -keyout ca.key -out ca.crt 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out server.key 2>/dev/null
    openssl req -new -key server.key -subj "/CN=127.0.0.1" -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile san.ext -out server.crt 2>/dev/null
    rm -f server.csr san.ext
    chmod 644 ca.crt server.crt
  ) || { echo "could not make the TLS certificates in $dir." >&2; return 1; }
}
