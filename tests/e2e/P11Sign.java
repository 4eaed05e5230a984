// Java 17 SunPKCS11 through the KeyStore and Signature APIs, as an application would use the
// token: load the provider from a configuration, open the token's key store with the user
// PIN, sign with a private key entry on the token, and verify with its certificate's public
// key in software (the default provider). Prints "OK" and exits 0 only if that signature
// verifies and a changed message's does not.
//
//   java tests/e2e/P11Sign.java p11.cfg PIN ALIAS
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.cert.Certificate;

public class P11Sign {
    public static void main(String[] args) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(p);
        KeyStore ks = KeyStore.getInstance("PKCS11", p);
        ks.load(null, args[1].toCharArray());
        PrivateKey key = (PrivateKey) ks.getKey(args[2], null);
        Certificate cert = ks.getCertificate(args[2]);
        if (key == null || cert == null) {
            System.out.println("no private key entry " + args[2]);
            System.exit(1);
        }
        byte[] msg = "signed inside the HSM".getBytes("UTF-8");
        Signature s = Signature.getInstance("SHA256withECDSA", p);
        s.initSign(key);
        s.update(msg);
        byte[] sig = s.sign();
        Signature v = Signature.getInstance("SHA256withECDSA");
        v.initVerify(cert.getPublicKey());
        v.update(msg);
        boolean good = v.verify(sig);
        v.initVerify(cert.getPublicKey());
        v.update("signed outside the HSM".getBytes("UTF-8"));
        boolean forged = v.verify(sig);
        System.out.println(good && !forged ? "OK" : "FAILED good=" + good + " forged=" + forged);
        System.exit(good && !forged ? 0 : 1);
    }
}
