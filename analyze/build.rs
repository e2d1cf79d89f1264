//! Builds the preload library (`preload/`, a `cdylib`) that `heapdump run`
//! puts into unmodified programs, so that it ships inside the `heapdump`
//! binary: `cargo install --path analyze` is all a user installs.
//!
//! Cargo cannot depend on a `cdylib`'s file, so this runs a nested `cargo
//! build` of that package, always optimized (it runs inside the observed
//! program), into a target directory of its own under `OUT_DIR`. If that
//! build fails, `heapdump` is still built, without the library: `heapdump
//! run` then says so, and the build prints a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let preload = workspace.join("preload");
    for watched in [
        "preload/src",
        "preload/Cargo.toml",
        "capture/src",
        "capture/Cargo.toml",
        "formats/src",
        "formats/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let embedded = out_dir.join("libheapdump_preload.so");
    let built = build(&preload, &out_dir.join("preload-target"));
    match built {
        Ok(library) => {
            std::fs::copy(&library, &embedded).expect("cannot copy the preload library");
        }
        Err(why) => {
            println!(
                "cargo:warning=the preload library was not built ({why}); `heapdump run` will not work in this build"
            );
            std::fs::write(&embedded, b"").expect("cannot write OUT_DIR");
        }
    }
}

fn build(preload: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let manifest = preload.join("Cargo.toml");
    if !manifest.exists() {
        return Err(format!("{} is missing", manifest.display()));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(preload)
        .args(["build", "--release", "--quiet", "-p", "heapdump-preload"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    // The outer build's wrappers and settings are not the library's: clippy
    // would lint it again, and a target directory or profile set for the
    // outer build must not redirect this one.
    for variable in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(variable);
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Err("the preload library is for Linux".into());
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build -p heapdump-preload failed ({status})"));
    }
    let library = target_dir.join("release").join("libheapdump_preload.so");
    if library.exists() {
        Ok(library)
    } else {
        Err(format!("{} was not produced", library.display()))
    }
}
