//! Loaded models for one cortex.yaml: signature choice, model/version resolution, predict.
