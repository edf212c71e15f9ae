//! A version's image inputs: `image_inputs.pbtxt` in its directory, text-format
//! `tensorserve.ImageInputs`. Each entry turns a pixel input of the model into one that takes
//! encoded JPEG or PNG images (OpenVINO Model Server's idea; TF Serving does it in the graph).

use std::path::Path;
use std::sync::Arc;

use crate::error::ServingError;
use crate::model::images::{ImageInput, ImageInputModel};
use crate::model::{Model, Signature};
use crate::proto::tensorserve as ts;
use crate::tensor::image::{Color, Filter, ImageSpec, Layout, Resize};
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
        return Err(format!(
            "the model input has {c} channels; {} images have {}",
            decl.color().as_str_name(),
            color.channels()
        ));
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
        ts::image_input::Filter::Bilinear => Filter::Bilinear,
        ts::image_input::Filter::Nearest => Filter::Nearest,
        ts::image_input::Filter::Bicubic => Filter::Bicubic,
        ts::image_input::Filter::Lanczos3 => Filter::Lanczos3,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{TensorMap, TensorSpec};

    /// A model with one signature whose input `image` has `shape` and `dtype`.
    struct Pixels(BTreeMap<String, Signature>);

    impl Model for Pixels {
        fn signatures(&self) -> &BTreeMap<String, Signature> {
            &self.0
        }
        fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
            Ok(inputs)
        }
    }

    fn model(dtype: DataType, shape: &[i64]) -> Arc<dyn Model> {
        let sig = Signature::predict(
            [("image".to_string(), TensorSpec::new("image", dtype, shape))],
            [("out".to_string(), TensorSpec::new("out", DataType::Float, &[-1]))],
        );
        Arc::new(Pixels(BTreeMap::from([("serving_default".to_string(), sig)])))
    }

    fn err(dtype: DataType, shape: &[i64], text: &str) -> String {
        match wrap(model(dtype, shape), text, "f", 100) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn a_declared_input_takes_strings() {
        let m = wrap(
            model(DataType::Float, &[-1, 8, 8, 1]),
            r#"input { model_input: "image" alias: "image_bytes" color: GRAYSCALE }"#,
            "f",
            100,
        )
        .unwrap();
        let sig = &m.signatures()["serving_default"];
        assert_eq!(sig.inputs.keys().collect::<Vec<_>>(), ["image_bytes"]);
        assert_eq!(sig.inputs["image_bytes"], TensorSpec::new("image", DataType::String, &[-1]));
    }

    #[test]
    fn declarations_are_checked_against_the_model() {
        let f = DataType::Float;
        assert!(err(f, &[-1, 8, 8, 1], r#"input { model_input: "nope" }"#).contains("no signature has that input"));
        assert!(err(f, &[-1, 8, 8, 1], r#"input { model_input: "image" }"#).contains("1 channels; RGB images have 3"));
        assert!(err(f, &[-1, 64], r#"input { model_input: "image" }"#).contains("image inputs fill 4-D tensors"));
        assert!(
            err(f, &[-1, -1, -1, 3], r#"input { model_input: "image" }"#).contains("height is not fixed; declare it")
        );
        assert!(err(f, &[-1, 8, 8, 3], r#"input { model_input: "image" height: 9 }"#)
            .contains("height 9 is declared but the model's is 8"));
        assert!(err(f, &[-1, 8, 8, 3], r#"input { model_input: "image" mean: [1, 2] }"#).contains("mean has 2 values"));
        assert!(err(f, &[-1, 8, 8, 3], r#"input { model_input: "image" std: 0 }"#).contains("std must not be 0"));
        assert!(err(DataType::UInt8, &[-1, 8, 8, 3], r#"input { model_input: "image" scale: 2 }"#)
            .contains("DT_FLOAT inputs only"));
        assert!(
            err(DataType::Int32, &[-1, 8, 8, 3], r#"input { model_input: "image" }"#).contains("DT_FLOAT or DT_UINT8")
        );
        assert!(err(f, &[-1, 3, 8, 8], r#"input { model_input: "image" layout: NCHW bogus: 1 }"#).contains("bogus"));
    }
}
