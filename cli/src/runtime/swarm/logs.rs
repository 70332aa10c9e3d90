//! Each task's log through the swarm's task log API, which reaches tasks on any node: printed
//! one task after the other, or followed as lines come, with tasks that start meanwhile (a
//! rolling restart, a replacement for a lost node) joining in.

use std::{collections::HashSet, io, time::Duration};

use bollard::{Docker, container::LogOutput, query_parameters::LogsOptionsBuilder};
use futures::{StreamExt as _, stream::SelectAll};

use crate::{
    runtime::RuntimeError,
    stack::{LogLine, Service},
};

/// How often `logs --follow` looks for tasks that started since.
const REFRESH: Duration = Duration::from_secs(2);

/// One task's log.
#[derive(Debug, Clone)]
pub struct Source {
    pub service: Service,
    /// Set when the service has more than one task.
    pub replica: Option<u16>,
    pub task: String,
}

type Lines = futures::stream::BoxStream<'static, (Service, Option<u16>, Result<LogOutput, String>)>;

fn task_stream(docker: &Docker, source: &Source, follow: bool, tail: &str) -> Lines {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(tail)
        .build();
    let (service, replica) = (source.service, source.replica);
    docker
        .task_logs(&source.task, Some(options))
        .map(move |chunk| (service, replica, chunk.map_err(|err| err.to_string())))
        .boxed()
}

fn tail_arg(tail: Option<usize>) -> String {
    tail.map_or_else(|| "all".to_owned(), |lines| lines.to_string())
}

/// Every source's lines, one task after the other.
pub async fn print(
    docker: &Docker,
    sources: &[Source],
    tail: Option<usize>,
    sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
) -> Result<(), RuntimeError> {
    let tail = tail_arg(tail);
    for source in sources {
        let mut lines = task_stream(docker, source, false, &tail);
        while let Some(item) = lines.next().await {
            if !deliver(item, sink)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Lines as they come from every task, until ctrl-c or the reader goes away; every
/// [`REFRESH`] `refresh` names the tasks now wanted, and new ones join (from their start).
pub async fn follow<F, Fut>(
    docker: &Docker,
    sources: Vec<Source>,
    tail: Option<usize>,
    refresh: F,
    sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
) -> Result<(), RuntimeError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Source>, RuntimeError>>,
{
    let tail = tail_arg(tail);
    let mut seen: HashSet<String> = sources.iter().map(|source| source.task.clone()).collect();
    let mut streams: SelectAll<Lines> = SelectAll::new();
    for source in &sources {
        streams.push(task_stream(docker, source, true, &tail));
    }
    let mut ticks = tokio::time::interval(REFRESH);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            Some(item) = streams.next(), if !streams.is_empty() => {
                if !deliver(item, sink)? {
                    return Ok(());
                }
            }
            _ = ticks.tick() => {
                // A task list that cannot be read now is read again at the next tick.
                for source in refresh().await.unwrap_or_default() {
                    if seen.insert(source.task.clone()) {
                        streams.push(task_stream(docker, &source, true, "all"));
                    }
                }
            }
        }
    }
}

/// Hands a chunk's lines to `sink`; false when the reader went away (a closed pipe is a
/// normal way to stop reading).
fn deliver(
    (service, replica, chunk): (Service, Option<u16>, Result<LogOutput, String>),
    sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
) -> Result<bool, RuntimeError> {
    let chunk =
        chunk.map_err(|err| RuntimeError::other(format!("reading logs of {service}"), err))?;
    let bytes = chunk.into_bytes();
    for text in String::from_utf8_lossy(&bytes).lines() {
        match sink(LogLine {
            service,
            replica,
            text: text.to_owned(),
        }) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            Err(err) => return Err(RuntimeError::other("writing logs", err)),
        }
    }
    Ok(true)
}

/// A task's last `count` lines (none when it cannot be read).
pub async fn last_lines(docker: &Docker, task: &str, count: usize) -> Vec<String> {
    let source = Source {
        service: Service::Gateway,
        replica: None,
        task: task.to_owned(),
    };
    let mut lines = Vec::new();
    let mut stream = task_stream(docker, &source, false, &count.to_string());
    while let Some((_, _, Ok(chunk))) = stream.next().await {
        lines.extend(
            String::from_utf8_lossy(&chunk.into_bytes())
                .lines()
                .map(str::to_owned),
        );
    }
    lines
}
