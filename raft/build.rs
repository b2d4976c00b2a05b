//! Compiles `schema/*.fbs` into Rust with planus (pure Rust; Debian's `flatc`
//! is too old for the flatbuffers crate, see design.md §4). The generated
//! module is written to `$OUT_DIR/meta_generated.rs` and included by
//! `src/generated.rs`.

use std::{env, error::Error, fs, path::PathBuf};

/// Every schema file, in include order. `rpc.fbs` includes the others, but
/// naming them all keeps a file that stops being included from vanishing
/// silently.
const SCHEMA_FILES: [&str; 5] = [
    "schema/common.fbs",
    "schema/image.fbs",
    "schema/command.fbs",
    "schema/log.fbs",
    "schema/rpc.fbs",
];

fn main() -> Result<(), Box<dyn Error>> {
    for file in SCHEMA_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let inputs: Vec<PathBuf> = SCHEMA_FILES.iter().map(|file| manifest_dir.join(file)).collect();
    let Some(declarations) = planus_translation::translate_files(&inputs) else {
        // planus has already printed the diagnostics to stderr.
        return Err("planus could not translate schema/*.fbs (see the errors above)".into());
    };
    let code = planus_codegen::generate_rust(&declarations, false).map_err(|error| error.to_string())?;

    let out_path = PathBuf::from(env::var("OUT_DIR")?).join("meta_generated.rs");
    fs::write(&out_path, code)?;
    Ok(())
}
