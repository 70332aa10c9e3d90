//! Container logs: printed for `userctl logs` (one service plain, several prefixed
//! `service | `), and the last few lines quoted when a service fails to start.

use std::{
    collections::HashMap,
    io::{self, Write as _},
};

use bollard::{Docker, container::LogOutput, query_parameters::LogsOptionsBuilder};
use futures::{StreamExt as _, TryStreamExt as _, stream};

use crate::runtime::{RuntimeError, Service};

/// The last `count` lines `name` wrote, stdout and stderr together; empty if the engine cannot
/// say (this only decorates another error).
pub async fn last_lines(docker: &Docker, name: &str, count: usize) -> Vec<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&count.to_string())
        .build();
    let Ok(chunks) = docker
        .logs(name, Some(options))
        .try_collect::<Vec<_>>()
        .await
    else {
        return Vec::new();
    };
    let text: Vec<u8> = chunks.into_iter().flat_map(LogOutput::into_bytes).collect();
    let lines: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .map(|line| line.trim_end().to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].to_vec()
}

/// Writes the logs of `containers` to stdout. Without `follow` one service after the other,
/// so each reads as a whole; with it, lines as they come.
pub async fn print(
    docker: &Docker,
    containers: &[(Service, String)],
    follow: bool,
    tail: Option<usize>,
    prefixed: bool,
) -> Result<(), RuntimeError> {
    let tail = tail.map_or_else(|| "all".to_owned(), |lines| lines.to_string());
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail)
        .build();
    let streams = containers.iter().map(|(service, name)| {
        docker.logs(name, Some(options.clone())).map(move |chunk| {
            (
                *service,
                chunk.map_err(|err| RuntimeError::other(format!("reading logs of {name}"), err)),
            )
        })
    });
    let mut lines = LineWriter::new(prefixed);
    let result = if follow {
        write_all(
            stream::select_all(streams.map(|chunks| chunks.boxed())),
            &mut lines,
        )
        .await
    } else {
        write_all(stream::iter(streams).flatten(), &mut lines).await
    };
    lines.finish();
    match result {
        // `userctl logs | head` closing the pipe is a normal way to stop reading.
        Err(WriteError::Stdout(err)) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(WriteError::Stdout(err)) => Err(RuntimeError::other("writing logs", err)),
        Err(WriteError::Engine(err)) => Err(err),
        Ok(()) => Ok(()),
    }
}

enum WriteError {
    Stdout(io::Error),
    Engine(RuntimeError),
}

async fn write_all(
    chunks: impl futures::Stream<Item = (Service, Result<LogOutput, RuntimeError>)>,
    lines: &mut LineWriter,
) -> Result<(), WriteError> {
    futures::pin_mut!(chunks);
    while let Some((service, chunk)) = chunks.next().await {
        let chunk = chunk.map_err(WriteError::Engine)?;
        lines
            .write(service, &chunk.into_bytes())
            .map_err(WriteError::Stdout)?;
    }
    Ok(())
}

/// Prefixes whole lines: the engine may split a long line over several chunks, and a prefix in
/// the middle of one would corrupt it.
struct LineWriter {
    prefixed: bool,
    partial: HashMap<Service, Vec<u8>>,
}

impl LineWriter {
    fn new(prefixed: bool) -> Self {
        Self {
            prefixed,
            partial: HashMap::new(),
        }
    }

    fn write(&mut self, service: Service, bytes: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if !self.prefixed {
            out.write_all(bytes)?;
            return out.flush();
        }
        let partial = self.partial.entry(service).or_default();
        partial.extend_from_slice(bytes);
        while let Some(end) = partial.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            write!(out, "{} | ", service.name())?;
            out.write_all(&line)?;
        }
        out.flush()
    }

    /// What is left of lines the logs did not end.
    fn finish(&mut self) {
        let mut out = io::stdout().lock();
        for service in Service::ALL {
            if let Some(rest) = self
                .partial
                .remove(&service)
                .filter(|rest| !rest.is_empty())
            {
                let _ = write!(out, "{} | ", service.name())
                    .and_then(|()| out.write_all(&rest))
                    .and_then(|()| writeln!(out));
            }
        }
        let _ = out.flush();
    }
}
