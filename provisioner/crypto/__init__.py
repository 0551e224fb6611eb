"""Pure crypto over bytes and objects: keys, certificates, PKCS#12 profiles, CMS rehearsal."""
