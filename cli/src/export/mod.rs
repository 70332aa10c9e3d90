//! `userctl export`: the stack written out for a platform `userctl` does not run itself.
//!
//! - [`kubernetes`]: a kustomize base, rendered as data.
//! - [`yaml`]: JSON values written as block YAML.
//!
//! Everything is rendered before anything is written, and [`write`] puts the files in place
//! from a directory beside the target, so a failure leaves no half-written base.

pub mod kubernetes;
pub mod yaml;

use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

pub use kubernetes::File;

/// What is at the target directory before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Nothing, or an empty directory: the whole base appears at once.
    Vacant,
    /// A directory with files in it (written only with `--force`): each file `export` writes
    /// is replaced, and every other file is left alone.
    Occupied,
}

/// What `out` is: Err names what is in the way when it is not a directory.
pub fn target(out: &Path) -> io::Result<Target> {
    match fs::symlink_metadata(out) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Target::Vacant),
        Err(err) => Err(err),
        Ok(meta) if meta.is_dir() => {
            if fs::read_dir(out)?.next().is_none() {
                Ok(Target::Vacant)
            } else {
                Ok(Target::Occupied)
            }
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        )),
    }
}

/// Writes `files` into `out`: first into a new directory beside it, then moved into place by
/// renames (on one filesystem, so they cannot run out of space half-way). A vacant target is
/// replaced by that directory in one rename; into an occupied one each file is renamed over its
/// namesake. Returns the paths written.
pub fn write(out: &Path, files: &[File]) -> io::Result<Vec<PathBuf>> {
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".userctl-export-")
        .tempdir_in(&parent)?;
    for file in files {
        let path = staging.path().join(file.name);
        fs::write(&path, &file.content)?;
        let mode = if file.executable { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    let written = files.iter().map(|file| out.join(file.name)).collect();
    match target(out)? {
        Target::Vacant => {
            fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))?;
            // An empty directory is replaced by the rename; a missing one is created by it.
            fs::rename(staging.path(), out)?;
            // Already moved: nothing is left for the guard to remove.
            let _moved = staging.keep();
        }
        Target::Occupied => {
            for file in files {
                fs::rename(staging.path().join(file.name), out.join(file.name))?;
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(content: &str) -> Vec<File> {
        vec![
            File {
                name: "a.yaml",
                content: content.to_owned(),
                executable: false,
            },
            File {
                name: "run.sh",
                content: "#!/bin/sh\n".to_owned(),
                executable: true,
            },
        ]
    }

    #[test]
    fn a_missing_or_empty_directory_gets_every_file_and_nothing_else() {
        let root = tempfile::tempdir().expect("tempdir");
        for out in [root.path().join("new/base"), root.path().join("empty")] {
            if out.ends_with("empty") {
                fs::create_dir(&out).expect("mkdir");
            }
            assert_eq!(target(&out).expect("target"), Target::Vacant);
            write(&out, &files("x")).expect("write");
            let mut names: Vec<String> = fs::read_dir(&out)
                .expect("read")
                .map(|entry| {
                    entry
                        .expect("entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            names.sort();
            assert_eq!(names, ["a.yaml", "run.sh"]);
            let mode = fs::metadata(out.join("run.sh"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        let leftovers = fs::read_dir(root.path())
            .expect("read")
            .filter(|entry| {
                entry
                    .as_ref()
                    .is_ok_and(|entry| entry.file_name().to_string_lossy().starts_with(".userctl"))
            })
            .count();
        assert_eq!(leftovers, 0, "no staging directory is left behind");
    }

    #[test]
    fn an_occupied_directory_gets_its_files_replaced_and_keeps_the_others() {
        let root = tempfile::tempdir().expect("tempdir");
        let out = root.path().join("base");
        write(&out, &files("old")).expect("write");
        fs::write(out.join("overlay.yaml"), "mine").expect("write");
        assert_eq!(target(&out).expect("target"), Target::Occupied);
        write(&out, &files("new")).expect("write");
        assert_eq!(fs::read_to_string(out.join("a.yaml")).expect("read"), "new");
        assert_eq!(
            fs::read_to_string(out.join("overlay.yaml")).expect("read"),
            "mine"
        );
        assert_eq!(fs::read_dir(root.path()).expect("read").count(), 1);
    }

    #[test]
    fn a_file_in_the_way_is_not_a_target() {
        let root = tempfile::tempdir().expect("tempdir");
        let out = root.path().join("file");
        fs::write(&out, "x").expect("write");
        assert!(target(&out).is_err());
    }
}
