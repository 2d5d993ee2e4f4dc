//! The TensorFlow C library, loaded at run time from the tensorflow-cpu wheel: SavedModels, signatures, sessions.
