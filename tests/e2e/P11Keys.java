// Java 17 SunPKCS11 with keys that enter the token in clear (partition policy import-keys on)
// and legacy RSA decryption, as applications use them:
//   - RSA/ECB/PKCS1Padding: encrypt in software to the certificate's key, decrypt on the token;
//   - HmacSHA256 with a 256-bit key Java made: the MAC on the token equals the JDK's;
//   - KeyStore.setEntry of an AES key Java made: stored, read back as an entry, and it
//     encrypts on the token as the JDK does.
// Prints "OK" and exits 0 only if all three hold.
//
//   java tests/e2e/P11Keys.java p11.cfg PIN RSA_ALIAS
import java.security.KeyStore;
import java.security.Key;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.util.Arrays;
import javax.crypto.Cipher;
import javax.crypto.KeyGenerator;
import javax.crypto.Mac;
import javax.crypto.SecretKey;

public class P11Keys {
    public static void main(String[] args) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(p);
        KeyStore ks = KeyStore.getInstance("PKCS11", p);
        ks.load(null, args[1].toCharArray());

        byte[] secret = "a session key, 32 bytes of it!!".getBytes("UTF-8");
        Cipher enc = Cipher.getInstance("RSA/ECB/PKCS1Padding");
        enc.init(Cipher.ENCRYPT_MODE, ks.getCertificate(args[2]).getPublicKey());
        byte[] ct = enc.doFinal(secret);
        Cipher dec = Cipher.getInstance("RSA/ECB/PKCS1Padding", p);
        dec.init(Cipher.DECRYPT_MODE, (PrivateKey) ks.getKey(args[2], null));
        boolean rsa = Arrays.equals(dec.doFinal(ct), secret);

        KeyGenerator hg = KeyGenerator.getInstance("HmacSHA256");
        hg.init(256);
        SecretKey hk = hg.generateKey();
        byte[] msg = "authenticate me".getBytes("UTF-8");
        Mac onToken = Mac.getInstance("HmacSHA256", p);
        onToken.init(hk);
        Mac inJdk = Mac.getInstance("HmacSHA256");
        inJdk.init(hk);
        boolean hmac = Arrays.equals(onToken.doFinal(msg), inJdk.doFinal(msg));

        KeyGenerator ag = KeyGenerator.getInstance("AES");
        ag.init(256);
        SecretKey aes = ag.generateKey();
        ks.setEntry("java-aes", new KeyStore.SecretKeyEntry(aes), null);
        Key stored = ks.getKey("java-aes", null);
        byte[] block = new byte[16];
        Cipher t = Cipher.getInstance("AES/ECB/NoPadding", p);
        t.init(Cipher.ENCRYPT_MODE, stored);
        Cipher j = Cipher.getInstance("AES/ECB/NoPadding");
        j.init(Cipher.ENCRYPT_MODE, aes);
        boolean entry = ks.isKeyEntry("java-aes") && Arrays.equals(t.doFinal(block), j.doFinal(block));

        boolean ok = rsa && hmac && entry;
        System.out.println(ok ? "OK" : "FAILED rsa=" + rsa + " hmac=" + hmac + " entry=" + entry);
        System.exit(ok ? 0 : 1);
    }
}
