"""python-pkcs11 against the module from several threads at once. As PKCS#11 defines, a login
belongs to the application, not a session: the main thread logs in once, and each worker
thread opens its own session (logged in through that), signs with the token's EC key and
verifies with its public key.
Usage: pkcs11_threads.py MODULE TOKEN_LABEL USER_PIN KEY_ID_HEX [THREADS] [ROUNDS]
Exits 0 only if every signature from every thread verified (and a forged one did not)."""
import sys
import threading

import pkcs11
from pkcs11 import KeyType, Mechanism, ObjectClass

module, label, pin, key_id = sys.argv[1:5]
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 4
rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 25
lib = pkcs11.lib(module)
token = lib.get_token(token_label=label)
errors = []
done = []


def work(n):
    try:
        with token.open() as s:
            priv = s.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, id=bytes.fromhex(key_id))
            pub = s.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC, id=bytes.fromhex(key_id))
            for i in range(rounds):
                msg = f"thread {n} message {i}".encode()
                sig = priv.sign(msg, mechanism=Mechanism.ECDSA_SHA256)
                if not pub.verify(msg, sig, mechanism=Mechanism.ECDSA_SHA256):
                    errors.append(f"thread {n}: signature {i} did not verify")
                if pub.verify(msg + b"!", sig, mechanism=Mechanism.ECDSA_SHA256):
                    errors.append(f"thread {n}: a forged message verified")
            done.append(n)
    except Exception as e:  # reported below, with the thread that met it
        errors.append(f"thread {n}: {type(e).__name__}: {e}")


with token.open(user_pin=pin):
    ts = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
for e in errors:
    print(e)
print(f"{len(done)} of {threads} threads finished, {len(errors)} errors")
sys.exit(0 if not errors and len(done) == threads else 1)
