//! `cargo xtask web`: builds the web app into `$CARGO_TARGET_DIR/quire-web/`.
//!
//! 1. `cargo build --target wasm32-unknown-unknown --release -p quire-frontend`
//!    (installing the target with rustup when it is missing);
//! 2. wasm-bindgen as a library (`--target web` output), pinned to exactly
//!    the `wasm-bindgen` version in Cargo.lock;
//! 3. `wasm-opt -Oz` when binaryen is installed (skipped with a note if not);
//! 4. the dist folder: `index.html` and `sw.js` (no-cache) plus
//!    `assets/` whose file names carry a hash of their bytes (served as
//!    immutable), with the asset list baked into the service worker.
//!
//! A rebuild whose inputs (the wasm cargo produced and the static files)
//! hash the same as the last build's stamp does nothing after cargo.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Failure, cargo, header, run, workspace_root};

/// The exact `wasm-bindgen` version this xtask's `wasm-bindgen-cli-support` is.
const WASM_BINDGEN_VERSION: &str = "0.2.130";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const CRATE: &str = "quire-frontend";
const STEM: &str = "quire_frontend";
/// Bump when the layout of the dist folder changes, to force a rebuild.
const LAYOUT_VERSION: &str = "quire-web-2";

/// The built app.
pub struct Dist {
    pub dir: PathBuf,
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root if relative), else what `cargo metadata` says.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
    }
    let metadata = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    metadata
        .as_deref()
        .and_then(|json| json_string_field(json, "target_directory"))
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where `cargo xtask web` writes the app.
pub fn dist_dir() -> PathBuf {
    target_dir().join("quire-web")
}

/// The value of `"key":"..."` in a JSON text (enough for cargo metadata's paths).
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// FNV-1a, 64 bits: a content hash for file names (no security needed).
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn content_hash(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes, FNV_OFFSET))[..12].to_owned()
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    fs::write(path, bytes)
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
}

/// Writes through a temporary file and a rename, so a running server never
/// serves half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let tmp = path.with_extension("tmp");
    write(&tmp, bytes)?;
    fs::rename(&tmp, path)
        .map_err(|e| Failure::new(format!("cannot move {} into place: {e}", path.display())))
}

pub fn ensure_wasm_target() -> Result<(), Failure> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if out.status.success() => {
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET)
            {
                return Ok(());
            }
            println!("    the {WASM_TARGET} target is missing; installing it with rustup");
            run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        }
        _ => {
            // No rustup: the build below says clearly if the target is missing.
            println!(
                "    rustup not found; assuming the {WASM_TARGET} standard library is installed"
            );
            Ok(())
        }
    }
}

/// Checks that Cargo.lock's `wasm-bindgen` is the one our bindgen library expects.
fn check_bindgen_pin() -> Result<(), Failure> {
    let lock_path = workspace_root().join("Cargo.lock");
    let lock = String::from_utf8_lossy(&read(&lock_path)?).into_owned();
    let locked: BTreeSet<&str> = lock
        .split("[[package]]")
        .filter(|block| block.contains("\nname = \"wasm-bindgen\"\n"))
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("version = \""))
                .map(|v| v.trim_end_matches('"'))
        })
        .collect();
    if locked.is_empty() || locked.iter().all(|v| *v == WASM_BINDGEN_VERSION) {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "Cargo.lock has wasm-bindgen {locked:?} but xtask's wasm-bindgen-cli-support is \
             {WASM_BINDGEN_VERSION}; pin both to the same version (frontend/Cargo.toml and \
             xtask/Cargo.toml, with `=`) and update WASM_BINDGEN_VERSION in xtask/src/web.rs"
        )))
    }
}

/// Bytes of `path` compressed with `gzip -9`, if gzip is installed.
fn gzip_size(path: &Path) -> Option<u64> {
    let out = Command::new("gzip")
        .arg("-9")
        .arg("-c")
        .arg(path)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout.len() as u64)
}

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1024.0)
}

fn size_line(label: &str, path: &Path) -> String {
    let raw = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match gzip_size(path) {
        Some(gz) => format!("    {label}: {} raw, {} gzip", kb(raw), kb(gz)),
        None => format!("    {label}: {} raw (gzip not installed)", kb(raw)),
    }
}

/// Builds the app (or finds it up to date) and returns where it is.
pub fn build() -> Result<Dist, Failure> {
    ensure_wasm_target()?;
    check_bindgen_pin()?;
    header(&format!(
        "cargo build --target {WASM_TARGET} --release -p {CRATE}"
    ));
    run(cargo()
        .args(["build", "--target", WASM_TARGET, "--release", "-p", CRATE])
        // Size over speed for the browser, without touching the workspace's
        // release profile (the server's): these apply to this build only.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "z")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"))?;

    let target = target_dir();
    let raw_wasm = target
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{STEM}.wasm"));
    let static_dir = workspace_root().join("frontend").join("static");
    let dist = dist_dir();
    let stamp_path = dist.join(".build-stamp");

    // What the output depends on: the wasm cargo made, the static files, the tools.
    let mut inputs = fnv1a(LAYOUT_VERSION.as_bytes(), FNV_OFFSET);
    inputs = fnv1a(&read(&raw_wasm)?, inputs);
    for name in ["index.html", "app.css", "sw.js"] {
        inputs = fnv1a(name.as_bytes(), inputs);
        inputs = fnv1a(&read(&static_dir.join(name))?, inputs);
    }
    // QUIRE_SKIP_WASM_OPT=1 skips binaryen even when it is installed.
    let skip_opt = std::env::var_os("QUIRE_SKIP_WASM_OPT").is_some_and(|v| v != "0");
    let wasm_opt_bin = std::env::var_os("WASM_OPT").unwrap_or_else(|| "wasm-opt".into());
    let wasm_opt = Command::new(&wasm_opt_bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success() && !skip_opt)
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    inputs = fnv1a(wasm_opt.as_deref().unwrap_or("none").as_bytes(), inputs);
    for knob in ["QUIRE_WEB_KEEP_NAMES", "QUIRE_SKIP_WASM_OPT", "WASM_OPT"] {
        let value = std::env::var_os(knob).unwrap_or_default();
        inputs = fnv1a(
            format!("{knob}={}", value.to_string_lossy()).as_bytes(),
            inputs,
        );
    }
    let stamp = format!("{inputs:016x}");
    if fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
        && dist.join("index.html").is_file()
    {
        println!("    up to date: {}", dist.display());
        print_sizes(&raw_wasm, &dist);
        return Ok(Dist { dir: dist });
    }

    header("wasm-bindgen --target web");
    let work = target.join("quire-web-build");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", work.display())))?;
    let keep_names = std::env::var_os("QUIRE_WEB_KEEP_NAMES").is_some_and(|v| v != "0");
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(&raw_wasm)
        .web(true)
        .map_err(|e| Failure::new(format!("wasm-bindgen: {e:#}")))?
        // The library omits the default module path unless told not to (the CLI does not).
        .omit_default_module_path(false)
        .typescript(false)
        .debug(false)
        .keep_debug(false)
        // QUIRE_WEB_KEEP_NAMES=1 keeps function names for readable stack traces.
        .remove_name_section(!keep_names)
        .remove_producers_section(true);
    bindgen
        .generate(&work)
        .map_err(|e| Failure::new(format!("wasm-bindgen: {e:#}")))?;
    let js_path = work.join(format!("{STEM}.js"));
    let bg_wasm = work.join(format!("{STEM}_bg.wasm"));

    match &wasm_opt {
        Some(version) => {
            header(&format!("wasm-opt -Oz ({version})"));
            let optimized = work.join(format!("{STEM}_opt.wasm"));
            // Features come from the module's target_features section.
            let status = Command::new(&wasm_opt_bin)
                .arg("-Oz")
                .arg(&bg_wasm)
                .arg("-o")
                .arg(&optimized)
                .status();
            match status {
                Ok(s) if s.success() && externref_table_intact(&read(&optimized)?) => {
                    fs::rename(&optimized, &bg_wasm).map_err(|e| {
                        Failure::new(format!("cannot replace {}: {e}", bg_wasm.display()))
                    })?;
                }
                Ok(s) if s.success() => println!(
                    "    note: this wasm-opt mislabels wasm-bindgen's externref table (binaryen \
                     older than ~116 does; Debian 12 ships 108), so its output would not load; \
                     shipping the unoptimised module. Install a newer binaryen (e.g. \
                     `npm i -g binaryen`) or point WASM_OPT at one."
                ),
                other => println!(
                    "    note: wasm-opt failed ({other:?}); shipping the unoptimised module"
                ),
            }
        }
        None => println!(
            "    note: wasm-opt not found, skipping it (the module is ~30% larger); install \
             binaryen (`apt-get install binaryen` or `npm i -g binaryen`) to shrink it"
        ),
    }

    header(&format!("write {}", dist.display()));
    let assets_dir = dist.join("assets");
    fs::create_dir_all(&assets_dir)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", assets_dir.display())))?;
    let mut assets = Vec::new();
    let mut place = |stem: &str, ext: &str, bytes: &[u8]| -> Result<String, Failure> {
        let name = format!("{stem}-{}.{ext}", content_hash(bytes));
        let path = assets_dir.join(&name);
        if !path.is_file() {
            write_atomic(&path, bytes)?;
        }
        assets.push(name.clone());
        Ok(name)
    };
    let wasm_name = place(STEM, "wasm", &read(&bg_wasm)?)?;
    let js_name = place(STEM, "js", &read(&js_path)?)?;
    let css_name = place("app", "css", &read(&static_dir.join("app.css"))?)?;

    // Snippets (inline JS of dependencies) are imported relative to the JS file.
    let snippets = work.join("snippets");
    if snippets.is_dir() {
        copy_dir(&snippets, &assets_dir.join("snippets"))?;
    }

    let index = String::from_utf8_lossy(&read(&static_dir.join("index.html"))?)
        .replace("{{CSS}}", &css_name)
        .replace("{{JS}}", &js_name)
        .replace("{{WASM}}", &wasm_name);
    let asset_urls: Vec<String> = assets.iter().map(|a| format!("\"/assets/{a}\"")).collect();
    let version = content_hash(format!("{index}{}", asset_urls.join(",")).as_bytes());
    let sw = String::from_utf8_lossy(&read(&static_dir.join("sw.js"))?)
        .replace("{{VERSION}}", &version)
        .replace("{{ASSETS}}", &format!("[{}]", asset_urls.join(", ")));
    write_atomic(&dist.join("sw.js"), sw.as_bytes())?;
    write_atomic(&dist.join("index.html"), index.as_bytes())?;

    // Assets of earlier builds are no longer referenced.
    if let Ok(entries) = fs::read_dir(&assets_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && !assets.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    write(&stamp_path, stamp.as_bytes())?;
    print_sizes(&raw_wasm, &dist);
    Ok(Dist { dir: dist })
}

/// Reads an unsigned LEB128 number at `*at`.
fn leb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Whether the table exported as `__wbindgen_externrefs` (if any) is an
/// externref table. Some binaryen releases renumber tables and leave the
/// export pointing at the funcref table, which fails at instantiation.
fn externref_table_intact(module: &[u8]) -> bool {
    fn parse(b: &[u8]) -> Option<bool> {
        const FUNCREF: u8 = 0x70;
        const EXTERNREF: u8 = 0x6f;
        let mut at = 8;
        let mut tables: Vec<u8> = Vec::new();
        let mut exported = None;
        let limits = |b: &[u8], at: &mut usize| -> Option<()> {
            let flags = *b.get(*at)?;
            *at += 1;
            leb(b, at)?;
            if flags & 1 != 0 {
                leb(b, at)?;
            }
            Some(())
        };
        while at < b.len() {
            let id = *b.get(at)?;
            at += 1;
            let size = leb(b, &mut at)? as usize;
            let end = at + size;
            let mut p = at;
            match id {
                2 => {
                    for _ in 0..leb(b, &mut p)? {
                        for _ in 0..2 {
                            let len = leb(b, &mut p)? as usize;
                            p += len;
                        }
                        let kind = *b.get(p)?;
                        p += 1;
                        match kind {
                            0 => {
                                leb(b, &mut p)?;
                            }
                            1 => {
                                tables.push(*b.get(p)?);
                                p += 1;
                                limits(b, &mut p)?;
                            }
                            2 => limits(b, &mut p)?,
                            3 => p += 2,
                            _ => return None,
                        }
                    }
                }
                4 => {
                    for _ in 0..leb(b, &mut p)? {
                        let reftype = *b.get(p)?;
                        if reftype != FUNCREF && reftype != EXTERNREF {
                            return None; // an encoding this check does not know
                        }
                        tables.push(reftype);
                        p += 1;
                        limits(b, &mut p)?;
                    }
                }
                7 => {
                    for _ in 0..leb(b, &mut p)? {
                        let len = leb(b, &mut p)? as usize;
                        let name = b.get(p..p + len)?;
                        p += len;
                        let kind = *b.get(p)?;
                        p += 1;
                        let index = leb(b, &mut p)? as usize;
                        if kind == 1 && name == b"__wbindgen_externrefs" {
                            exported = Some(index);
                        }
                    }
                }
                _ => {}
            }
            at = end;
        }
        Some(match exported {
            None => true,
            Some(index) => tables.get(index) == Some(&EXTERNREF),
        })
    }
    // A module this check cannot read is given the benefit of the doubt.
    parse(module).unwrap_or(true)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), Failure> {
    fs::create_dir_all(to)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", to.display())))?;
    let entries = fs::read_dir(from)
        .map_err(|e| Failure::new(format!("cannot list {}: {e}", from.display())))?;
    for entry in entries.flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            write(&target, &read(&entry.path())?)?;
        }
    }
    Ok(())
}

fn print_sizes(raw_wasm: &Path, dist: &Path) {
    println!("{}", size_line("wasm from cargo", raw_wasm));
    let assets = dist.join("assets");
    let mut files: Vec<PathBuf> = fs::read_dir(&assets)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!("{}", size_line(&format!("assets/{name}"), &file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_target_directory_from_metadata() {
        let json = r#"{"packages":[],"target_directory":"/tmp/a \"b\"/target","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("/tmp/a \"b\"/target")
        );
        assert_eq!(json_string_field(json, "missing"), None);
    }

    #[test]
    fn externref_export_must_name_an_externref_table() {
        // Two tables (funcref, externref) and an export of table `index`.
        let module = |index: u8| {
            let mut m = b"\0asm\x01\0\0\0".to_vec();
            m.extend([4, 7, 2, 0x70, 0, 1, 0x6f, 0, 1]);
            let name = b"__wbindgen_externrefs";
            m.extend([7, (1 + 1 + name.len() + 2) as u8, 1, name.len() as u8]);
            m.extend(name);
            m.extend([1, index]);
            m
        };
        assert!(externref_table_intact(&module(1)));
        assert!(!externref_table_intact(&module(0)));
        assert!(externref_table_intact(b"\0asm\x01\0\0\0"));
    }

    #[test]
    fn hashes_are_stable_and_content_based() {
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
        assert_ne!(content_hash(b"abc"), content_hash(b"abd"));
        assert_eq!(content_hash(b"").len(), 12);
        // FNV-1a test vector.
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
    }
}
