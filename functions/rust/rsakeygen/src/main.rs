//! rsa-keygen BITS: generates an RSA key pair of BITS bits (default 2048,
//! the paper's size) from a seeded generator, so the result is
//! deterministic, and prints the modulus size and a digest of it.
use guestkit::{arg, fnv1a, FNV_START};
use rand_chacha::rand_core::SeedableRng;
use rsa::traits::PublicKeyParts;

fn main() {
    let bits: usize = arg(1, 2048);
    let seed: u64 = arg(2, 7);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let key = rsa::PrivateKey::new(&mut rng, bits).unwrap();
    let n = key.n().to_be_bytes();
    println!("bits={bits} modulus_bytes={} digest={:016x}", n.len(), fnv1a(FNV_START, &n));
}
