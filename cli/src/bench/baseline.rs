//! Same-run baselines: what a bare gRPC unary call and a bare Redis GET cost on this machine
//! now, so the stack's figures read as ratios that survive a noisy machine.

use std::{net::SocketAddr, time::Duration};

use tokio::sync::oneshot;
use tonic::{Request, Response, Status, transport::Channel};
use userctl_proto::bench::v1::{
    EchoMessage,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};

/// The echo server runs on one thread of its own, like one service core.
pub struct EchoBaseline {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Echoer;

#[tonic::async_trait]
impl Echo for Echoer {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

impl EchoBaseline {
    pub fn start() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = tonic::transport::Server::builder()
                        .add_service(EchoServer::new(Echoer))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            async {
                                let _ = stopped.await;
                            },
                        )
                        .await;
                });
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub async fn client(&self) -> Result<EchoClient<Channel>, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(EchoClient::new(channel))
    }
}

impl Drop for EchoBaseline {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
