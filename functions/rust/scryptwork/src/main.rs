//! scrypt N: derives a key from each of N generated strings with scrypt
//! (log_n=10, r=1, p=1; default 1000 strings, the paper's size) and prints
//! a digest of all keys.
use guestkit::{arg, fnv1a, FNV_START};

fn main() {
    let n: usize = arg(1, 1000);
    let params = scrypt::Params::new(10, 1, 1).unwrap();
    let mut h = FNV_START;
    for i in 0..n {
        let password = format!("password-{i}-wasmbox");
        let mut key = [0u8; 32];
        scrypt::scrypt(password.as_bytes(), b"wasmbox-salt", &params, &mut key).unwrap();
        h = fnv1a(h, &key);
    }
    println!("strings={n} digest={h:016x}");
}
