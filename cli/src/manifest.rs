//! `activations manifest URI`: lists a store and writes the `manifest.json` that lets a
//! server list the same dataset where the store cannot be listed.

use std::{io::Write, path::Path};

use activations_format::layout::LayoutChoice;

use activations_server::dataset::{self, OpenOptions};

use crate::RunError;

/// Lists `uri` and writes its manifest to `file`, or to `out` when no file is given. With a
/// file, `out` gets one line saying what was written.
pub(super) async fn run(
    uri: &str,
    file: Option<&Path>,
    layout: LayoutChoice,
    out: &mut impl Write,
) -> Result<(), RunError> {
    let options = OpenOptions {
        layout,
        ..OpenOptions::default()
    };
    let (shape, layout) = dataset::list_shape(uri, &options).await?;
    let manifest = shape.to_manifest(Some(layout));
    match file {
        None => out.write_all(manifest.as_bytes())?,
        Some(file) => {
            // Write beside the target and rename, so a reader never sees half a manifest.
            let partial = file.with_extension("json.partial");
            std::fs::write(&partial, &manifest)?;
            std::fs::rename(&partial, file)?;
            writeln!(out, "wrote {}: {shape}, {layout} layout", file.display())?;
        }
    }
    Ok(())
}
