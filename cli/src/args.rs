//! The command line, as `docs/design.md`'s `userctl` contract fixes it.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::stack::{Replicas, Service, parse_change};
pub use crate::stack::{RuntimeChoice, StoreKind};

#[derive(Debug, Parser)]
#[command(
    name = "userctl",
    version,
    about = "Run a local user/auth stack and use it",
    propagate_version = true
)]
pub struct Cli {
    /// Gateway to talk to [default: the address the last `up` recorded, else http://127.0.0.1:50051]
    #[arg(long, global = true, env = "USERCTL_GATEWAY")]
    pub gateway: Option<String>,

    /// Namespaces every Docker object and all local state, so stacks can live side by side.
    #[arg(long, global = true, env = "USERCTL_PROJECT", default_value = "userctl", value_parser = parse_project)]
    pub project: String,

    /// The stack file [default: userctl.toml in the current directory, when there is one]
    #[arg(long, global = true, env = "USERCTL_FILE", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// More log output on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the stack up, idempotently, and wait until every service is healthy.
    Up(UpArgs),
    /// Stop and remove what `up` made; data is kept unless --volumes.
    Down(DownArgs),
    /// One row per replica: state, health and address.
    Status(OutputArgs),
    /// Change how many replicas of each service run, on a running stack.
    Scale(ScaleArgs),
    /// Restart every replica of a service, one at a time.
    Restart(RestartArgs),
    /// Each cache replica's counters and the stack's total.
    Stats(OutputArgs),
    /// Service logs.
    Logs(LogsArgs),
    /// Create an account.
    Register(RegisterArgs),
    /// Log in and save the token.
    Login(LoginArgs),
    /// Show the profile of the saved token.
    Whoami(OutputArgs),
    /// End the session on the server, then forget the saved tokens.
    Logout,
    /// Live view of cache hit rates and service health.
    Dashboard(DashboardArgs),
    /// Load the running stack and compare it with same-run baselines.
    Bench(BenchArgs),
    /// The stack `up` would bring up, and where each setting comes from.
    Config(ConfigArgs),
    /// Write the stack out for a platform userctl does not run itself.
    Export(ExportArgs),
    /// The running stack's token signing keys: list them, or rotate to a new one.
    Keys(KeysArgs),
    /// Print a shell completion script on stdout (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Internal: the local runtime's supervisor process.
    #[command(hide = true)]
    Supervise,
}

/// `up`: the stack to bring up, as [`StackArgs`] and the layers under them describe it.
#[derive(Debug, Args)]
#[command(after_help = LAYERS_HELP)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// With --runtime swarm: make this engine a single-node swarm when it is in none (the
    /// last `down` leaves it again)
    #[arg(long)]
    pub init_swarm: bool,
}

/// The settings of a stack. Each is an `Option` (or empty) when not given, because the stack
/// file, the environment and the last `up` fill in what the flags leave out (see
/// `crate::config`); the defaults shown here apply when no layer sets a value.
#[derive(Debug, Clone, Default, Args)]
pub struct StackArgs {
    /// Where the stack runs: auto is docker when an engine answers, else local; swarm runs Docker Swarm services [env: USERCTL_RUNTIME] [default: auto]
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeChoice>,

    /// Database behind the store [env: USERCTL_STORE] [default: postgres on docker, sqlite on local]
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,

    /// How long to wait for every service to become healthy [env: USERCTL_WAIT_TIMEOUT] [default: 60s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait_timeout: Option<Duration>,

    /// Lifetime of an access token, from 5s to 24h [env: USERCTL_TOKEN_TTL] [default: 15m]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub token_ttl: Option<Duration>,

    /// Replicas of gateway, cache and store, e.g. gateway=2,cache=2 (others keep theirs; default 1) [env: USERCTL_REPLICAS]
    #[arg(long, value_name = "SERVICE=N,...", value_parser = parse_replicas)]
    pub replicas: Option<ReplicaChanges>,

    /// Published gateway port on 127.0.0.1, 0: any free port [env: USERCTL_GATEWAY_PORT] [default: 50051]
    #[arg(long)]
    pub gateway_port: Option<u16>,

    /// Published HTTP/JSON port of the gateway on 127.0.0.1, 0: any free port [env: USERCTL_HTTP_PORT] [default: 8080]
    #[arg(long)]
    pub http_port: Option<u16>,

    /// Published cache port on 127.0.0.1, 0: any free port [env: USERCTL_CACHE_PORT] [default: 50052]
    #[arg(long)]
    pub cache_port: Option<u16>,

    /// Published store port on 127.0.0.1, 0: any free port [env: USERCTL_STORE_PORT] [default: 50053]
    #[arg(long)]
    pub store_port: Option<u16>,

    /// The usersvc binary [env: USERCTL_USERSVC] [default: beside this executable, else on PATH]
    #[arg(long)]
    pub usersvc: Option<PathBuf>,

    /// Redis image for the docker runtime [env: USERCTL_REDIS_IMAGE] [default: redis:7.2.5, else the
    /// locally built userctl-local/redis:7 when no registry answers]
    #[arg(long)]
    pub redis_image: Option<String>,

    /// Postgres image for the docker runtime [env: USERCTL_POSTGRES_IMAGE] [default: postgres:15.8,
    /// else the locally built userctl-local/postgres:15 when no registry answers]
    #[arg(long)]
    pub postgres_image: Option<String>,

    /// HAProxy image for the proxy in front of two or more gateways (docker runtime)
    /// [env: USERCTL_PROXY_IMAGE] [default: haproxy:2.6.18, else the locally built
    /// userctl-local/haproxy:2.6 when no registry answers]
    #[arg(long)]
    pub proxy_image: Option<String>,

    /// Swarm runtime: push the services image to this registry (host:port/team) and run it
    /// from there, so every node can pull it [env: USERCTL_IMAGE_REGISTRY] [default: the local
    /// image, which one node has]
    #[arg(long, value_name = "REGISTRY")]
    pub image_registry: Option<String>,

    /// Redis for the local runtime [env: USERCTL_REDIS_URL] [default: start redis-server from PATH on a free port]
    #[arg(long)]
    pub redis_url: Option<String>,

    /// Browser origin the HTTP door allows (CORS), as scheme://host[:port]; repeat for more
    /// [env: USERCTL_CORS_ORIGINS, comma-separated] [default: none]
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
}

/// `config`: the stack `up` would bring up, and where each setting comes from.
#[derive(Debug, Args)]
#[command(after_long_help = CONFIG_JSON_HELP)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

const LAYERS_HELP: &str = "\
Each setting comes from, highest first: a flag, its USERCTL_* variable, the stack file \
(userctl.toml in the current directory, or --file PATH), what the last `up` of this project \
resolved, the default. `userctl config` shows the result and where each value came from.";

const CONFIG_JSON_HELP: &str = "\
Sources, highest first: flag, env USERCTL_X, file PATH (userctl.toml or --file), last up (what the \
previous `up` of this project resolved), default.

`--output json` prints one object, stable for scripts:
  {\"file\": \"/path/userctl.toml\" or null,
   \"values\": [{\"key\": \"ports.gateway\", \"value\": 50051, \"source\": \"default\"}, ...]}
Keys: runtime, store, wait_timeout, token_ttl, cors_origins, usersvc, redis_url, replicas.gateway, \
replicas.cache, replicas.store, ports.gateway, ports.http, \
ports.cache, ports.store, images.redis, images.postgres. A value is null when the runtime decides \
it (store, usersvc, redis_url); a password in redis_url is shown as ****.";

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every key with its id, algorithm and state (signing, next, previous, retired).
    List(OutputArgs),
    /// Make a new key the signing key on the running stack; older keys stay published until
    /// every token they signed has expired.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Algorithm of the new key: eddsa (Ed25519), or rs256 for verifiers without EdDSA
    #[arg(long, default_value = "eddsa", value_parser = parse_algorithm)]
    pub algorithm: userctl_keys::Algorithm,
}

fn parse_algorithm(value: &str) -> Result<userctl_keys::Algorithm, String> {
    value.parse()
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: ExportTarget,
}

#[derive(Debug, Subcommand)]
pub enum ExportTarget {
    /// A kustomize base (DIR/kustomization.yaml and its resources) for the stack on a cluster.
    #[command(after_help = KUBERNETES_HELP)]
    Kubernetes(KubernetesArgs),
}

/// `export kubernetes`. The replica spec and the version are checked by the command, so a bad
/// one is one line and exit 2 like every other usage error of a value.
#[derive(Debug, Args)]
pub struct KubernetesArgs {
    /// The directory to write; refused when it holds files, unless --force
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Replicas of gateway, cache and store, e.g. gateway=3,cache=2 (default 1 each; at most 32)
    #[arg(long, value_name = "SERVICE=N,...")]
    pub replicas: Option<String>,

    /// The Kubernetes version the manifests are for, 1.27 to 1.33
    #[arg(long, value_name = "VERSION", default_value = crate::export::kubernetes::DEFAULT_VERSION)]
    pub kubernetes_version: String,

    /// Registry the nodes pull the services image from: REG/userctl-usersvc:TAG [default: none, the
    /// local name the docker runtime builds]
    #[arg(long, value_name = "REG")]
    pub image_registry: Option<String>,

    /// The usersvc binary whose image the manifests name (its content tag)
    /// [default: beside this executable, else on PATH]
    #[arg(long, env = "USERCTL_USERSVC", value_name = "PATH")]
    pub usersvc: Option<PathBuf>,

    /// Write into a DIR that holds files: the files export writes are replaced, any other is kept
    #[arg(long)]
    pub force: bool,
}

const KUBERNETES_HELP: &str = "\
No secret is written: the manifests name Secrets, and DIR/create-secrets.sh makes them with \
openssl and kubectl (`./create-secrets.sh -n NAMESPACE`). Then `kubectl apply -k DIR -n NAMESPACE`. \
The services image is the one `userctl up --runtime docker` builds from the same usersvc; push it \
where the nodes can pull it (`docker tag` and `docker push` to REG).";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// New replica counts, e.g. `cache=3 gateway=2`; services not named keep theirs
    #[arg(required = true, value_name = "SERVICE=N", value_parser = parse_change)]
    pub changes: Vec<(Service, u16)>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// gateway, cache or store
    pub service: String,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the data (Postgres and Redis volumes, the SQLite file).
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// gateway, cache, store, redis, postgres or proxy [default: all]
    pub service: Option<String>,
    /// Keep printing new lines.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines of each service.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only the lines of one request, across services in time order: the trace id a response's
    /// `traceparent` header carries (32 hex digits), or the whole header value.
    #[arg(long, value_name = "ID", value_parser = parse_trace_id)]
    pub trace: Option<String>,
}

/// A W3C trace id, lower-cased: 32 hex digits, not all zero. A whole `traceparent` value
/// (`00-<trace id>-<span id>-<flags>`) gives its trace id.
fn parse_trace_id(text: &str) -> Result<String, String> {
    let text = text.trim();
    let id = match text.split('-').collect::<Vec<_>>()[..] {
        [_, id, _, _, ..] => id,
        _ => text,
    };
    let valid = id.len() == 32
        && id.bytes().all(|byte| byte.is_ascii_hexdigit())
        && id.bytes().any(|byte| byte != b'0');
    if valid {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(
            "expected a trace id of 32 hex digits, as in a response's traceparent header \
             00-<trace id>-<span id>-<flags>"
                .into(),
        )
    }
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[arg(long)]
    pub email: String,
    /// Full name.
    #[arg(long)]
    pub name: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[arg(long)]
    pub email: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// How often to refresh.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// WhoAmI with Zipf-distributed users: the cache-hit path.
    Whoami,
    /// Login: bounded by argon2id.
    Login,
    /// Register fresh accounts.
    Register,
    /// 90% whoami, 8% login, 2% register.
    Mixed,
}

impl Workload {
    /// Its name on the command line, in the bench's table and in its JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Whoami => "whoami",
            Self::Login => "login",
            Self::Register => "register",
            Self::Mixed => "mixed",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workloads to run, in order [default: whoami, login, register, mixed]
    #[arg(long = "workload", value_enum)]
    pub workloads: Vec<Workload>,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// How long each workload is measured (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Stop each workload after this many measured requests instead.
    #[arg(long)]
    pub requests: Option<u64>,

    /// Excluded from the figures: connections, caches and the allocator settle.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Accounts the bench creates and spreads whoami and login over. They count against the
    /// gateway's registrations per address (60 a minute by default): past that the bench waits.
    #[arg(long, default_value_t = 50)]
    pub users: usize,

    /// Zipf exponent of the user popularity.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,

    /// Skip the Redis outage: by default, after the whoami workload, the bench makes the
    /// stack's Redis hang for 4 s (`CLIENT PAUSE`, local runtime) to measure the cache's breaker.
    #[arg(long)]
    pub no_redis_outage: bool,

    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Project names become Docker object names and directory names.
/// Replica counts as given: `gateway=2,cache=3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaChanges(pub Vec<(Service, u16)>);

fn parse_replicas(text: &str) -> Result<ReplicaChanges, String> {
    Replicas::parse_changes(text).map(ReplicaChanges)
}

fn parse_project(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(
            "use 1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_taken_bare_or_from_a_whole_traceparent() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(parse_trace_id(id).as_deref(), Ok(id));
        assert_eq!(
            parse_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736").as_deref(),
            Ok(id)
        );
        assert_eq!(
            parse_trace_id(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Ok(id)
        );
        for bad in [
            "",
            "abc",
            "00000000000000000000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "00-abc-00f067aa0ba902b7-01",
        ] {
            assert!(parse_trace_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_workloads_name_is_its_command_line_and_json_spelling() {
        for workload in Workload::value_variants() {
            let flag = workload
                .to_possible_value()
                .expect("every workload is a value");
            assert_eq!(workload.name(), flag.get_name());
            assert_eq!(
                serde_json::to_value(workload).expect("json"),
                workload.name()
            );
        }
    }
}
