//! A version's image inputs: `image_inputs.pbtxt` in its directory, text-format
//! `tensorserve.ImageInputs`. Each entry turns a pixel input of the model into one that takes
//! encoded JPEG or PNG images (OpenVINO Model Server's idea; TF Serving does it in the graph).

use std::path::Path;
use std::sync::Arc;

use image::imageops::FilterType;

use crate::error::ServingError;
use crate::model::images::{ImageInput, ImageInputModel};
use crate::model::{Model, Signature};
use crate::proto::tensorserve as ts;
use crate::tensor::image::{Color, ImageSpec, Layout, Resize};
use crate::tensor::DataType;

/// The image inputs file, read whenever a version directory has one.
pub const IMAGE_INPUTS_FILE: &str = "image_inputs.pbtxt";

/// `model` with the image inputs of `dir`'s `image_inputs.pbtxt`, or unchanged without one.
pub fn wrap_from_dir(model: Arc<dyn Model>, dir: &Path, max_pixels: u64) -> Result<Arc<dyn Model>, ServingError> {
    let file = dir.join(IMAGE_INPUTS_FILE);
    if !file.is_file() {
        return Ok(model);
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| ServingError::invalid_argument(format!("cannot read {}: {e}", file.display())))?;
    wrap(model, &text, &file.display().to_string(), max_pixels)
}

/// `model` with the image inputs declared in `text` (from `origin`, for messages).
pub fn wrap(model: Arc<dyn Model>, text: &str, origin: &str, max_pixels: u64) -> Result<Arc<dyn Model>, ServingError> {
    let declared: ts::ImageInputs = crate::proto::parse_text_format("tensorserve.ImageInputs", text, origin)?;
    let mut inputs = Vec::new();
    for decl in &declared.input {
        let fail =
            |why: String| ServingError::invalid_argument(format!("{origin}: image input {}: {why}", decl.model_input));
        if decl.model_input.is_empty() {
            return Err(ServingError::invalid_argument(format!("{origin}: an image input has no model_input")));
        }
        let signatures: Vec<(&String, &Signature)> = model
            .signatures()
            .iter()
            .filter(|(name, sig)| {
                (decl.signature_name.is_empty() || **name == decl.signature_name)
                    && sig.inputs.contains_key(&decl.model_input)
            })
            .collect();
        if signatures.is_empty() {
            return Err(fail(match decl.signature_name.as_str() {
                "" => "no signature has that input".into(),
                name => format!("signature {name} has no such input"),
            }));
        }
        for (name, signature) in signatures {
            let spec = resolve(decl, signature).map_err(fail)?;
            let alias = if decl.alias.is_empty() { decl.model_input.clone() } else { decl.alias.clone() };
            inputs.push(ImageInput { signature: name.clone(), alias, model_alias: decl.model_input.clone(), spec });
        }
    }
    Ok(Arc::new(ImageInputModel::new(model, inputs, max_pixels)?))
}

/// The pixel tensor an entry fills, from the declaration and the model's input.
fn resolve(decl: &ts::ImageInput, signature: &Signature) -> Result<ImageSpec, String> {
    let input = &signature.inputs[&decl.model_input];
    let layout = match decl.layout() {
        ts::image_input::Layout::Nhwc => Layout::Nhwc,
        ts::image_input::Layout::Nchw => Layout::Nchw,
    };
    let color = match decl.color() {
        ts::image_input::Color::Rgb => Color::Rgb,
        ts::image_input::Color::Bgr => Color::Bgr,
        ts::image_input::Color::Grayscale => Color::Grayscale,
    };
    if !matches!(input.dtype, DataType::Float | DataType::UInt8) {
        return Err(format!("the model input is {}; image inputs fill DT_FLOAT or DT_UINT8", input.dtype.name()));
    }
    // [N, H, W, C] or [N, C, H, W] from the model; -1 (or an unknown rank) leaves it to the file.
    let dims = match &input.shape {
        Some(d) if d.len() == 4 => [d[1], d[2], d[3]],
        Some(d) => return Err(format!("the model input has shape {d:?}; image inputs fill 4-D tensors")),
        None => [-1, -1, -1],
    };
    let (h, w, c) = match layout {
        Layout::Nhwc => (dims[0], dims[1], dims[2]),
        Layout::Nchw => (dims[1], dims[2], dims[0]),
    };
    if c != -1 && c != color.channels() as i64 {
        return Err(format!("the model input has {c} channels; {:?} images have {}", decl.color(), color.channels()));
    }
    let side = |model: i64, declared: i32, what: &str| -> Result<u32, String> {
        match (model, declared) {
            (m, 0) if m > 0 => u32::try_from(m).map_err(|_| format!("{what} {m} is too large")),
            (_, 0) => Err(format!("the model's {what} is not fixed; declare it")),
            (m, d) if m > 0 && i64::from(d) != m => Err(format!("{what} {d} is declared but the model's is {m}")),
            (_, d) if !(1..=65_536).contains(&d) => Err(format!("{what} {d} is out of range (1 to 65536)")),
            (_, d) => Ok(d as u32),
        }
    };
    let (height, width) = (side(h, decl.height, "height")?, side(w, decl.width, "width")?);
    let channels = color.channels();
    for (name, values) in [("mean", &decl.mean), ("std", &decl.std)] {
        if values.len() > 1 && values.len() != channels {
            return Err(format!("{name} has {} values; give one or {channels}", values.len()));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(format!("{name} must be finite"));
        }
    }
    if decl.std.contains(&0.0) {
        return Err("std must not be 0".into());
    }
    let normalised = decl.scale.is_some() || !decl.mean.is_empty() || !decl.std.is_empty();
    if input.dtype == DataType::UInt8 && normalised {
        return Err("scale, mean and std apply to DT_FLOAT inputs only".into());
    }
    let filter = match decl.filter() {
        ts::image_input::Filter::Bilinear => FilterType::Triangle,
        ts::image_input::Filter::Nearest => FilterType::Nearest,
        ts::image_input::Filter::Bicubic => FilterType::CatmullRom,
        ts::image_input::Filter::Lanczos3 => FilterType::Lanczos3,
    };
    let resize = match decl.resize() {
        ts::image_input::Resize::Stretch => Resize::Stretch,
        ts::image_input::Resize::CenterCrop => Resize::CenterCrop,
    };
    Ok(ImageSpec {
        layout,
        height,
        width,
        color,
        resize,
        filter,
        dtype: input.dtype,
        scale: decl.scale.unwrap_or(1.0),
        mean: decl.mean.clone(),
        std: decl.std.clone(),
    })
}
