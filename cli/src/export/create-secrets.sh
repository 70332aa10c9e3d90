#!/usr/bin/env bash
# Creates the Secrets this base refers to by name, with a new CA, certificates, signing key and
# passwords, in the current namespace; kubectl's own flags pass through:
#
#   ./create-secrets.sh -n userctl                  # then: kubectl apply -k . -n userctl
#   ./create-secrets.sh --dry-run=client -o yaml    # print them instead (to seal or vault them)
#
# Nothing secret is written into this directory: the keys are made in a private temporary
# directory, removed on exit. Run it once per namespace; it fails on a Secret that exists
# (delete them to start over: a new Postgres password does not change an existing database's).
# Needs openssl, kubectl and the standard shell tools (awk, tail, tr, date).
set -euo pipefail

for tool in openssl kubectl; do
  command -v "$tool" >/dev/null || { echo "create-secrets.sh: $tool is needed" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"
cd "$work"
umask 077

# The stack's CA signs a certificate per service; each is checked by its name, as `userctl up`
# issues them (ECDSA P-256; the store and cache serve and call, the gateway only calls).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
cat >ca.cnf <<'CNF'
[req]
distinguished_name = dn
x509_extensions = ca
prompt = no
[dn]
CN = userctl stack CA
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, digitalSignature
subjectKeyIdentifier = hash
CNF
openssl req -x509 -new -key ca.key -config ca.cnf -days 825 -out ca.crt 2>/dev/null

issue() {
  local name=$1 usages=$2
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr" 2>/dev/null
  printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = $usages" "subjectAltName = DNS:$name" \
    "authorityKeyIdentifier = keyid" "subjectKeyIdentifier = hash" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
}
issue store serverAuth,clientAuth
issue cache serverAuth,clientAuth
issue gateway clientAuth

# The gateway's signing key set, as `userctl up` makes it (signing-keys.json): one Ed25519 key
# (PKCS#8 PEM) that signs from now. Its id is its RFC 7638 thumbprint: the base64url SHA-256 of
# {"crv":"Ed25519","kty":"OKP","x":X}, X the raw 32-byte public key in base64url (the last 32
# bytes of its DER encoding).
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm ed25519 -out signing.key 2>/dev/null
x=$(openssl pkey -in signing.key -pubout -outform DER | tail -c 32 | b64url)
kid=$(printf '{"crv":"Ed25519","kty":"OKP","x":"%s"}' "$x" | openssl dgst -sha256 -binary | b64url)
now=$(date +%s)
pem=$(awk '{ printf "%s\\n", $0 }' signing.key)
printf '{"keys":[{"kid":"%s","alg":"EdDSA","created_at":%s,"signs_from":%s,"retires_at":null,"private_key":"%s"}]}\n' \
  "$kid" "$now" "$now" "$pem" >signing-keys.json

# The database passwords: hex, so they need no escaping inside the redis:// and postgres://
# URLs the services are given.
openssl rand -hex 24 | tr -d '\n' >redis-password
openssl rand -hex 24 | tr -d '\n' >postgres-password

# Printed as YAML, the Secrets are separate documents.
yaml=
case " $* " in *yaml*) yaml=1 ;; esac
secret() {
  [[ -z $yaml ]] || echo ---
  kubectl create secret generic "$@"
}
secret userctl-signing-keys --from-file=signing-keys.json "$@"
for service in store cache gateway; do
  secret "userctl-$service-tls" --from-file=ca.crt --from-file="$service.crt" \
    --from-file="$service.key" "$@"
done
secret userctl-redis --from-file=password=redis-password "$@"
secret userctl-postgres --from-file=password=postgres-password "$@"
