//! Container logs: line by line for `userctl logs`, and the last few lines quoted when a service
//! fails to start.

use std::{collections::HashMap, io};

use bollard::{Docker, container::LogOutput, query_parameters::LogsOptionsBuilder};
use futures::{StreamExt as _, TryStreamExt as _, stream};

use crate::{
    runtime::RuntimeError,
    stack::{LogLine, Service},
};

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

/// A container whose logs `stream` reads, and how its lines are labelled.
#[derive(Debug, Clone)]
pub struct Source {
    pub service: Service,
    /// Set when the service has more than one replica.
    pub replica: Option<u16>,
    pub container: String,
}

/// Hands the logs of `containers` to `sink` line by line. Without `follow` one container after
/// the other, so each reads as a whole; with it, lines as they come.
pub async fn stream(
    docker: &Docker,
    containers: &[Source],
    follow: bool,
    tail: Option<usize>,
    sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
) -> Result<(), RuntimeError> {
    let tail = tail.map_or_else(|| "all".to_owned(), |lines| lines.to_string());
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail)
        .build();
    // Boxed and collected before the first await: a lazy iterator over `containers` held
    // across it keeps the compiler from seeing that this future is `Send`.
    let streams: Vec<_> = containers
        .iter()
        .map(|source| {
            let name = &source.container;
            let key = (source.service, source.replica);
            docker
                .logs(name, Some(options.clone()))
                .map(move |chunk| {
                    (
                        key,
                        chunk.map_err(|err| {
                            RuntimeError::other(format!("reading logs of {name}"), err)
                        }),
                    )
                })
                .boxed()
        })
        .collect();
    let mut lines = LineSplitter::default();
    let result = if follow {
        split_all(stream::select_all(streams), &mut lines, sink).await
    } else {
        split_all(stream::iter(streams).flatten(), &mut lines, sink).await
    };
    let rest = lines.finish(sink);
    match result.and(rest.map_err(SinkError::Sink)) {
        // `userctl logs | head` closing the pipe is a normal way to stop reading.
        Err(SinkError::Sink(err)) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(SinkError::Sink(err)) => Err(RuntimeError::other("writing logs", err)),
        Err(SinkError::Engine(err)) => Err(err),
        Ok(()) => Ok(()),
    }
}

enum SinkError {
    Sink(io::Error),
    Engine(RuntimeError),
}

/// A service and, when it has several, the replica.
type Key = (Service, Option<u16>);

async fn split_all(
    chunks: impl futures::Stream<Item = (Key, Result<LogOutput, RuntimeError>)>,
    lines: &mut LineSplitter,
    sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
) -> Result<(), SinkError> {
    futures::pin_mut!(chunks);
    while let Some((key, chunk)) = chunks.next().await {
        let chunk = chunk.map_err(SinkError::Engine)?;
        lines
            .split(key, &chunk.into_bytes(), sink)
            .map_err(SinkError::Sink)?;
    }
    Ok(())
}

/// Whole lines only: the engine may split a long line over several chunks.
#[derive(Default)]
struct LineSplitter {
    partial: HashMap<Key, Vec<u8>>,
}

impl LineSplitter {
    fn split(
        &mut self,
        key: Key,
        bytes: &[u8],
        sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
    ) -> io::Result<()> {
        let partial = self.partial.entry(key).or_default();
        partial.extend_from_slice(bytes);
        while let Some(end) = partial.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            sink(log_line(key, &line))?;
        }
        Ok(())
    }

    /// What is left of lines the logs did not end.
    fn finish(
        &mut self,
        sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
    ) -> io::Result<()> {
        let mut rests: Vec<(Key, Vec<u8>)> = self
            .partial
            .drain()
            .filter(|(_, rest)| !rest.is_empty())
            .collect();
        rests.sort_by_key(|((service, replica), _)| {
            (
                Service::ALL.iter().position(|known| known == service),
                *replica,
            )
        });
        for (key, rest) in rests {
            sink(log_line(key, &rest))?;
        }
        Ok(())
    }
}

fn log_line((service, replica): Key, bytes: &[u8]) -> LogLine {
    LogLine {
        service,
        replica,
        text: String::from_utf8_lossy(bytes).trim_end().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_split_over_chunks_comes_out_whole() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        let mut sink = |line: LogLine| {
            lines.push(line.to_string());
            Ok(())
        };
        let (cache, store) = ((Service::Cache, None), (Service::Store, Some(2)));
        splitter
            .split(cache, b"cache serv", &mut sink)
            .expect("split");
        splitter
            .split(store, b"store up\n", &mut sink)
            .expect("split");
        splitter
            .split(cache, b"ing\nlast without newline", &mut sink)
            .expect("split");
        splitter.finish(&mut sink).expect("finish");
        assert_eq!(
            lines,
            [
                "store.2    | store up",
                "cache      | cache serving",
                "cache      | last without newline"
            ]
        );
    }
}
