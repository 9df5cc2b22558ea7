//! Embeds the migrations of both dialects into the binary and refuses to build
//! when a migration lacks its `.down.sql` (every migration is reversible) or
//! when the two dialects do not have the same migration versions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

type Found = BTreeMap<i64, (String, Option<PathBuf>, Option<PathBuf>)>;

fn scan(dir: &Path) -> Result<Found, String> {
    let mut found = Found::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let (stem, is_up) = if let Some(stem) = name.strip_suffix(".up.sql") {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(".down.sql") {
            (stem, false)
        } else {
            return Err(format!(
                "{}: migrations are NNNN_name.up.sql / NNNN_name.down.sql",
                path.display()
            ));
        };
        let (version, description) = stem
            .split_once('_')
            .ok_or_else(|| format!("{name}: expected NNNN_description"))?;
        let version: i64 = version
            .parse()
            .map_err(|_| format!("{name}: version is not a number"))?;
        let slot = found
            .entry(version)
            .or_insert_with(|| (description.to_owned(), None, None));
        if is_up {
            slot.1 = Some(path.clone());
        } else {
            slot.2 = Some(path.clone());
        }
    }
    Ok(found)
}

fn render(out: &mut String, constant: &str, found: &Found) -> Result<(), String> {
    writeln!(
        out,
        "pub(crate) const {constant}: &[EmbeddedMigration] = &["
    )
    .map_err(|e| e.to_string())?;
    for (version, (description, up, down)) in found {
        let up = up
            .as_ref()
            .ok_or_else(|| format!("migration {version} has no .up.sql"))?;
        let down = down
            .as_ref()
            .ok_or_else(|| format!("migration {version} ({description}) has no .down.sql: every migration must be reversible"))?;
        writeln!(
            out,
            "    EmbeddedMigration {{ version: {version}, description: {description:?}, up: include_str!({:?}), down: include_str!({:?}) }},",
            up.display().to_string(),
            down.display().to_string()
        )
        .map_err(|e| e.to_string())?;
    }
    writeln!(out, "];").map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?)
        .join("migrations");
    println!("cargo:rerun-if-changed={}", root.display());
    let sqlite = scan(&root.join("sqlite"))?;
    let postgres = scan(&root.join("postgres"))?;
    let versions = |f: &Found| f.keys().copied().collect::<Vec<_>>();
    if versions(&sqlite) != versions(&postgres) {
        return Err("migrations/sqlite and migrations/postgres must have the same versions".into());
    }
    let mut out = String::new();
    render(&mut out, "SQLITE", &sqlite)?;
    render(&mut out, "POSTGRES", &postgres)?;
    let target =
        PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?).join("migrations.rs");
    fs::write(target, out).map_err(|e| e.to_string())
}
