//! Encoded images (JPEG, PNG) decoded into a model's pixel tensor.
//!
//! Every image is checked from its header first ([`probe`]), so a small file declaring
//! 100,000 x 100,000 pixels is refused before a pixel buffer exists. Decoding writes each
//! image's pixels, resized and normalised, straight into its slice of the batch tensor.

use std::io::Cursor;

use bytes::Bytes;
use fast_image_resize::images::ImageRef;
use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Pixel};

use crate::error::ServingError;
use crate::tensor::{DataType, Tensor};

/// Most pixels (width x height) one image may declare by default: 50 megapixels, a large
/// camera photo, 150 MB once decoded to RGB.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 50_000_000;

/// Where the channel axis sits in the model's tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[N, height, width, channels]`.
    Nhwc,
    /// `[N, channels, height, width]`.
    Nchw,
}

/// The channels the model wants, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (OpenCV-trained models).
    Bgr,
    /// One luma channel.
    Grayscale,
}

impl Color {
    /// Channels per pixel.
    pub fn channels(self) -> usize {
        match self {
            Color::Grayscale => 1,
            Color::Rgb | Color::Bgr => 3,
        }
    }
}

/// How an image reaches the target size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Resize the whole image, aspect ratio not kept.
    Stretch,
    /// Cut the largest centred region with the target's aspect ratio, then resize it.
    CenterCrop,
}

/// The resampling filter; all but nearest widen with the scale when shrinking (antialiasing),
/// as Pillow's do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Triangle (linear) weights.
    Bilinear,
    /// The nearest source pixel.
    Nearest,
    /// Catmull-Rom cubic weights.
    Bicubic,
    /// Lanczos windowed sinc, 3 lobes.
    Lanczos3,
}

impl Filter {
    fn algorithm(self) -> ResizeAlg {
        use fast_image_resize::FilterType as F;
        match self {
            Filter::Bilinear => ResizeAlg::Convolution(F::Bilinear),
            Filter::Nearest => ResizeAlg::Nearest,
            Filter::Bicubic => ResizeAlg::Convolution(F::CatmullRom),
            Filter::Lanczos3 => ResizeAlg::Convolution(F::Lanczos3),
        }
    }
}

/// What one model input is filled with: size, channels, element type and normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSpec {
    /// Channel axis position.
    pub layout: Layout,
    /// Target height in pixels.
    pub height: u32,
    /// Target width in pixels.
    pub width: u32,
    /// Channels and their order.
    pub color: Color,
    /// Stretch or centre crop.
    pub resize: Resize,
    /// The resampling filter (bilinear by default).
    pub filter: Filter,
    /// `DT_FLOAT` (normalised) or `DT_UINT8` (raw pixels).
    pub dtype: DataType,
    /// Pixels are multiplied by this before the mean is taken off (float only).
    pub scale: f32,
    /// Per-channel mean, in the model's channel order (float only).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in the model's channel order (float only).
    pub std: Vec<f32>,
}

impl ImageSpec {
    /// Values in one image's slice of the tensor.
    pub fn values_per_image(&self) -> usize {
        self.height as usize * self.width as usize * self.color.channels()
    }

    /// The tensor shape for `n` images.
    pub fn shape(&self, n: usize) -> Vec<usize> {
        let (h, w, c) = (self.height as usize, self.width as usize, self.color.channels());
        match self.layout {
            Layout::Nhwc => vec![n, h, w, c],
            Layout::Nchw => vec![n, c, h, w],
        }
    }
}

/// What an image found from its header: its size and the memory decoding it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Width in pixels, as stored (before EXIF rotation).
    pub width: u32,
    /// Height in pixels, as stored.
    pub height: u32,
    /// Bytes the decoder's output buffer takes.
    pub decoded_bytes: u64,
}

/// Reads an image's header: JPEG or PNG, not empty, at most `max_pixels`. No pixel is decoded.
pub fn probe(bytes: &[u8], max_pixels: u64) -> Result<Probe, String> {
    let (decoder, _) = open(bytes)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    Ok(Probe { width, height, decoded_bytes: decoder.total_bytes() })
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(format!("the image is empty ({width}x{height} pixels)"));
    }
    if pixels > max_pixels {
        return Err(format!(
            "the image declares {width}x{height} = {pixels} pixels, more than the limit of {max_pixels} (--max_image_pixels)"
        ));
    }
    Ok(())
}

fn open(bytes: &[u8]) -> Result<(Box<dyn ImageDecoder + '_>, ImageFormat), String> {
    let format = image::guess_format(bytes).map_err(|_| "not a JPEG or PNG image".to_string())?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(format!("{} images are not supported (JPEG and PNG are)", format_name(format)));
    }
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let decoder = reader.into_decoder().map_err(|e| describe(format, e))?;
    Ok((Box::new(decoder), format))
}

fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Jpeg => "JPEG".into(),
        other => other.extensions_str().first().map_or_else(|| format!("{other:?}"), |e| e.to_uppercase()),
    }
}

fn describe(format: ImageFormat, e: image::ImageError) -> String {
    let what = format_name(format);
    match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("the {what} image is truncated")
        }
        e => format!("the {what} image is truncated or corrupt: {}", e.to_string().trim_end()),
    }
}

/// Decodes one image upright (EXIF orientation applied) in the colour the spec wants, resized
/// to it, and writes its values into `out` (one image's slice, layout and normalisation applied).
fn decode_into<T: Copy>(
    bytes: &[u8],
    spec: &ImageSpec,
    max_pixels: u64,
    out: &mut [T],
    value: impl Fn(u8, usize) -> T,
) -> Result<(), String> {
    let (mut decoder, format) = open(bytes)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| describe(format, e))?;
    img.apply_orientation(orientation);
    match (spec.color, img) {
        (Color::Grayscale, DynamicImage::ImageLuma8(grey)) => write_pixels(&grey, spec, out, value),
        (Color::Grayscale, img) => write_pixels(&luma_601(img.into_rgb8()), spec, out, value),
        (Color::Rgb | Color::Bgr, img) => write_pixels(&img.into_rgb8(), spec, out, value),
    }
    Ok(())
}

/// Grey levels by ITU-R BT.601 weights (0.299, 0.587, 0.114), as Pillow's `convert("L")` and
/// OpenCV's `COLOR_RGB2GRAY` compute them, in 16-bit fixed point with rounding.
fn luma_601(rgb: image::RgbImage) -> image::GrayImage {
    let (w, h) = rgb.dimensions();
    let grey = rgb
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16) as u8)
        .collect();
    image::GrayImage::from_raw(w, h, grey).expect("one grey value per pixel")
}

fn write_pixels<P, T>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    spec: &ImageSpec,
    out: &mut [T],
    value: impl Fn(u8, usize) -> T,
) where
    P: Pixel<Subpixel = u8> + 'static,
    T: Copy,
{
    let (tw, th) = (spec.width, spec.height);
    let (w, h) = img.dimensions();
    let channels = spec.color.channels();
    let resized;
    let pixels: &[u8] = if (w, h) == (tw, th) {
        img.as_raw()
    } else {
        let pixel_type = if channels == 1 { PixelType::U8 } else { PixelType::U8x3 };
        let mut options = ResizeOptions::new().resize_alg(spec.filter.algorithm());
        if spec.resize == Resize::CenterCrop {
            let (x, y, cw, ch) = center_crop(w, h, tw, th);
            options = options.crop(x, y, cw, ch);
        }
        let mut dst = fast_image_resize::images::Image::new(tw, th, pixel_type);
        let src = ImageRef::new(w, h, img.as_raw(), pixel_type).expect("a decoded buffer holds w x h pixels");
        Resizer::new().resize(&src, &mut dst, &options).expect("source and target have the same pixel type");
        resized = dst.into_vec();
        &resized
    };
    let (tw, th) = (tw as usize, th as usize);
    // BGR reverses the decoder's RGB order.
    let source_channel = |c: usize| if spec.color == Color::Bgr { 2 - c } else { c };
    match spec.layout {
        Layout::Nhwc => {
            for (dst, src) in out.chunks_exact_mut(channels).zip(pixels.chunks_exact(channels)) {
                for (c, d) in dst.iter_mut().enumerate() {
                    *d = value(src[source_channel(c)], c);
                }
            }
        }
        Layout::Nchw => {
            for (c, plane) in out.chunks_exact_mut(tw * th).enumerate() {
                let sc = source_channel(c);
                for (d, src) in plane.iter_mut().zip(pixels.chunks_exact(channels)) {
                    *d = value(src[sc], c);
                }
            }
        }
    }
}

/// The largest centred `(x, y, width, height)` region of a `w` x `h` image with the aspect of
/// `tw` x `th`, in fractional pixels (the resampler reads the pixels just outside it, as
/// Pillow's `ImageOps.fit` does).
fn center_crop(w: u32, h: u32, tw: u32, th: u32) -> (f64, f64, f64, f64) {
    let (w, h, target) = (f64::from(w), f64::from(h), f64::from(tw) / f64::from(th));
    if w / h >= target {
        let cw = h * target;
        ((w - cw) / 2.0, 0.0, cw, h)
    } else {
        let ch = w / target;
        (0.0, (h - ch) / 2.0, w, ch)
    }
}

/// The most memory decoding `images` holds at once, beyond the encoded bytes: the batch
/// tensor, plus each image being decoded (decoder output, colour conversion, resize).
/// Checks every header; an error names the image by its index.
pub fn decode_cost(alias: &str, spec: &ImageSpec, images: &[Bytes], max_pixels: u64) -> Result<usize, ServingError> {
    let mut largest = 0u64;
    for (i, bytes) in images.iter().enumerate() {
        let p = probe(bytes, max_pixels).map_err(|reason| image_error(alias, i, &reason))?;
        let pixels = u64::from(p.width) * u64::from(p.height);
        let channels = spec.color.channels() as u64;
        let resized = spec.values_per_image() as u64;
        let working = p.decoded_bytes.saturating_add(pixels * channels).saturating_add(resized);
        largest = largest.max(working);
    }
    let element = spec.dtype.size().unwrap_or(4) as u64;
    let output = images.len() as u64 * spec.values_per_image() as u64 * element;
    let at_once = images.len().min(decode_threads()) as u64;
    Ok(usize::try_from(output.saturating_add(largest.saturating_mul(at_once))).unwrap_or(usize::MAX))
}

fn image_error(alias: &str, index: usize, reason: &str) -> ServingError {
    ServingError::invalid_argument(format!("{alias}[{index}]: {reason}"))
}

fn decode_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Images of less than this many encoded bytes in all decode on the calling thread: starting
/// threads would cost more than it saves.
const PARALLEL_MIN_BYTES: usize = 64 * 1024;

/// Decodes `images` into one `[N, ...]` tensor as `spec` describes, in parallel over the cores
/// when there is enough work. Errors name the image by its index under `alias`.
pub fn decode_batch(alias: &str, spec: &ImageSpec, images: &[Bytes], max_pixels: u64) -> Result<Tensor, ServingError> {
    let shape = spec.shape(images.len());
    let tensor = match spec.dtype {
        DataType::UInt8 => {
            let values = decode_all(alias, spec, images, max_pixels, 0u8, |p, _| p)?;
            Tensor::from_vec(shape, values)
        }
        DataType::Float => {
            let channels = spec.color.channels();
            let pick = |v: &[f32], c: usize, default: f32| match v.len() {
                0 => default,
                1 => v[0],
                _ => v[c.min(v.len() - 1)],
            };
            // One multiply-add per value: (p * scale - mean) / std = p * a + b.
            let (a, b): (Vec<f32>, Vec<f32>) = (0..channels)
                .map(|c| {
                    let (mean, std) = (pick(&spec.mean, c, 0.0), pick(&spec.std, c, 1.0));
                    (spec.scale / std, -mean / std)
                })
                .unzip();
            let values = decode_all(alias, spec, images, max_pixels, 0f32, |p, c| f32::from(p) * a[c] + b[c])?;
            Tensor::from_vec(shape, values)
        }
        other => return Err(ServingError::internal(format!("image inputs cannot fill {} tensors", other.name()))),
    };
    tensor.map_err(|e| ServingError::internal(e.to_string()))
}

fn decode_all<T: Copy + Send>(
    alias: &str,
    spec: &ImageSpec,
    images: &[Bytes],
    max_pixels: u64,
    zero: T,
    value: impl Fn(u8, usize) -> T + Sync,
) -> Result<Vec<T>, ServingError> {
    let per = spec.values_per_image();
    let mut out = vec![zero; images.len() * per];
    let encoded: usize = images.iter().map(Bytes::len).sum();
    let threads = decode_threads().min(images.len());
    if threads <= 1 || encoded < PARALLEL_MIN_BYTES {
        for (i, (bytes, slot)) in images.iter().zip(out.chunks_exact_mut(per)).enumerate() {
            decode_into(bytes, spec, max_pixels, slot, &value).map_err(|r| image_error(alias, i, &r))?;
        }
        return Ok(out);
    }
    // Contiguous runs of images per thread; the first failing image (by index) is reported.
    let chunk = images.len().div_ceil(threads);
    let value = &value;
    let failure = std::thread::scope(|scope| {
        let workers: Vec<_> = images
            .chunks(chunk)
            .zip(out.chunks_mut(chunk * per))
            .enumerate()
            .map(|(t, (batch, slots))| {
                scope.spawn(move || {
                    for (j, (bytes, slot)) in batch.iter().zip(slots.chunks_exact_mut(per)).enumerate() {
                        if let Err(reason) = decode_into(bytes, spec, max_pixels, slot, value) {
                            return Some((t * chunk + j, reason));
                        }
                    }
                    None
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().unwrap_or_else(|_| Some((0, "the decoder panicked".into())))).min()
    });
    match failure {
        Some((i, reason)) => Err(image_error(alias, i, &reason)),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(color: Color, layout: Layout, dtype: DataType) -> ImageSpec {
        ImageSpec {
            layout,
            height: 2,
            width: 2,
            color,
            resize: Resize::Stretch,
            filter: Filter::Bilinear,
            dtype,
            scale: 1.0,
            mean: vec![],
            std: vec![],
        }
    }

    fn png(width: u32, height: u32, rgb: &[u8]) -> Bytes {
        let mut out = Vec::new();
        let img = image::RgbImage::from_raw(width, height, rgb.to_vec()).unwrap();
        DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        Bytes::from(out)
    }

    const PIXELS: [u8; 12] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120];

    #[test]
    fn png_fills_layouts_and_channel_orders() {
        let img = png(2, 2, &PIXELS);
        let t = decode_batch("x", &spec(Color::Rgb, Layout::Nhwc, DataType::UInt8), std::slice::from_ref(&img), 100)
            .unwrap();
        assert_eq!(t.shape(), &[1, 2, 2, 3]);
        assert_eq!(t.as_slice::<u8>().unwrap(), &PIXELS);
        let t = decode_batch("x", &spec(Color::Bgr, Layout::Nchw, DataType::UInt8), std::slice::from_ref(&img), 100)
            .unwrap();
        assert_eq!(t.shape(), &[1, 3, 2, 2]);
        assert_eq!(t.as_slice::<u8>().unwrap(), &[30, 60, 90, 120, 20, 50, 80, 110, 10, 40, 70, 100]);
        let mut s = spec(Color::Rgb, Layout::Nhwc, DataType::Float);
        (s.scale, s.mean, s.std) = (0.5, vec![1.0, 2.0, 3.0], vec![2.0]);
        let t = decode_batch("x", &s, &[img], 100).unwrap();
        assert_eq!(&t.as_slice::<f32>().unwrap()[..3], &[(5.0 - 1.0) / 2.0, (10.0 - 2.0) / 2.0, (15.0 - 3.0) / 2.0]);
    }

    #[test]
    fn bad_images_are_named_by_index() {
        let good = png(2, 2, &PIXELS);
        let s = spec(Color::Rgb, Layout::Nhwc, DataType::UInt8);
        let cases: [(Bytes, &str); 4] = [
            (Bytes::from_static(b"hello"), "x[1]: not a JPEG or PNG image"),
            (good.slice(..good.len() - 20), "x[1]: the PNG image"),
            (Bytes::from_static(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"), "x[1]: GIF images are not supported"),
            (png(20, 20, &[0; 1200]), "x[1]: the image declares 20x20 = 400 pixels, more than the limit of 100"),
        ];
        for (bad, want) in cases {
            let e = decode_batch("x", &s, &[good.clone(), bad.clone()], 100).unwrap_err();
            assert!(e.message.starts_with(want), "{}", e.message);
            assert_eq!(e.code, crate::error::Code::InvalidArgument);
        }
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        assert_eq!(center_crop(400, 200, 100, 100), (100.0, 0.0, 200.0, 200.0));
        assert_eq!(center_crop(200, 400, 100, 100), (0.0, 100.0, 200.0, 200.0));
        assert_eq!(center_crop(300, 200, 3, 2), (0.0, 0.0, 300.0, 200.0));
        // The middle two columns of a 4x2 picture whose columns are 0, 1, 2, 3 (x 10).
        let rgb: Vec<u8> = (0..2).flat_map(|_| (0..4u8).flat_map(|x| [x * 10; 3])).collect();
        let mut s = spec(Color::Grayscale, Layout::Nhwc, DataType::UInt8);
        (s.width, s.height, s.resize, s.filter) = (2, 2, Resize::CenterCrop, Filter::Nearest);
        let t = decode_batch("x", &s, &[png(4, 2, &rgb)], 100).unwrap();
        assert_eq!(t.as_slice::<u8>().unwrap(), &[10, 20, 10, 20]);
    }
}
