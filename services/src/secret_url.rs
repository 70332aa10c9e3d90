//! Connection URLs that carry a password, read from a file.
//!
//! `--database-url` and `--redis-url` hold a password, and a flag or an environment variable is
//! readable by anyone who can inspect the process or its container spec. Orchestrators hand
//! secrets over as files instead (Docker Swarm and Kubernetes mount them under
//! `/run/secrets`), so each of those flags has a `-file` twin whose file holds the whole URL.

use std::{fs, io, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum SecretUrlError {
    #[error("cannot read {flag} {path}")]
    Read {
        flag: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{flag} {path} is empty: it should hold one URL")]
    Empty { flag: &'static str, path: String },
}

/// The URL in `path` (given by `flag`), without surrounding whitespace: a secret written with
/// `echo` ends in a newline.
pub fn read(flag: &'static str, path: &Path) -> Result<String, SecretUrlError> {
    let text = fs::read_to_string(path).map_err(|source| SecretUrlError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })?;
    let url = text.trim();
    if url.is_empty() {
        return Err(SecretUrlError::Empty {
            flag,
            path: path.display().to_string(),
        });
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("url");
        fs::write(&path, "redis://:pw@redis:6379\n").expect("write");
        assert_eq!(
            read("--redis-url-file", &path).expect("read"),
            "redis://:pw@redis:6379"
        );
    }

    #[test]
    fn a_missing_or_empty_file_names_the_flag_and_the_file_and_never_a_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        let err = read("--database-url-file", &missing).expect_err("missing");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read --database-url-file {}",
                missing.display()
            )),
            "{err}"
        );
        let empty = dir.path().join("empty");
        fs::write(&empty, "\n").expect("write");
        let err = read("--database-url-file", &empty).expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");
    }
}
