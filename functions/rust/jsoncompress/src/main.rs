//! json-compression N: generates N tweets of 100 characters as JSON
//! (default 200000, the paper's size), compresses them with LZ4, checks the
//! round trip, prints the sizes and a digest of the JSON. (The digest is of
//! the input, not the compressed bytes: lz4_flex picks its hash table by
//! pointer width, so wasm32 and x86_64 builds compress to different sizes.)
use guestkit::{arg, fnv1a, Gen, FNV_START};

fn main() {
    let n: usize = arg(1, 200_000);
    let mut g = Gen(42);
    let words = ["wasm", "serverless", "cold", "start", "tenant", "quota", "memory", "edge", "function", "latency"];
    let tweets: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut text = String::new();
            while text.len() < 100 {
                text.push_str(words[(g.next() % words.len() as u64) as usize]);
                text.push(' ');
            }
            text.truncate(100);
            serde_json::json!({ "id": i, "user": format!("user{}", g.next() % 10_000), "text": text })
        })
        .collect();
    let json = serde_json::to_vec(&tweets).unwrap();
    let packed = lz4_flex::compress_prepend_size(&json);
    let back = lz4_flex::decompress_size_prepended(&packed).unwrap();
    assert_eq!(back, json);
    println!("tweets={n} json_bytes={} lz4_bytes={} digest={:016x}", json.len(), packed.len(), fnv1a(FNV_START, &json));
}
