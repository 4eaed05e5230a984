#!/usr/bin/env bash
# End to end through clients nobody here wrote: OpenSC's pkcs11-tool drives the module, and
# OpenSSL checks what comes out of it (signatures verified outside the token, ciphertexts made
# outside it decrypted on it). Every check prints PASS or FAIL; the last line is
# "N passed, M failed", and the exit status is non-zero if anything failed.
#
#   tests/e2e/run.sh            (after `cargo build`; installs opensc with apt-get if missing)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${FERROHSM_BIN:-$ROOT/target/debug/ferrohsm}
MOD=${FERROHSM_MODULE:-$ROOT/target/debug/libferrohsm_pkcs11.so}

if ! command -v pkcs11-tool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opensc) >/dev/null 2>&1
  fi
fi
for t in pkcs11-tool openssl; do
  command -v "$t" >/dev/null 2>&1 || { echo "FAIL prerequisite: $t is not installed"; echo "0 passed, 1 failed"; exit 1; }
done
[ -x "$BIN" ] && [ -f "$MOD" ] || { echo "FAIL prerequisite: build first (cargo build)"; echo "0 passed, 1 failed"; exit 1; }

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export FERROHSM_HOME=$W/data
export SO_PW=hsm-so-password DOMAIN_PW=domain-password
P=(pkcs11-tool --module "$MOD")
PASS=0
FAIL=0

check() {
  local name=$1
  shift
  if "$@" >"$W/out" 2>&1; then
    echo "PASS $name"
    PASS=$((PASS + 1))
  else
    echo "FAIL $name"
    sed 's/^/      /' "$W/out" | tail -6
    FAIL=$((FAIL + 1))
  fi
}

# A check that must be refused with a specific answer (a refusal for another reason, such
# as a missing token, does not count).
refused() {
  local name=$1 want=$2
  shift 2
  if "$@" >"$W/out" 2>&1; then
    echo "FAIL $name (was allowed)"
    FAIL=$((FAIL + 1))
  elif grep -q -- "$want" "$W/out"; then
    echo "PASS $name"
    PASS=$((PASS + 1))
  else
    echo "FAIL $name (refused, but not with \"$want\")"
    sed 's/^/      /' "$W/out" | tail -4
    FAIL=$((FAIL + 1))
  fi
}

cd "$W"
printf 'pay 100 EUR to account 42\n' > msg.txt
head -c 32 /dev/urandom > secret

check "HSM initialised password-authenticated by the ferrohsm command" \
  "$BIN" hsm init --label e2e --auth password --so-password env:SO_PW --domain-password env:DOMAIN_PW
check "pkcs11-tool lists one uninitialised token" \
  bash -c "${P[*]} -L | grep -q 'uninitialized'"
check "C_InitToken from pkcs11-tool creates the token" \
  "${P[@]}" --init-token --slot 1 --label e2e-token --so-pin 87654321
check "C_InitPIN from pkcs11-tool sets the user PIN" \
  "${P[@]}" --slot 1 --init-pin --so-pin 87654321 --pin 123456
check "the token keeps its slot id and label" \
  bash -c "${P[*]} -L | grep -A3 'Slot 0 (0x1)' | grep -q 'e2e-token'"
U=("${P[@]}" --slot 1 --login --pin 123456)
check "RSA-2048 key pair generated on the token" "${U[@]}" --keypairgen --key-type rsa:2048 --id 01 --label rsa
check "EC P-256 key pair generated on the token" "${U[@]}" --keypairgen --key-type EC:prime256v1 --id 02 --label ec
check "AES-256 key generated on the token" "${U[@]}" --keygen --key-type AES:32 --id 03 --label aes
check "objects are visible to a new process" bash -c "${U[*]} -O | grep -c 'label:' | grep -qx 5"

check "RSA public key exported" "${U[@]}" --read-object --type pubkey --id 01 -o rsa.der
check "OpenSSL reads the RSA public key" openssl pkey -pubin -inform DER -in rsa.der -out rsa.pem
check "EC public key exported (CKA_PUBLIC_KEY_INFO, through the ferrohsm command)" \
  env UPIN=123456 "$BIN" key public --partition e2e-token --label ec --password env:UPIN --out ec.pem
check "OpenSSL reads the EC public key" openssl pkey -pubin -in ec.pem -noout

check "RSA PKCS#1 v1.5 SHA-256 signature made on the token" "${U[@]}" --sign -m SHA256-RSA-PKCS --id 01 -i msg.txt -o rsa.sig
check "OpenSSL verifies the RSA PKCS#1 v1.5 signature" openssl dgst -sha256 -verify rsa.pem -signature rsa.sig msg.txt
check "RSA-PSS SHA-256 signature made on the token" "${U[@]}" --sign -m SHA256-RSA-PKCS-PSS --id 01 -i msg.txt -o pss.sig
check "OpenSSL verifies the RSA-PSS signature" \
  openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify rsa.pem -signature pss.sig msg.txt
check "ECDSA P-256 SHA-256 signature made on the token" \
  "${U[@]}" --sign -m ECDSA-SHA256 --id 02 -i msg.txt -o ec.sig --signature-format openssl
check "OpenSSL verifies the ECDSA signature" openssl dgst -sha256 -verify ec.pem -signature ec.sig msg.txt
printf 'pay 999 EUR to account 42\n' > forged
refused "OpenSSL rejects the ECDSA signature on altered data" "Verification failure" openssl dgst -sha256 -verify ec.pem -signature ec.sig forged

check "OpenSSL encrypts to the token's RSA key with OAEP-SHA256" \
  openssl pkeyutl -encrypt -pubin -inkey rsa.pem -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in secret -out oaep.ct
check "the token decrypts what OpenSSL encrypted" \
  "${U[@]}" --decrypt -m RSA-PKCS-OAEP --hash-algorithm SHA256 --mgf MGF1-SHA256 --id 01 -i oaep.ct -o oaep.pt
check "the plaintext round-trips" cmp secret oaep.pt

check "the RSA private key is sensitive and never extractable" \
  bash -c "${U[*]} -O --type privkey --id 01 | grep -q 'Access:.*sensitive, always sensitive, never extractable'"
refused "the AES key cannot be read out" "CKR_ATTRIBUTE_SENSITIVE\|sensitive\|extract" "${U[@]}" --read-object --type secrkey --id 03 -o aes.bin
check "nothing was written by the refused read" bash -c '! [ -s aes.bin ]'
check "pkcs11-tool --test-fork: a forked child initialises the module afresh" "${P[@]}" --test-fork
# Threads 1 and 2 pause a second (P1) so thread 0's C_Initialize comes first; without it, a
# call that wins the race is rightly answered CKR_CRYPTOKI_NOT_INITIALIZED and the check flakes.
check "pkcs11-tool --test-threads: three threads share the module" \
  bash -c "${P[*]} --test-threads INGISLGI --test-threads P1GISLGIT0 --test-threads P1SLGISLGI 2>&1 | grep -q 'all threads have ended with CKR_OK'"
refused "a wrong user PIN is refused" "CKR_PIN_INCORRECT" "${P[@]}" --slot 1 --login --pin 000000 -O
check "the right PIN still works after a wrong one" "${U[@]}" -O
check "the Auditor, imprinted afterwards, sees the token's whole history" \
  bash -c "'$BIN' --ped-dir '$W/ped' audit init --auth password --new-password env:SO_PW >/dev/null && '$BIN' --ped-dir '$W/ped' audit show --password env:SO_PW | grep -q 'partition-create .*e2e-token'"

echo
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
