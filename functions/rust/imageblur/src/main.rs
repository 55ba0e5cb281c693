//! imageblur SIZE SIGMA: makes a SIZE x SIZE test picture (default 1000, the
//! paper's size), encodes it as JPEG, decodes it, applies a Gaussian blur
//! (default sigma 10), encodes the result as JPEG and prints sizes and a
//! digest of the blurred pixels.
use guestkit::{arg, fnv1a, FNV_START};
use image::{ImageBuffer, Rgb};

fn main() {
    let size: u32 = arg(1, 1000);
    let sigma: f32 = arg(2, 10.0);
    let img = ImageBuffer::from_fn(size, size, |x, y| {
        Rgb([(x * 255 / size.max(1)) as u8, (y * 255 / size.max(1)) as u8, ((x ^ y) & 0xff) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
    let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap().to_rgb8();
    let blurred = image::imageops::blur(&decoded, sigma);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&blurred).unwrap();
    println!(
        "size={size} sigma={sigma} jpeg_in={} jpeg_out={} digest={:016x}",
        jpeg.len(),
        out.len(),
        fnv1a(FNV_START, blurred.as_raw())
    );
}
