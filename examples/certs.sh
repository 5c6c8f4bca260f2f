#!/usr/bin/env bash
# Creates everything examples/dev.toml and examples/production.toml need, in
# examples/certs/ (private keys 0600):
#
#   ca.crt/ca.key          a private CA (production.toml verifies clients with it)
#   server.crt/server.key  the server, for localhost and 127.0.0.1, signed by the CA
#   admin.crt/admin.key    the admin client, signed by the CA
#   app.crt/app.key        an application client (policy my-app), signed by the CA
#   seal.key               a 256-bit key sealing stored keys at rest (base64)
#
# and the directories the plugins are granted (examples/data/{keys,audit}).
# Prints the environment variables the configs read. Needs openssl.
#
#   examples/certs.sh && eval "$(examples/certs.sh --env)"
set -euo pipefail
cd "$(dirname "$0")"
umask 077

identity() {
    # KES identity: hex SHA-256 of the certificate's DER SubjectPublicKeyInfo.
    openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1
}

if [ "${1:-}" = "--env" ]; then
    echo "export KEYWARD_ADMIN_IDENTITY=$(identity certs/admin.crt)"
    echo "export KEYWARD_APP_IDENTITY=$(identity certs/app.crt)"
    exit 0
fi

mkdir -p certs data/keys data/audit
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f certs/ca.key ]; then
    ec certs/ca.key
    openssl req -x509 -new -key certs/ca.key -days 365 -subj /CN=keyward-example-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -out certs/ca.crt
fi

# sign NAME CN EXTENSIONS
sign() {
    [ -f "certs/$1.crt" ] && return
    ec "certs/$1.key"
    openssl req -new -key "certs/$1.key" -subj "/CN=$2" -out "certs/$1.csr"
    openssl x509 -req -in "certs/$1.csr" -CA certs/ca.crt -CAkey certs/ca.key -CAcreateserial \
        -days 365 -extfile <(printf '%s\n' "$3") -out "certs/$1.crt" 2>/dev/null
    rm -f "certs/$1.csr"
}
sign server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
sign admin keyward-admin "extendedKeyUsage=clientAuth"
sign app my-app "extendedKeyUsage=clientAuth"

[ -f certs/seal.key ] || head -c 32 /dev/urandom | base64 > certs/seal.key

echo "examples/certs ready. Now:"
echo "  $(identity certs/admin.crt | sed 's/^/export KEYWARD_ADMIN_IDENTITY=/')"
echo "  $(identity certs/app.crt | sed 's/^/export KEYWARD_APP_IDENTITY=/')"
