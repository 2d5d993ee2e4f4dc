//! `cargo run -p soma-tensorflow --example smoke -- <saved model dir> <f32 values...>`:
//! loads a model, prints its signatures and runs the default one on one row.

use std::path::PathBuf;

use soma_core::Tensor;
use soma_tensorflow::{SavedModel, SessionOptions, TensorFlow};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: smoke <dir> <values...>")?);
    let values: Vec<f32> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let tf = TensorFlow::global(None)?;
    println!("TensorFlow {} from {}", tf.version(), tf.path().display());
    let model = SavedModel::load(&tf, &dir, &["serve"], &SessionOptions::default())?;
    for (key, sig) in model.signatures() {
        println!("{key}: {sig:?}");
    }
    let prepared = model.prepare("serving_default")?;
    let input = Tensor::from_slice(vec![1, values.len()], &values)?;
    let out = model.run(&prepared, &[&input], None)?;
    println!("{:?}", out[0].to_vec::<f32>()?);
    Ok(())
}
