//! Placeholder: the docker runtime is being written.
use super::{Endpoints, RuntimeError, Service, ServiceStatus, StackSpec, progress::Progress};

pub struct DockerRuntime;

impl DockerRuntime {
    pub async fn connect(_project: &str) -> Result<Self, RuntimeError> {
        Err(RuntimeError::EngineUnreachable("not implemented yet".into()))
    }
    pub async fn up(&self, _spec: &StackSpec, _progress: &Progress) -> Result<Endpoints, RuntimeError> {
        unimplemented!()
    }
    pub async fn down(&self, _volumes: bool) -> Result<(), RuntimeError> {
        unimplemented!()
    }
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        unimplemented!()
    }
    pub async fn logs(&self, _service: Option<Service>, _follow: bool, _tail: Option<usize>) -> Result<(), RuntimeError> {
        unimplemented!()
    }
}
