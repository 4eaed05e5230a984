/* A card-management application in C, written against the README's declarations of the
 * GlobalPlatform vendor mechanisms (the e2e run extracts them into gp_decls.h) and the
 * standard pkcs11.h: it loads the module, logs in to a token, generates a master key set,
 * finds its three keys by the vendor attribute, checks that a master key serves no standard
 * mechanism, and prints check values: the ENC key's by two methods and a card key's, which the
 * run compares with what the ferrohsm command reports.
 *
 *   gp_client MODULE PIN SET KDD-HEX
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>
#include "gp_decls.h"

static CK_FUNCTION_LIST_PTR f;

#define CHECK(call, what)                                             \
  do {                                                                \
    CK_RV rv_ = (call);                                               \
    if (rv_ != CKR_OK) {                                              \
      fprintf(stderr, "%s: CK_RV 0x%lx\n", what, (unsigned long)rv_); \
      return 1;                                                       \
    }                                                                 \
  } while (0)

/* The check value of key `k` by `method`, of the card key diversified by `div` when a KDD
 * is given; printed as "LABEL HEX". */
static int kcv(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k, const char *label, CK_ULONG method,
               CK_ULONG div, CK_BYTE *kdd, CK_ULONG kdd_len, CK_ULONG want_len) {
  CK_FERROHSM_GP_KCV_PARAMS p = {method, div, kdd, kdd_len};
  CK_MECHANISM m = {CKM_FERROHSM_GP_KCV, &p, sizeof p};
  CK_BYTE out[16];
  CK_ULONG len = 0;
  CHECK(f->C_SignInit(h, &m, k), "C_SignInit (KCV)");
  CHECK(f->C_Sign(h, NULL, 0, NULL, &len), "C_Sign (length)");
  if (len > sizeof out) {
    fprintf(stderr, "%s: a check value of %lu bytes\n", label, (unsigned long)len);
    return 1;
  }
  CHECK(f->C_Sign(h, NULL, 0, out, &len), "C_Sign (KCV)");
  if (len != want_len) {
    fprintf(stderr, "%s: %lu bytes, not %lu\n", label, (unsigned long)len,
            (unsigned long)want_len);
    return 1;
  }
  printf("%s ", label);
  for (CK_ULONG i = 0; i < len; i++) printf("%02X", out[i]);
  printf("\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5 || strlen(argv[4]) != 20) {
    fprintf(stderr, "usage: gp_client MODULE PIN SET KDD-HEX(10 bytes)\n");
    return 2;
  }
  const char *set = argv[3];
  CK_BYTE kdd[10];
  for (int i = 0; i < 10; i++) {
    unsigned int b;
    if (sscanf(argv[4] + 2 * i, "%2x", &b) != 1) return 2;
    kdd[i] = (CK_BYTE)b;
  }
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  if (!get) return 1;
  CHECK(get(&f), "C_GetFunctionList");
  CHECK(f->C_Initialize(NULL), "C_Initialize");
  CK_SLOT_ID slots[8];
  CK_ULONG n = 8;
  CHECK(f->C_GetSlotList(CK_TRUE, slots, &n), "C_GetSlotList");
  if (n == 0) return 1;
  CK_MECHANISM_INFO info;
  CHECK(f->C_GetMechanismInfo(slots[0], CKM_FERROHSM_GP_CHANNEL_OPEN, &info),
        "C_GetMechanismInfo");
  if (!(info.flags & CKF_DERIVE)) return 1;
  CK_SESSION_HANDLE h;
  CHECK(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h),
        "C_OpenSession");
  CHECK(f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2])), "C_Login");

  /* An AES-128 master key set, version 1, generated inside. */
  CK_FERROHSM_GP_SET_PARAMS sp = {CKK_AES, 16, 1, (CK_UTF8CHAR_PTR)set, strlen(set),
                                  (CK_UTF8CHAR_PTR) "e2e cards", 9};
  CK_MECHANISM gen = {CKM_FERROHSM_GP_SET_GENERATE, &sp, sizeof sp};
  CK_OBJECT_HANDLE enc;
  CHECK(f->C_GenerateKey(h, &gen, NULL, 0, &enc), "C_GenerateKey (master set)");

  /* Its three keys, found by the set's name. */
  CK_ATTRIBUTE by_set = {CKA_FERROHSM_GP_SET, (void *)set, strlen(set)};
  CK_OBJECT_HANDLE found[8];
  CK_ULONG nf = 0;
  CHECK(f->C_FindObjectsInit(h, &by_set, 1), "C_FindObjectsInit");
  CHECK(f->C_FindObjects(h, found, 8, &nf), "C_FindObjects");
  CHECK(f->C_FindObjectsFinal(h), "C_FindObjectsFinal");
  if (nf != 3) {
    fprintf(stderr, "found %lu keys of the set, not 3\n", (unsigned long)nf);
    return 1;
  }
  CK_ULONG role = 0;
  CK_ATTRIBUTE ra = {CKA_FERROHSM_GP_ROLE, &role, sizeof role};
  CHECK(f->C_GetAttributeValue(h, enc, &ra, 1), "C_GetAttributeValue (role)");
  if (role != CK_FERROHSM_GP_ENC) return 1;

  /* A master key serves no standard mechanism. */
  CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
  CK_RV rv = f->C_EncryptInit(h, &ecb, enc);
  if (rv != CKR_KEY_FUNCTION_NOT_PERMITTED) {
    fprintf(stderr, "C_EncryptInit(CKM_AES_ECB) on a master key: 0x%lx\n", (unsigned long)rv);
    return 1;
  }

  if (kcv(h, enc, "aes-gp", CK_FERROHSM_GP_KCV_AES_GP, CK_FERROHSM_GP_DIV_NONE, NULL, 0, 3) ||
      kcv(h, enc, "aes-cmac", CK_FERROHSM_GP_KCV_AES_CMAC, CK_FERROHSM_GP_DIV_NONE, NULL, 0, 5) ||
      kcv(h, enc, "card-enc", CK_FERROHSM_GP_KCV_AES_GP, CK_FERROHSM_GP_DIV_KDF3, kdd, 10, 3))
    return 1;
  CHECK(f->C_Logout(h), "C_Logout");
  CHECK(f->C_CloseSession(h), "C_CloseSession");
  CHECK(f->C_Finalize(NULL), "C_Finalize");
  return 0;
}
