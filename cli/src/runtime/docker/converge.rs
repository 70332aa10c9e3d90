//! Making the engine's objects match the specs: the network, the data volumes, and each
//! container, left alone when it already is what its spec says. An object with one of our
//! names but without this project's label is someone else's and is never touched.

use bollard::{
    Docker,
    errors::Error as EngineError,
    models::{
        ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum, NetworkCreateRequest,
        VolumeCreateRequest,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
        RestartContainerOptionsBuilder, UploadToContainerOptionsBuilder,
    },
};

use super::ReplicaLine;
use super::{
    engine::{engine, is_not_found},
    health,
    spec::{ContainerSpec, DataVolume, HASH_LABEL, Names, SecretFile, Upload},
};
use crate::runtime::RuntimeError;

/// Seconds a service gets to drain before the engine kills it.
pub const STOP_TIMEOUT_SECS: i32 = 10;

/// What `up` did to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converged {
    /// Running with the same configuration: not touched.
    Unchanged,
    /// Started, restarted or recreated.
    Started,
}

pub async fn network(docker: &Docker, names: &Names) -> Result<(), RuntimeError> {
    let name = names.network();
    match docker.inspect_network(&name, None).await {
        Ok(network) if names.owns(network.labels.as_ref()) => Ok(()),
        Ok(_) => Err(foreign("network", &name)),
        Err(err) if is_not_found(&err) => {
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".to_owned()),
                labels: Some(names.labels()),
                ..Default::default()
            };
            docker
                .create_network(request)
                .await
                .map(drop)
                .map_err(|err| engine(format!("creating network {name}"), err))
        }
        Err(err) => Err(engine(format!("inspecting network {name}"), err)),
    }
}

pub async fn volume(
    docker: &Docker,
    names: &Names,
    volume: DataVolume,
) -> Result<(), RuntimeError> {
    let name = names.volume(volume);
    match docker.inspect_volume(&name).await {
        Ok(existing) if names.owns(Some(&existing.labels)) => Ok(()),
        Ok(_) => Err(foreign("volume", &name)),
        Err(err) if is_not_found(&err) => {
            let request = VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(names.labels()),
                ..Default::default()
            };
            docker
                .create_volume(request)
                .await
                .map(drop)
                .map_err(|err| engine(format!("creating volume {name}"), err))
        }
        Err(err) => Err(engine(format!("inspecting volume {name}"), err)),
    }
}

fn foreign(kind: &str, name: &str) -> RuntimeError {
    RuntimeError::other(
        format!("{kind} {name} exists but userctl did not create it"),
        "remove it, or pick another --project",
    )
}

/// Consecutive failed health checks after which `up` restarts a running container. A few
/// failures can be a stall on a loaded machine that passes by itself; restarting then would
/// only cost a drain (and, with port 0, a new host port). `up` waits for health either way.
const RESTART_AFTER_FAILED_CHECKS: i64 = 30;

/// Brings one container to its spec: left alone when running with the same configuration
/// hash, started when merely stopped, restarted when its checks fail, recreated otherwise.
pub async fn container(
    docker: &Docker,
    names: &Names,
    spec: &ContainerSpec,
    line: &ReplicaLine,
) -> Result<Converged, RuntimeError> {
    let existing = inspect(docker, &spec.name).await?;
    if let Some(existing) = &existing {
        let labels = existing
            .config
            .as_ref()
            .and_then(|config| config.labels.as_ref());
        if !names.owns(labels) {
            return Err(foreign("container", &spec.name));
        }
        if labels.and_then(|labels| labels.get(HASH_LABEL)) == Some(&spec.hash()) {
            let status = existing.state.as_ref().and_then(|state| state.status);
            match status {
                Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING) => {
                    let stuck = health::health(existing) == Some(HealthStatusEnum::UNHEALTHY)
                        && health::failing_streak(existing) >= RESTART_AFTER_FAILED_CHECKS;
                    if !stuck {
                        return Ok(Converged::Unchanged);
                    }
                    line.phase("restarting (unhealthy)");
                    let options = RestartContainerOptionsBuilder::default()
                        .t(STOP_TIMEOUT_SECS)
                        .build();
                    docker
                        .restart_container(&spec.name, Some(options))
                        .await
                        .map_err(|err| start_error(spec, err))?;
                    return Ok(Converged::Started);
                }
                // Killed, crashed or never started: its configuration is right, so start it
                // (the gateway's key is still in its filesystem).
                Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EXITED) => {
                    line.phase("starting");
                    start(docker, spec).await?;
                    return Ok(Converged::Started);
                }
                _ => {}
            }
        }
        line.phase("recreating");
        remove(docker, &spec.name).await?;
    }
    create(docker, names, spec, line).await?;
    Ok(Converged::Started)
}

async fn create(
    docker: &Docker,
    names: &Names,
    spec: &ContainerSpec,
    line: &ReplicaLine,
) -> Result<(), RuntimeError> {
    line.phase("creating");
    let options = CreateContainerOptionsBuilder::default()
        .name(&spec.name)
        .build();
    docker
        .create_container(Some(options), spec.create_body(names))
        .await
        .map_err(|err| engine(format!("creating container {}", spec.name), err))?;
    if !spec.secrets.is_empty() {
        upload_secrets(docker, &spec.name, spec.upload, &spec.secrets).await?;
    }
    line.phase("starting");
    start(docker, spec).await
}

/// Copies the live files of `spec` (the signing keys) into its running container, which reads
/// them again by itself.
pub async fn refresh_live_files(docker: &Docker, spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let live: Vec<SecretFile> = spec
        .secrets
        .iter()
        .filter(|secret| secret.is_live())
        .cloned()
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    upload_secrets(docker, &spec.name, spec.upload, &live).await
}

/// Puts the files into the created container, with the owner and mode `upload` gives (for
/// keys: files only the service user can read).
async fn upload_secrets(
    docker: &Docker,
    container: &str,
    upload: Upload,
    secrets: &[SecretFile],
) -> Result<(), RuntimeError> {
    let names: Vec<&str> = secrets.iter().map(|secret| secret.name).collect();
    let context = || format!("copying {} into container {container}", names.join(", "));
    let tarball =
        secret_tarball(upload, secrets).map_err(|err| RuntimeError::other(context(), err))?;
    let options = UploadToContainerOptionsBuilder::default()
        .path(upload.dir)
        .build();
    docker
        .upload_to_container(container, Some(options), bollard::body_full(tarball.into()))
        .await
        .map_err(|err| engine(context(), err))
}

fn secret_tarball(upload: Upload, secrets: &[SecretFile]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for secret in secrets {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(upload.mode);
        header.set_uid(upload.owner);
        header.set_gid(upload.owner);
        header.set_mtime(0);
        header.set_size(secret.content.len() as u64);
        tar.append_data(&mut header, secret.name, secret.content.as_slice())?;
    }
    tar.into_inner()
}

async fn start(docker: &Docker, spec: &ContainerSpec) -> Result<(), RuntimeError> {
    docker
        .start_container(&spec.name, None)
        .await
        .map_err(|err| start_error(spec, err))
}

/// PortTaken when the engine could not bind the host port (another container has it:
/// "port is already allocated"; another process: "address already in use").
fn start_error(spec: &ContainerSpec, err: EngineError) -> RuntimeError {
    let text = err.to_string();
    let port_taken =
        text.contains("port is already allocated") || text.contains("address already in use");
    match spec.published {
        Some(published) if port_taken && published.host_port != 0 => RuntimeError::PortTaken {
            service: spec.service.name(),
            port: published.host_port,
        },
        _ => engine(format!("starting container {}", spec.name), err),
    }
}

/// The container called `name`, if there is one.
pub async fn inspect(
    docker: &Docker,
    name: &str,
) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
    match docker.inspect_container(name, None).await {
        Ok(container) => Ok(Some(container)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(engine(format!("inspecting container {name}"), err)),
    }
}

/// Removes a container, running or not; gone already is fine.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), RuntimeError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        Err(err) => Err(engine(format!("removing container {name}"), err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        runtime::docker::spec::{Published, Upload},
        stack::Service,
    };

    fn gateway(host_port: u16) -> ContainerSpec {
        ContainerSpec {
            service: Service::Gateway,
            replica: 1,
            name: "t-gateway".into(),
            image: "i".into(),
            image_id: "sha256:i".into(),
            cmd: vec![],
            env: vec![],
            mounts: vec![],
            published: Some(Published {
                container_port: 50051,
                host_port,
            }),
            http: None,
            health: vec![],
            stop_signal: None,
            hardened: true,
            secrets: Vec::new(),
            upload: Upload::SECRETS,
        }
    }

    fn engine_error(message: &str) -> EngineError {
        EngineError::DockerResponseServerError {
            status_code: 500,
            message: message.into(),
        }
    }

    #[test]
    fn a_bound_host_port_is_port_taken() {
        let allocated = "driver failed programming external connectivity on endpoint t-gateway: \
                         Bind for 127.0.0.1:50051 failed: port is already allocated";
        let in_use = "Error starting userland proxy: listen tcp4 127.0.0.1:50051: bind: address already in use";
        for message in [allocated, in_use] {
            let err = start_error(&gateway(50051), engine_error(message));
            assert!(
                matches!(
                    err,
                    RuntimeError::PortTaken {
                        service: "gateway",
                        port: 50051
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn other_start_failures_keep_their_message() {
        let err = start_error(&gateway(50051), engine_error("no such image"));
        assert!(
            err.to_string().contains("starting container t-gateway"),
            "{err}"
        );
        assert!(err.to_string().contains("no such image"), "{err}");
    }

    #[test]
    fn the_secret_file_is_readable_by_the_service_user_only() {
        let secret = SecretFile {
            name: "signing-keys.json",
            digest: Some(String::new()),
            content: b"k".to_vec(),
        };
        let tarball = secret_tarball(Upload::SECRETS, &[secret]).expect("tarball");
        let mut archive = tar::Archive::new(tarball.as_slice());
        let entries: Vec<_> = archive
            .entries()
            .expect("entries")
            .collect::<Result<_, _>>()
            .expect("entry");
        assert_eq!(entries.len(), 1);
        let header = entries[0].header();
        assert_eq!(
            header.path().expect("path").to_string_lossy(),
            "signing-keys.json"
        );
        assert_eq!(header.mode().expect("mode"), 0o400);
        assert_eq!(
            header.uid().expect("uid"),
            crate::runtime::docker::spec::SERVICE_UID
        );
    }
}
