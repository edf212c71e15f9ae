//! Encoded image bytes -> `tensor::image::{decode_cost, decode_batch}` for each layout, colour,
//! crop and element type: both must answer (an INVALID_ARGUMENT naming image 0, or a tensor of
//! the declared shape), never panic, and the header check must refuse what the decode refuses
//! for size.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tensorserve::tensor::image::{decode_batch, decode_cost, Color, Filter, ImageSpec, Layout, Resize};
use tensorserve::tensor::DataType;

/// Small enough that a fuzzed header cannot make the decoder allocate much.
const MAX_PIXELS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, image)) = data.split_first() else { return };
    let spec = ImageSpec {
        layout: if knobs & 1 == 0 { Layout::Nhwc } else { Layout::Nchw },
        height: 1 + u32::from(knobs >> 5),
        width: 3 + u32::from(knobs >> 4 & 1) * 5,
        color: [Color::Rgb, Color::Bgr, Color::Grayscale, Color::Rgb][usize::from(knobs >> 1 & 3)],
        resize: if knobs & 8 == 0 { Resize::Stretch } else { Resize::CenterCrop },
        filter: Filter::Bilinear,
        dtype: if knobs & 16 == 0 { DataType::Float } else { DataType::UInt8 },
        scale: 1.0 / 255.0,
        mean: vec![0.5],
        std: vec![0.25],
    };
    let images = [Bytes::copy_from_slice(image)];
    let checked = decode_cost("x", &spec, &images, MAX_PIXELS);
    match decode_batch("x", &spec, &images, MAX_PIXELS) {
        Ok(t) => {
            assert!(checked.is_ok(), "decoded an image the header check refused: {:?}", checked.err());
            assert_eq!(t.shape(), spec.shape(1).as_slice());
        }
        Err(e) => {
            assert_eq!(e.code, tensorserve::error::Code::InvalidArgument, "{}", e.message);
            assert!(e.message.starts_with("x[0]: "), "{}", e.message);
        }
    }
});
