//! The stack's images. The services image is made here from the local `usersvc` binary with
//! no base image: a root filesystem of the binary, its dynamic loader and the shared libraries
//! `ldd` lists, a `/data` directory the service user owns and `/run/secrets`, sent to the engine
//! as an in-memory tarball (`docker import`). Its tag is a digest of that tarball, so an
//! unchanged binary is never rebuilt. Redis and Postgres are used as found locally, else pulled.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use bollard::{
    Docker,
    query_parameters::{
        CreateImageOptions, CreateImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptions,
        TagImageOptionsBuilder,
    },
};
use futures::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};

use super::{
    engine::{engine, engine_message, is_not_found},
    spec::{Images, ResolvedImage, SECRETS_DIR, SERVICE_UID},
};
use crate::{
    runtime::{RuntimeError, StackSpec, progress::ServiceProgress},
    stack::{
        DEFAULT_POSTGRES_IMAGE, DEFAULT_PROXY_IMAGE, DEFAULT_REDIS_IMAGE, LOCAL_POSTGRES_IMAGE,
        LOCAL_PROXY_IMAGE, LOCAL_REDIS_IMAGE,
    },
};

/// The services image's repository; its tag is the first 16 hex digits of the rootfs digest.
pub const USERSVC_REPOSITORY: &str = "userctl-usersvc";
/// On the services image. Not a project label: one image serves every project, so `down`
/// leaves it.
pub const IMAGE_LABEL: &str = "io.userctl.image";

/// The progress lines images are resolved on: the three services share the services image.
pub struct ImageLines<'a> {
    pub usersvc: [&'a ServiceProgress; 3],
    pub redis: &'a ServiceProgress,
    /// None when the store runs on SQLite: no Postgres then.
    pub postgres: Option<&'a ServiceProgress>,
    /// None with one gateway: no proxy then.
    pub proxy: Option<&'a ServiceProgress>,
}

/// Every image a stack needs, concurrently: the services image built from the local `usersvc`
/// binary; Redis, Postgres and the proxy as asked for, else the pinned official images, else
/// their locally built stand-ins.
pub async fn resolve(
    docker: &Docker,
    spec: &StackSpec,
    lines: &ImageLines<'_>,
) -> Result<Images, RuntimeError> {
    let services = async {
        usersvc(docker, &spec.usersvc, &lines.usersvc)
            .await
            .inspect_err(|err| {
                lines
                    .usersvc
                    .iter()
                    .for_each(|line| line.fail(&err.to_string()))
            })
    };
    let redis = asked_or_official(
        docker,
        spec.redis_image.as_deref(),
        (DEFAULT_REDIS_IMAGE, LOCAL_REDIS_IMAGE),
        lines.redis,
    );
    let postgres = async {
        match lines.postgres {
            Some(line) => asked_or_official(
                docker,
                spec.postgres_image.as_deref(),
                (DEFAULT_POSTGRES_IMAGE, LOCAL_POSTGRES_IMAGE),
                line,
            )
            .await
            .map(Some),
            None => Ok(None),
        }
    };
    let proxy = async {
        match lines.proxy {
            Some(line) => asked_or_official(
                docker,
                spec.proxy_image.as_deref(),
                (DEFAULT_PROXY_IMAGE, LOCAL_PROXY_IMAGE),
                line,
            )
            .await
            .map(Some),
            None => Ok(None),
        }
    };
    let (usersvc, redis, postgres, proxy) = futures::try_join!(services, redis, postgres, proxy)?;
    Ok(Images {
        usersvc,
        redis,
        postgres,
        proxy,
    })
}

/// The image asked for, as given; with none, the pinned official one, else the locally built
/// stand-in (saying so on the service's progress line).
async fn asked_or_official(
    docker: &Docker,
    asked: Option<&str>,
    (official, local): (&str, &str),
    line: &ServiceProgress,
) -> Result<ResolvedImage, RuntimeError> {
    let resolved = match asked {
        Some(image) => external(docker, image, line).await,
        None => official_or_local(docker, official, local, line).await,
    };
    resolved.inspect_err(|err| line.fail(&err.to_string()))
}

/// The image for the three services, built only when no image has this binary's tag.
pub async fn usersvc(
    docker: &Docker,
    binary: &Path,
    progress: &[&ServiceProgress],
) -> Result<ResolvedImage, RuntimeError> {
    let rootfs = blocking(binary.to_path_buf(), |binary| RootFs::for_binary(&binary)).await?;
    let (rootfs, digest) = blocking(rootfs, |rootfs| {
        let digest = rootfs.digest();
        digest.map(|digest| (rootfs, digest))
    })
    .await?;
    let reference = content_tag(&digest);
    if let Some(id) = image_id(docker, &reference).await? {
        return Ok(ResolvedImage { reference, id });
    }
    // Two `up`s at once (two shells, parallel tests) would both import the same content, and
    // the engine would keep two images under one tag, one of them dangling. The first to take
    // this machine-wide lock imports; the others wait, then find its image.
    let _import_lock = blocking(reference.clone(), |reference| import_lock(&reference)).await?;
    if let Some(id) = image_id(docker, &reference).await? {
        return Ok(ResolvedImage { reference, id });
    }

    progress
        .iter()
        .for_each(|line| line.phase("building image"));
    // Tagged by the bytes actually sent, in case the binary changed since it was hashed.
    let (tarball, digest) = blocking(rootfs, |rootfs| rootfs.tarball()).await?;
    let reference = content_tag(&digest);
    import(docker, &reference, tarball).await?;
    let id = image_id(docker, &reference).await?.ok_or_else(|| {
        RuntimeError::other(
            format!("building {reference}"),
            "the engine did not keep the image",
        )
    })?;
    Ok(ResolvedImage { reference, id })
}

/// A lock file in the system temp dir named by the content tag, held until the returned file
/// is dropped (the OS releases it if the process dies).
fn import_lock(reference: &str) -> io::Result<File> {
    let name = reference.replace([':', '/'], "-");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join(format!("{name}.lock")))?;
    file.lock()?;
    Ok(file)
}

/// The pinned `official` image as found locally or pulled; when it can be neither, the locally
/// built `local` one (`scripts/build-images`), saying so on the progress line. When neither
/// exists, ImageUnavailable names the official image and the local one.
pub async fn official_or_local(
    docker: &Docker,
    official: &str,
    local: &str,
    progress: &ServiceProgress,
) -> Result<ResolvedImage, RuntimeError> {
    match external(docker, official, progress).await {
        Ok(image) => Ok(image),
        Err(RuntimeError::ImageUnavailable { image, reason, .. }) => {
            match image_id(docker, local).await? {
                Some(id) => {
                    progress.note(&format!(
                        "{official} cannot be pulled; using the locally built {local}"
                    ));
                    Ok(ResolvedImage {
                        reference: local.to_owned(),
                        id,
                    })
                }
                None => Err(RuntimeError::ImageUnavailable {
                    image,
                    reason,
                    local: Some(local.to_owned()),
                }),
            }
        }
        Err(other) => Err(other),
    }
}

/// `image` as found locally, else pulled; ImageUnavailable when neither works.
pub async fn external(
    docker: &Docker,
    image: &str,
    progress: &ServiceProgress,
) -> Result<ResolvedImage, RuntimeError> {
    if let Some(id) = image_id(docker, image).await? {
        return Ok(ResolvedImage {
            reference: image.to_owned(),
            id,
        });
    }
    progress.phase(&format!("pulling {image}"));
    let unavailable = |reason: String| RuntimeError::ImageUnavailable {
        image: image.to_owned(),
        reason,
        local: None,
    };
    docker
        .create_image(Some(pull_options(image)), None, None)
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(|err| unavailable(engine_message(err)))?;
    let id = image_id(docker, image)
        .await?
        .ok_or_else(|| unavailable("the pull left no image".to_owned()))?;
    Ok(ResolvedImage {
        reference: image.to_owned(),
        id,
    })
}

/// `image` under `registry` (`host:port/team/userctl-usersvc:<tag>`), tagged and pushed there,
/// for nodes that do not have it to pull. A registry that cannot be reached, or refuses, is an
/// error naming it; the engine's own credentials for it are not read (use a registry that
/// needs none from this machine, or push by hand and name it with `--image-registry`).
pub async fn push(
    docker: &Docker,
    image: &ResolvedImage,
    registry: &str,
    progress: &[&ServiceProgress],
) -> Result<ResolvedImage, RuntimeError> {
    let remote = format!("{registry}/{}", image.reference);
    let (repository, tag) = split_reference(&remote);
    docker
        .tag_image(
            &image.reference,
            Some(
                TagImageOptionsBuilder::default()
                    .repo(repository)
                    .tag(tag)
                    .build(),
            ),
        )
        .await
        .map_err(|err| engine(format!("tagging {remote}"), err))?;
    progress
        .iter()
        .for_each(|line| line.phase(&format!("pushing {remote}")));
    let mut pushed = docker.push_image(
        repository,
        Some(PushImageOptionsBuilder::default().tag(tag).build()),
        None,
    );
    let mut failure = None;
    while let Some(step) = pushed.next().await {
        match step {
            Err(err) => failure = Some(engine_message(err)),
            Ok(step) => failure = failure.or(step.error_detail.and_then(|detail| detail.message)),
        }
        if failure.is_some() {
            break;
        }
    }
    if let Some(reason) = failure {
        // The tag was only for the push: a failed `up` leaves no name behind.
        let _ = docker
            .remove_image(&remote, None::<RemoveImageOptions>, None)
            .await;
        return Err(RuntimeError::other(format!("pushing {remote}"), reason));
    }
    Ok(ResolvedImage {
        reference: remote,
        id: image.id.clone(),
    })
}

async fn image_id(docker: &Docker, reference: &str) -> Result<Option<String>, RuntimeError> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(image.id),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(engine(format!("inspecting image {reference}"), err)),
    }
}

/// `docker import -`: one layer, exactly the ownership and modes of the tarball.
async fn import(docker: &Docker, reference: &str, tarball: Vec<u8>) -> Result<(), RuntimeError> {
    let (repository, tag) = split_reference(reference);
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repository)
        .tag(tag)
        .changes(vec![
            format!("USER {SERVICE_UID}:{SERVICE_UID}"),
            r#"ENTRYPOINT ["/usersvc"]"#.to_owned(),
            format!("LABEL {IMAGE_LABEL}=usersvc"),
        ])
        .build();
    docker
        .create_image(
            Some(options),
            Some(bollard::body_full(tarball.into())),
            None,
        )
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(|err| engine(format!("building image {reference}"), err))
}

fn pull_options(image: &str) -> CreateImageOptions {
    let (repository, tag) = split_reference(image);
    CreateImageOptionsBuilder::default()
        .from_image(repository)
        .tag(tag)
        .build()
}

/// `repo:tag` → (`repo`, `tag`); a digest stays whole; no tag means `latest` (an empty tag
/// would pull every tag).
fn split_reference(reference: &str) -> (&str, &str) {
    if reference.contains('@') {
        return (reference, "");
    }
    let name_start = reference.rfind('/').map_or(0, |slash| slash + 1);
    match reference[name_start..].rfind(':') {
        Some(colon) => (
            &reference[..name_start + colon],
            &reference[name_start + colon + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// `userctl-usersvc:<tag>`: the name the services image built from `binary` has, as `up`
/// builds it, computed without an engine (reads the binary and the libraries `ldd` lists).
pub fn usersvc_reference(binary: &Path) -> io::Result<String> {
    let digest = RootFs::for_binary(binary)?.digest()?;
    Ok(content_tag(&digest))
}

fn content_tag(digest: &str) -> String {
    format!("{USERSVC_REPOSITORY}:{}", &digest[..16.min(digest.len())])
}

/// Reading and hashing a 100+ MB binary must not stall the other work of `up`.
async fn blocking<I, T>(
    input: I,
    work: impl FnOnce(I) -> io::Result<T> + Send + 'static,
) -> Result<T, RuntimeError>
where
    I: Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || work(input))
        .await
        .map_err(|err| RuntimeError::other("building the services image", err))?
        .map_err(|err| RuntimeError::other("building the services image", err))
}

/// The services image's root filesystem, described; its bytes are produced on demand (twice
/// at most: once to hash, once to send) rather than held in memory on every `up`.
#[derive(Debug)]
struct RootFs {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir {
        path: String,
        mode: u32,
        owner: u64,
    },
    File {
        path: String,
        source: PathBuf,
        mode: u32,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Self::Dir { path, .. } | Self::File { path, .. } => path,
        }
    }
}

impl RootFs {
    fn for_binary(binary: &Path) -> io::Result<Self> {
        let libraries = shared_libraries(binary)?;
        Ok(Self::layout(binary, &libraries))
    }

    /// `/usersvc`, each library at the path the loader looks for it, the directories they
    /// need, and the service's writable `/data`. Sorted, so equal inputs give equal bytes.
    fn layout(binary: &Path, libraries: &[PathBuf]) -> Self {
        let mut entries = vec![
            Entry::File {
                path: "usersvc".to_owned(),
                source: binary.to_path_buf(),
                mode: 0o755,
            },
            // A fresh named volume mounted here takes this owner, so the service can write it.
            Entry::Dir {
                path: "data".to_owned(),
                mode: 0o755,
                owner: SERVICE_UID,
            },
            Entry::Dir {
                path: "run".to_owned(),
                mode: 0o755,
                owner: 0,
            },
            Entry::Dir {
                path: SECRETS_DIR.trim_start_matches('/').to_owned(),
                mode: 0o755,
                owner: 0,
            },
            Entry::Dir {
                path: "tmp".to_owned(),
                mode: 0o1777,
                owner: 0,
            },
        ];
        for library in libraries {
            let path = library.to_string_lossy().trim_start_matches('/').to_owned();
            let mut parent = Path::new(&path).parent();
            while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
                entries.push(Entry::Dir {
                    path: dir.to_string_lossy().into_owned(),
                    mode: 0o755,
                    owner: 0,
                });
                parent = dir.parent();
            }
            entries.push(Entry::File {
                path,
                source: library.clone(),
                mode: 0o755,
            });
        }
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        entries.dedup_by(|a, b| a.path() == b.path());
        Self { entries }
    }

    /// The tarball's digest, streamed through the hash without keeping the bytes.
    fn digest(&self) -> io::Result<String> {
        let hasher = self.write(HashWriter(Sha256::new()))?;
        Ok(hex::encode(hasher.0.finalize()))
    }

    /// The tarball and its digest.
    fn tarball(&self) -> io::Result<(Vec<u8>, String)> {
        let tarball = self.write(Vec::new())?;
        let digest = hex::encode(Sha256::digest(&tarball));
        Ok((tarball, digest))
    }

    /// Owners, modes and a zero mtime are set explicitly: the digest depends on content only.
    fn write<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            match entry {
                Entry::Dir { path, mode, owner } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_uid(*owner);
                    header.set_gid(*owner);
                    header.set_size(0);
                    tar.append_data(&mut header, path, io::empty())?;
                }
                Entry::File { path, source, mode } => {
                    // Opened, not stat'ed by path: libraries are often symlinks; take their target.
                    let file = File::open(source).map_err(|err| {
                        io::Error::new(err.kind(), format!("{}: {err}", source.display()))
                    })?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_uid(0);
                    header.set_gid(0);
                    header.set_size(file.metadata()?.len());
                    tar.append_data(&mut header, path, file)?;
                }
            }
        }
        tar.into_inner()
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The loader and libraries `binary` needs, as `ldd` resolves them on this machine; none for a
/// static binary.
fn shared_libraries(binary: &Path) -> io::Result<Vec<PathBuf>> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("running ldd {}: {err}", binary.display()),
            )
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(io::Error::other(format!(
            "ldd {} failed: {}",
            binary.display(),
            stderr.trim()
        )));
    }
    parse_ldd(&stdout).map_err(|missing| {
        io::Error::other(format!(
            "{} needs {missing}, which this machine does not have",
            binary.display()
        ))
    })
}

/// Paths out of `ldd` lines like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file. Err names a missing library.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    return Err(name.trim().to_owned());
                }
                target
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd4b5f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c9e0000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0e1c901000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c720000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1f4a2000)
";

    #[test]
    fn ldd_output_gives_the_loader_and_every_library() {
        let libraries = parse_ldd(LDD).expect("parsed");
        let expected = [
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
        ];
        assert_eq!(libraries, expected.map(PathBuf::from));
    }

    #[test]
    fn a_missing_library_is_named() {
        assert_eq!(
            parse_ldd("\tlibssl.so.3 => not found\n"),
            Err("libssl.so.3".to_owned())
        );
    }

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("redis:7.2.5"), ("redis", "7.2.5"));
        assert_eq!(
            split_reference("userctl-local/postgres:15"),
            ("userctl-local/postgres", "15")
        );
        assert_eq!(
            split_reference("localhost:5000/redis"),
            ("localhost:5000/redis", "latest")
        );
        assert_eq!(
            split_reference("redis@sha256:abc"),
            ("redis@sha256:abc", "")
        );
    }

    fn rootfs_with(content: &[u8]) -> (tempfile::TempDir, RootFs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = rootfs_in(dir.path(), content);
        (dir, rootfs)
    }

    fn rootfs_in(dir: &Path, content: &[u8]) -> RootFs {
        let binary = dir.join("usersvc");
        std::fs::write(&binary, content).expect("write");
        let library = dir.join("libc.so.6");
        std::fs::write(&library, b"libc").expect("write");
        RootFs::layout(&binary, &[library])
    }

    #[test]
    fn the_digest_depends_on_content_only() {
        let (dir, first) = rootfs_with(b"binary");
        let digest = first.digest().expect("digest");
        assert_eq!(
            digest,
            rootfs_in(dir.path(), b"binary").digest().expect("digest")
        );
        assert_ne!(
            digest,
            rootfs_in(dir.path(), b"other binary")
                .digest()
                .expect("digest")
        );
        assert_eq!(
            rootfs_in(dir.path(), b"binary")
                .tarball()
                .expect("tarball")
                .1,
            digest
        );
    }

    #[test]
    fn data_belongs_to_the_service_user_and_libraries_to_root() {
        let (dir, rootfs) = rootfs_with(b"binary");
        let (tarball, _) = rootfs.tarball().expect("tarball");
        let mut archive = tar::Archive::new(tarball.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let header = entry.header();
            let (uid, mode) = (header.uid().expect("uid"), header.mode().expect("mode"));
            match path.as_str() {
                "data" => assert_eq!(uid, SERVICE_UID),
                "run/secrets" => assert_eq!(uid, 0),
                "usersvc" => {
                    assert_eq!((uid, mode), (0, 0o755));
                    let mut content = String::new();
                    entry.read_to_string(&mut content).expect("read");
                    assert_eq!(content, "binary");
                }
                _ => assert_eq!(uid, 0, "{path}"),
            }
            seen.push(path);
        }
        let library = dir
            .path()
            .join("libc.so.6")
            .to_string_lossy()
            .trim_start_matches('/')
            .to_owned();
        assert!(seen.contains(&library), "{seen:?}");
        assert!(seen.contains(&"tmp".to_owned()));
    }
}
