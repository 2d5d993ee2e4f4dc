//! Model repositories on local disk or S3: discovery, layout checks, download cache, watcher.
