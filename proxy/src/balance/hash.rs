//! A stable 64-bit hash for balancing keys: the same key maps to the same server on every
//! node and across restarts (unlike `std`'s randomly seeded hasher).

/// FNV-1a over the bytes, finished with MurmurHash3's 64-bit mixer for avalanche.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// MurmurHash3 finalizer.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Hash of `data` with a seed, for independent hash functions.
pub fn hash64_seeded(data: &[u8], seed: u64) -> u64 {
    fmix64(hash64(data) ^ fmix64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}
