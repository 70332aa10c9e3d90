//! `export kubernetes`: check the input, render every file, then write them all at once.

use crate::{
    args::{ExportArgs, ExportTarget, KubernetesArgs},
    commands::stack::locate_usersvc,
    config::Origin,
    error::{CliError, Result},
    export::{
        self, Target,
        kubernetes::{self, Export, KubeVersion},
    },
    runtime::docker::usersvc_reference,
    stack::{DEFAULT_POSTGRES_IMAGE, DEFAULT_REDIS_IMAGE, Replicas, Room},
};

pub fn run(args: ExportArgs) -> Result<()> {
    match args.target {
        ExportTarget::Kubernetes(args) => kubernetes(args),
    }
}

fn kubernetes(args: KubernetesArgs) -> Result<()> {
    // Every usage error before any work, and nothing written before everything is rendered.
    let version = KubeVersion::parse(&args.kubernetes_version).map_err(CliError::usage)?;
    let replicas = match &args.replicas {
        Some(text) => Replicas::parse_changes_in(text, Room::Cluster)
            .and_then(|changes| Replicas::default().with_in(&changes, Room::Cluster))
            .map_err(|err| CliError::usage(format!("--replicas: {err}")))?,
        None => Replicas::default(),
    };
    let registry = match args.image_registry.as_deref().map(str::trim) {
        Some("") => {
            return Err(CliError::usage(
                "--image-registry is empty: name where your nodes pull images from, e.g. host:port/team",
            ));
        }
        registry => registry.map(|registry| registry.trim_end_matches('/').to_owned()),
    };
    let out = &args.out;
    match export::target(out) {
        Ok(Target::Vacant) => {}
        Ok(Target::Occupied) if args.force => {}
        Ok(Target::Occupied) => {
            return Err(CliError::usage(format!(
                "{} is not empty; pass --force to replace the files export writes there (others are kept)",
                out.display()
            )));
        }
        Err(err) => {
            return Err(CliError::usage(format!("--out {}: {err}", out.display())));
        }
    }
    // clap reads USERCTL_USERSVC into the flag; the error says which it was.
    let from = match (&args.usersvc, std::env::var_os("USERCTL_USERSVC")) {
        (None, _) => Origin::Default,
        (Some(path), Some(env)) if path.as_os_str() == env => Origin::Env("USERCTL_USERSVC"),
        (Some(_), _) => Origin::Flag,
    };
    let binary = locate_usersvc(args.usersvc, &from)?;
    let local = usersvc_reference(&binary).map_err(|err| {
        CliError::failed(format!(
            "naming the services image from {}: {err}",
            binary.display()
        ))
    })?;
    let usersvc_image = match registry {
        Some(registry) => format!("{registry}/{local}"),
        None => local,
    };
    let files = kubernetes::render(&Export {
        replicas,
        version,
        usersvc_image: usersvc_image.clone(),
        redis_image: DEFAULT_REDIS_IMAGE.to_owned(),
        postgres_image: DEFAULT_POSTGRES_IMAGE.to_owned(),
    });
    export::write(out, &files)
        .map_err(|err| CliError::failed(format!("writing {}: {err}", out.display())))?;
    println!(
        "wrote a kustomize base for Kubernetes {version} to {} ({replicas})",
        out.display()
    );
    println!("image    {usersvc_image}");
    println!(
        "next     {}/create-secrets.sh -n NAMESPACE, then kubectl apply -k {} -n NAMESPACE",
        out.display(),
        out.display()
    );
    Ok(())
}
