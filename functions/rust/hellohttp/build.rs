//! Links hello with a 64 KiB stack instead of Rust's 1 MiB default: the
//! stack sits below the data in linear memory, and a pooling allocator that
//! keeps memory resident resets it on every call (the README's "Writing
//! fast functions"). Both servers the benchmark compares run this same file.
fn main() {
    println!("cargo:rustc-link-arg=-zstack-size=65536");
}
