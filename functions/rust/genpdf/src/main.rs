//! genpdf ITEMS: writes a PDF bill with ITEMS line items (default 500, the
//! paper's size) and an embedded image (a generated raster), and prints the
//! page count, the size and a digest of the document.
use guestkit::{arg, fnv1a, Gen, FNV_START};
use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};

const ROWS_PER_PAGE: usize = 40;

fn main() {
    let items: usize = arg(1, 500);
    let mut g = Gen(99);
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" });
    // A 64x64 RGB logo, generated.
    let (w, h) = (64i64, 64i64);
    let pixels: Vec<u8> = (0..w * h).flat_map(|i| [(i % 64 * 4) as u8, (i / 64 * 4) as u8, 128]).collect();
    let logo = Stream::new(
        dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => w, "Height" => h, "ColorSpace" => "DeviceRGB", "BitsPerComponent" => 8 },
        pixels,
    );
    let logo_id = doc.add_object(logo);
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
        "XObject" => dictionary! { "Logo" => logo_id },
    });

    let mut kids = Vec::new();
    let mut total_cents: u64 = 0;
    let pages = items.div_ceil(ROWS_PER_PAGE).max(1);
    for page in 0..pages {
        let mut ops = vec![
            Operation::new("q", vec![]),
            Operation::new("cm", vec![64.into(), 0.into(), 0.into(), 64.into(), 480.into(), 740.into()]),
            Operation::new("Do", vec!["Logo".into()]),
            Operation::new("Q", vec![]),
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 16.into()]),
            Operation::new("Td", vec![50.into(), 780.into()]),
            Operation::new("Tj", vec![Object::string_literal(format!("Bill, page {} of {pages}", page + 1))]),
            Operation::new("Tf", vec!["F1".into(), 10.into()]),
        ];
        for row in page * ROWS_PER_PAGE..((page + 1) * ROWS_PER_PAGE).min(items) {
            let cents = 100 + g.next() % 99_900;
            total_cents += cents;
            ops.push(Operation::new("Td", vec![0.into(), (-16).into()]));
            ops.push(Operation::new(
                "Tj",
                vec![Object::string_literal(format!("Item {:>5}  SKU-{:08}  {:>8}.{:02}", row + 1, g.next() % 100_000_000, cents / 100, cents % 100))],
            ));
        }
        if page + 1 == pages {
            ops.push(Operation::new("Td", vec![0.into(), (-24).into()]));
            ops.push(Operation::new("Tj", vec![Object::string_literal(format!("Total: {}.{:02}", total_cents / 100, total_cents % 100))]));
        }
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        kids.push(doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content_id }).into());
    }
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => pages as i64,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    doc.compress();
    let mut pdf = Vec::new();
    doc.save_to(&mut pdf).unwrap();
    println!("items={items} pages={pages} bytes={} digest={:016x}", pdf.len(), fnv1a(FNV_START, &pdf));
}
